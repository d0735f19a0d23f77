"""Verifying an export of the audit log against a signed tree head (used by `lotse audit verify`, see cli.py).

Pure: rows come in as lines of text (the CLI opens the file or streams the HTTP response).

For each exported entry, in order: the index must be the next one, and the SHA-256 leaf hash of the
entry bytes must equal the leaf hash the log recorded (when the export carries it). The leaf
hashes are folded into the RFC 9162 tree head as they stream past (O(log n) memory), and at the
end the root must equal the signed root, whose Ed25519 signature is checked first.

What this can and cannot localise: an entry changed after it was logged is named by index (its
bytes no longer match its recorded leaf hash). If someone rewrote an entry *and* its recorded
leaf hash, only the root comparison fails: the export is rejected, but without an index, because
nothing outside the signed root says which leaf it was.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import merkle
from .tree_head import TreeHead, b64, key_id, public_key_from_raw, raw_public_key, signature_valid


@dataclass(frozen=True)
class ExportRow:
    index: int
    entry: bytes
    leaf_hash: bytes | None  # as the log recorded it, if the export carries it


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    first_bad_index: int | None = None
    reason: str = ""
    computed_root: bytes | None = None
    key_pinned: bool = False

    def line(self, head: TreeHead) -> str:
        if self.ok:
            pin = "" if self.key_pinned else " (signature checked with the key in the tree head; pin one with --public-key)"
            return f"OK: {self.checked} entries match the signed tree head (size {head.tree_size}, root {b64(head.root_hash)}, key {head.key_id[:16]}){pin}"
        where = f"first bad index {self.first_bad_index}" if self.first_bad_index is not None else "no single entry identified"
        return f"FAILED: {where}: {self.reason}"


class ExportFormatError(ValueError):
    pass


def _b64(text: str, what: str, line_no: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise ExportFormatError(f"line {line_no}: {what} is not base64") from exc


def _export_row(n: int, fields: Any, what: str) -> ExportRow:
    """One exported entry from its fields (an ndjson object or a csv row); `n` is its line number."""
    try:
        index = int(fields["index"])
        entry = _b64(fields["entry_b64"], "entry_b64", n)
    except ExportFormatError:
        raise  # already names the line and the field
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportFormatError(f"line {n}: not an audit export {what} ({exc})") from exc
    lh = fields.get("leaf_hash")
    return ExportRow(index, entry, _b64(lh, "leaf_hash", n) if lh else None)


def read_ndjson(lines: Iterable[str | bytes]) -> Iterator[ExportRow]:
    for n, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise ExportFormatError(f"line {n}: not an audit export line ({exc})") from exc
        if not isinstance(doc, dict):
            raise ExportFormatError(f"line {n}: not an audit export line (not a JSON object)")
        yield _export_row(n, doc, "line")


def read_csv(text_lines: Iterable[str]) -> Iterator[ExportRow]:
    for n, row in enumerate(csv.DictReader(text_lines), start=2):
        yield _export_row(n, row, "row")


def read_export(data: Iterable[str], fmt: str) -> Iterator[ExportRow]:
    return read_csv(data) if fmt == "csv" else read_ndjson(data)


def verify(
    rows: Iterable[ExportRow],
    head: TreeHead,
    *,
    public_key: Ed25519PublicKey | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Verdict:
    pinned = public_key is not None
    if public_key is None:
        if not head.public_key:
            return Verdict(False, 0, None, "the tree head names no public key; pass --public-key")
        public_key = public_key_from_raw(head.public_key)
    elif head.public_key and raw_public_key(public_key) != head.public_key:
        return Verdict(
            False, 0, None, f"the tree head was signed by key {head.key_id[:16]}, not by the pinned key {key_id(public_key)[:16]}"
        )
    if not signature_valid(head, public_key):
        return Verdict(False, 0, None, "the tree head signature is invalid", key_pinned=pinned)

    tree = merkle.StreamingRoot()
    expected = 0
    for row in rows:
        if expected == head.tree_size:
            break  # entries logged after the tree head are not covered by it
        if row.index != expected:
            return Verdict(
                False, expected, expected, f"entry {expected} is missing (next exported entry is {row.index})", key_pinned=pinned
            )
        h = merkle.leaf_hash(row.entry)
        if row.leaf_hash is not None and h != row.leaf_hash:
            return Verdict(False, expected, expected, "the entry's bytes do not match the leaf hash the log recorded", key_pinned=pinned)
        tree.add_leaf_hash(h)
        expected += 1
        if on_progress is not None and expected % 1000 == 0:
            on_progress(expected)
    if on_progress is not None:
        on_progress(expected)
    if expected < head.tree_size:
        return Verdict(
            False, expected, expected, f"the export ends after {expected} entries; the tree head covers {head.tree_size}", key_pinned=pinned
        )
    root = tree.root()
    if root != head.root_hash:
        return Verdict(
            False,
            expected,
            None,
            f"the root over the export ({b64(root)}) is not the signed root ({b64(head.root_hash)})",
            computed_root=root,
            key_pinned=pinned,
        )
    return Verdict(True, expected, computed_root=root, key_pinned=pinned)
