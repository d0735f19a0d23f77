"""One function per thing the audit service does."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .adapters.repository import AppendResult, AuditRepository, EntryFilter
from .domain import merkle
from .domain.entries import Entry, RecordLike, build_entry, log_order, parse_entry
from .domain.report import SubjectReport, build_report
from .domain.tree_head import TreeHead, sign

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # milliseconds since the epoch


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class OutOfRange(ValueError):
    """A requested index or tree size the log does not have (yet)."""


def build_entries(records: Sequence[RecordLike], *, namespace: str, presorted: bool = False) -> list[Entry]:
    """The entries for a batch of records, in the order they are appended (CPU only)."""
    return [build_entry(r, namespace=namespace) for r in (records if presorted else sorted(records, key=log_order))]


async def append_entries(repo: AuditRepository, entries: Sequence[Entry]) -> AppendResult:
    """Appends a batch. Idempotent by record position; durable when this returns."""
    return await repo.append(entries)


async def ingest_records(repo: AuditRepository, records: Sequence[RecordLike], *, namespace: str) -> AppendResult:
    """Logs a batch of records: both of the above."""
    return await append_entries(repo, build_entries(records, namespace=namespace))


async def root_hash(repo: AuditRepository, tree_size: int) -> bytes:
    keys = merkle.needed_nodes(lambda get: merkle.root(tree_size, get))
    return merkle.root(tree_size, merkle.with_nodes(await repo.nodes(keys)))


async def sign_tree_head(repo: AuditRepository, key: Ed25519PrivateKey, *, clock: Clock = wall_clock_ms, requested_by: str | None = None) -> TreeHead:
    """Signs the current size and root. Any replica may do it: heads are independent statements."""
    size = await repo.size()
    head = sign(key, size, clock(), await root_hash(repo, size))
    await repo.add_tree_head(head, requested_by)
    log.info("tree head signed", extra={"tree_size": size, "requested_by": requested_by})
    return head


async def sign_tree_head_if_grown(repo: AuditRepository, key: Ed25519PrivateKey, *, clock: Clock = wall_clock_ms) -> TreeHead | None:
    latest = await repo.latest_tree_head()
    if latest is not None and latest.tree_size == await repo.size():
        return None
    return await sign_tree_head(repo, key, clock=clock)


async def _check_size(repo: AuditRepository, tree_size: int) -> None:
    current = await repo.size()
    if tree_size > current:
        raise OutOfRange(f"tree_size {tree_size} exceeds the log's size {current}")


async def inclusion_proof(repo: AuditRepository, index: int, tree_size: int) -> list[bytes]:
    if not 0 <= index < tree_size:
        raise OutOfRange(f"index {index} is not in a tree of size {tree_size}")
    await _check_size(repo, tree_size)
    keys = merkle.needed_nodes(lambda get: merkle.inclusion_path(index, tree_size, get))
    return merkle.inclusion_path(index, tree_size, merkle.with_nodes(await repo.nodes(keys)))


async def consistency_proof(repo: AuditRepository, first: int, second: int) -> list[bytes]:
    if not 0 < first <= second:
        raise OutOfRange("need 0 < first <= second")
    await _check_size(repo, second)
    keys = merkle.needed_nodes(lambda get: merkle.consistency_proof(first, second, get))
    return merkle.consistency_proof(first, second, merkle.with_nodes(await repo.nodes(keys)))


@dataclass(frozen=True)
class ReportRequest:
    client_id: str
    language: str | None = None


async def subject_report(repo: AuditRepository, req: ReportRequest, *, now_ms: int | None = None) -> SubjectReport:
    """The GDPR Art. 15 view of one client, over the entries covered by the latest signed tree head."""
    head = await repo.latest_tree_head()
    size = head.tree_size if head else 0
    rows = [r async for r in repo.stream(EntryFilter(client_id=req.client_id, before_size=size))]
    items = []
    for r in rows:
        intact = merkle.leaf_hash(r.entry) == r.leaf_hash
        items.append((r.index, parse_entry(r.entry) if intact else None, intact))
    return build_report(req.client_id, items, head=head, language=req.language, generated_at_ms=now_ms or wall_clock_ms())
