"""Inbox records left unfetched: the gateway tells the organisation's technical contact, through the
notifications service (`lotse.inbox.left_unfetched` on lotse.gateway.v1; pseudonymous: counts and times only)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from contracts import new_event
from contracts.events import InboxLeftUnfetched

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.overdue import Backlog, LastNotice, notice_due
from .deps import Deps

log = logging.getLogger(__name__)

SOURCE = "/lotse/gateway"


async def report_unfetched(deps: Deps) -> bool:
    """One check of every HTTPS inbox; emits a notice for each that is due. Returns False (nothing more due now)."""
    now = deps.clock.now()
    for member in deps.directory.network.https_inboxes():
        org = member.id
        start = await repo.positions(deps.db.pool, org)
        pending, oldest_ms = await deps.inbox.oldest_after(org, start)
        oldest_at = datetime.fromtimestamp(oldest_ms / 1000, UTC) if oldest_ms is not None else None
        metrics.PENDING.labels(org).set(pending)
        metrics.OLDEST_PENDING_AGE.labels(org).set(max(0.0, (now - oldest_at).total_seconds()) if oldest_at else 0.0)
        state = await repo.state(deps.db.pool, org)
        last = LastNotice(state["notified_oldest_at"], state["notified_at"]) if state else LastNotice(None, None)
        backlog = Backlog(pending, oldest_at)
        if not notice_due(backlog, last, now, after=deps.unfetched_after, repeat_after=deps.unfetched_repeat_after):
            continue
        assert oldest_at is not None
        env = new_event(
            InboxLeftUnfetched(
                org=org,
                pending=pending,
                oldest_record_at=oldest_at,
                unfetched_after_s=max(1, int(deps.unfetched_after.total_seconds())),
                mode=member.inbox.mode,
                detected_at=now,
            ),
            source=SOURCE,
            time=now,
        )
        async with deps.db.pool.acquire() as conn, conn.transaction():
            await deps.outbox.enqueue(conn, env)
            await repo.record_notice(conn, org, oldest_at, now)
        metrics.UNFETCHED_NOTICES.labels(org).inc()
        log.warning(
            "inbox records left unfetched; the organisation is notified",
            extra={"org": org, "event_id": str(env.id), "pending": pending, "oldest_record_at": oldest_at.isoformat()},
        )
    return False
