"""A partner acknowledges inbox records it fetched; the positions move forward, never back."""

from __future__ import annotations

import logging

from lotse_kit.network import Organisation

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.commands import AcknowledgeRecords
from ..domain.cursors import Cursor, beyond
from ..domain.errors import NotOverHttps, UnknownCursor
from .deps import Deps

log = logging.getLogger(__name__)


def https_member(deps: Deps, org: str) -> Organisation:
    """The organisation, if it reaches its inbox through the gateway; else 404 (its inbox is on Kafka)."""
    member = deps.directory.organisation(org)
    if member is None or not member.inbox.over_https:
        raise NotOverHttps(f"{org} reads its inbox over Kafka, not through the HTTPS gateway (network file: inbox.transport).")
    return member


async def acknowledge_records(cmd: AcknowledgeRecords, deps: Deps) -> None:
    https_member(deps, cmd.org)
    cursor = Cursor.decode(cmd.cursor, cmd.org)
    ends = await deps.inbox.ends(cmd.org)
    past = beyond(cursor, ends)
    if past:
        raise UnknownCursor(f"The cursor points past the records of this inbox (partitions {past}); it was not given out here.")
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        moved = await repo.advance_positions(conn, cmd.org, cursor.as_dict(), now)
        await repo.mark_acknowledged(conn, cmd.org, now)
    metrics.ACKNOWLEDGEMENTS.labels(cmd.org).inc()
    log.info("inbox records acknowledged", extra={"org": cmd.org, "partitions_moved": moved})
