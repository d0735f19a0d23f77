"""The queries HTTP GETs answer: a page of a partner's inbox, read from Kafka from the partner's cursor."""

from __future__ import annotations

from typing import Any

from .adapters import metrics
from .adapters import repository as repo
from .domain.cursors import Cursor, beyond
from .domain.errors import UnknownCursor
from .handlers import Deps, https_member
from .handlers.records import structured_record


async def inbox_page(org: str, after: str | None, limit: int | None, wait_s: float, deps: Deps) -> dict[str, Any]:
    """Records after `after` (default: after the last acknowledged record), at most `limit`, in Kafka order per
    partition. Each record carries the cursor just past it; `next_cursor` is the last record's, or the start's."""
    https_member(deps, org)
    limit = min(limit or deps.page_default, deps.page_max)
    wait_s = max(0.0, min(wait_s, deps.wait_max_s))
    if after is not None:
        start = Cursor.decode(after, org)
        ends = await deps.inbox.ends(org)
        past = beyond(start, ends)
        if past:
            raise UnknownCursor(f"The cursor points past the records of this inbox (partitions {past}); it was not given out here.")
        # Never behind what was acknowledged: acknowledged records are not handed out again.
        positions = {**start.as_dict()}
        for p, o in (await repo.positions(deps.db.pool, org)).items():
            positions[p] = max(positions.get(p, 0), o)
    else:
        positions = await repo.positions(deps.db.pool, org)
    page = await deps.inbox.read(org, positions, limit=limit, wait_s=wait_s)
    cursor = Cursor.of(org, {**{p: 0 for p in page.ends}, **positions})
    records = []
    for rec in page.records:
        event, _ = structured_record(org, rec)
        cursor = cursor.advanced(rec.partition, rec.offset)
        item: dict[str, Any] = {"cursor": cursor.encode(), "event": event}
        if event is None:
            item["problem"] = "this record is no CloudEvent; acknowledge it to move past it"
        records.append(item)
    await repo.mark_fetched(deps.db.pool, org, deps.clock.now())
    if records:
        metrics.RECORDS_FETCHED.labels(org).inc(len(records))
    next_cursor = cursor.encode() if records or after is None else after
    return {"records": records, "next_cursor": next_cursor}
