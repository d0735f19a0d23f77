"""Cursors: where in an organisation's inbox a partner stands, as an opaque string.

An inbox is one Kafka topic with several partitions. A cursor is, per partition, the offset of the next record
(Kafka's "position"), and names its organisation, so that one organisation's cursor is refused on another's
inbox. Every record of a page gets the cursor that points just past it: the page's start, advanced by that
record and every record before it in the page. Acknowledging a cursor therefore acknowledges exactly the records
up to and including the one it belongs to, and since positions only move forward, acknowledging an older cursor
again changes nothing.

The text is `c1.` + base64url of compact JSON; partners must treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import InvalidCursor, NotYourInbox

PREFIX = "c1."
MAX_LENGTH = 4096
_ORG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


@dataclass(frozen=True)
class Cursor:
    org: str
    positions: tuple[tuple[int, int], ...]  # (partition, next offset), sorted by partition

    @classmethod
    def of(cls, org: str, positions: Mapping[int, int]) -> Cursor:
        return cls(org, tuple(sorted((int(p), int(o)) for p, o in positions.items())))

    def as_dict(self) -> dict[int, int]:
        return dict(self.positions)

    def advanced(self, partition: int, offset: int) -> Cursor:
        """The cursor just past the record at `offset` of `partition`."""
        pos = self.as_dict()
        pos[partition] = max(pos.get(partition, 0), offset + 1)
        return Cursor.of(self.org, pos)

    def encode(self) -> str:
        body = json.dumps({"o": self.org, "p": {str(p): o for p, o in self.positions}}, separators=(",", ":"))
        return PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, org: str) -> Cursor:
        """The cursor `text` for `org`'s inbox: `InvalidCursor` (422) if it is none, `NotYourInbox` (403) if it is another's."""
        if not text or len(text) > MAX_LENGTH or not text.startswith(PREFIX):
            raise InvalidCursor("This is not a cursor the gateway gave out.")
        raw = text[len(PREFIX) :]
        try:
            body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidCursor("This is not a cursor the gateway gave out.") from None
        if not isinstance(body, dict) or not isinstance(body.get("o"), str) or not isinstance(body.get("p"), dict):
            raise InvalidCursor("This is not a cursor the gateway gave out.")
        if not _ORG.match(body["o"]):
            raise InvalidCursor("This is not a cursor the gateway gave out.")
        if body["o"] != org:
            raise NotYourInbox("This cursor belongs to another organisation's inbox.")
        positions: dict[int, int] = {}
        for p, o in body["p"].items():
            if not (isinstance(p, str) and p.isdigit() and len(p) <= 6) or not isinstance(o, int) or isinstance(o, bool) or o < 0:
                raise InvalidCursor("This is not a cursor the gateway gave out.")
            positions[int(p)] = o
        return cls.of(org, positions)


def merged(stored: Mapping[int, int], cursor: Cursor) -> dict[int, int]:
    """Positions after acknowledging `cursor`: per partition the further of the two (positions never move back)."""
    out = dict(stored)
    for p, o in cursor.positions:
        out[p] = max(out.get(p, 0), o)
    return out


def beyond(cursor: Cursor, ends: Mapping[int, int]) -> list[int]:
    """Partitions where the cursor points past the inbox's end (or that the inbox does not have): not one we gave out."""
    return [p for p, o in cursor.positions if p not in ends or o > ends[p]]
