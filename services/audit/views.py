"""Read-only queries of the audit log: what the auditor API's GETs show."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .adapters import report_document
from .adapters.repository import EntryFilter, StoredEntry
from .domain import merkle
from .domain.entries import parse_entry
from .domain.errors import NoSuchClient, NoSuchEntry, NoTreeHead, OutOfRange
from .domain.report import SubjectReport, build_report, data_holders
from .domain.tree_head import TreeHead
from .handlers.deps import Deps


async def latest_tree_head(deps: Deps) -> TreeHead:
    head = await deps.repo.latest_tree_head()
    if head is None:
        raise NoTreeHead()
    return head


@dataclass(frozen=True)
class Page:
    items: list[StoredEntry]
    more: bool  # the page is full: there may be more after its last index


async def entries(deps: Deps, f: EntryFilter, *, after: int | None, limit: int) -> Page:
    """Entries in log order after index `after`, at most `limit` (capped at the page maximum)."""
    limit = min(limit, deps.page_max)
    rows = await deps.repo.entries(f, after=after, limit=limit)
    return Page(rows, more=len(rows) == limit)


async def entry(deps: Deps, index: int, *, org: str | None = None) -> StoredEntry:
    """Entry `index`; with `org`, only if the entry concerns that organisation (else it does not exist for the caller)."""
    if org is None:
        e = await deps.repo.entry(index)
    else:
        found = await deps.repo.entries(EntryFilter(org=org, before_size=index + 1), after=index - 1, limit=1)
        e = found[0] if found and found[0].index == index else None
    if e is None:
        raise NoSuchEntry(index)
    return e


async def _check_size(deps: Deps, tree_size: int) -> None:
    current = await deps.repo.size()
    if tree_size > current:
        raise OutOfRange(f"tree_size {tree_size} exceeds the log's size {current}")


async def _size_or_latest(deps: Deps, tree_size: int | None) -> int:
    return tree_size if tree_size is not None else (await latest_tree_head(deps)).tree_size


@dataclass(frozen=True)
class InclusionProof:
    index: int
    tree_size: int
    leaf_hash: bytes
    audit_path: list[bytes]


async def inclusion_proof(deps: Deps, index: int, tree_size: int | None) -> InclusionProof:
    """RFC 9162 §2.1.3 audit path for entry `index` in the tree of `tree_size` (default: the latest signed head)."""
    size = await _size_or_latest(deps, tree_size)
    if not 0 <= index < size:
        raise OutOfRange(f"index {index} is not in a tree of size {size}")
    await _check_size(deps, size)
    path = await deps.repo.compute(lambda get: merkle.inclusion_path(index, size, get))
    e = await entry(deps, index)
    return InclusionProof(index, size, e.leaf_hash, path)


async def consistency_proof(deps: Deps, first: int, second: int) -> list[bytes]:
    """RFC 9162 §2.1.4 proof that the tree of size `second` extends the tree of size `first`."""
    if not 0 < first <= second:
        raise OutOfRange("need 0 < first <= second")
    await _check_size(deps, second)
    return await deps.repo.compute(lambda get: merkle.consistency_proof(first, second, get))


async def export(deps: Deps, tree_size: int | None) -> tuple[int, AsyncIterator[StoredEntry]]:
    """Entries [0, tree_size) (default: the latest signed head) in index order, streamed with constant memory."""
    size = await _size_or_latest(deps, tree_size)
    await _check_size(deps, size)
    return size, deps.repo.stream(EntryFilter(before_size=size), fetch_rows=deps.export_fetch_rows)


async def subject_report(
    deps: Deps, client_id: str, language: str | None = None, *, may_read: Callable[[set[str]], bool] = lambda holders: True
) -> SubjectReport:
    """The GDPR Art. 15 view of one client, over the entries covered by the latest signed tree head.

    `may_read` sees the organisations that hold data on the client (the scope rule of the caller);
    when it says no, the client does not exist for the caller (404, like a client the log never saw
    for an organisation's dpo)."""
    head = await deps.repo.latest_tree_head()
    size = head.tree_size if head else 0
    items = []
    async for r in deps.repo.stream(EntryFilter(client_id=client_id, before_size=size)):
        intact = merkle.leaf_hash(r.entry) == r.leaf_hash
        items.append((r.index, parse_entry(r.entry) if intact else None, intact))
    if not may_read(data_holders(client_id, items)):
        raise NoSuchClient(client_id)
    return build_report(client_id, items, head=head, language=language, generated_at=deps.clock.now())


def subject_report_html(deps: Deps, report: SubjectReport) -> str:
    """The readable document of the report, in its language."""
    return report_document.render_html(report, deps.directory)
