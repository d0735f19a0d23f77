"""Push: each record of a push organisation's inbox is POSTed to its URL, in order, until a 2xx answers it.

A 2xx is the acknowledgement: the position moves past the record, which is never sent again. Any other answer
(or none) is a failed attempt: the organisation's delivery waits with backoff and then retries the same record,
so records arrive in Kafka order per partition. The body is the structured CloudEvent the pull API returns,
`webhook-id` is the event id (the same on every retry: receivers deduplicate by it). Only one sender per
organisation runs across replicas (a PostgreSQL advisory lock).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from lotse_kit.network import Organisation
from lotse_kit.retry import backoff
from lotse_kit.webhooks import InvalidSecret, WebhookSecret

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.cursors import Cursor
from .deps import Deps
from .records import structured_record

log = logging.getLogger(__name__)


async def push_records(member: Organisation, deps: Deps) -> bool:
    """One round for one organisation; True when more records are due at once."""
    org, url = member.id, member.inbox.url
    if url is None or member.inbox.mode != "push":
        return False
    now = deps.clock.now()
    state = await repo.state(deps.db.pool, org)
    if state is not None and state["push_next_attempt_at"] is not None and state["push_next_attempt_at"] > now:
        return False
    if url.startswith("http://") and not deps.push_allow_http:
        log.error("push URL is plain http; not sent (LOTSE_GATEWAY_PUSH_ALLOW_HTTP is for development only)", extra={"org": org})
        return False
    try:
        secrets = deps.secrets.for_org(org)
    except InvalidSecret as exc:
        # This organisation's configuration is wrong, not the worker: the others are still pushed, and its
        # records wait (and count towards its unfetched notice) until an operator sets the secret.
        metrics.PUSHED.labels(org, "no_secret").inc()
        log.error("push not possible: no valid webhook secret for this organisation", extra={"org": org, "error": str(exc)})
        return False
    lock = f"gateway-push:{org}"
    async with deps.db.pool.acquire() as conn:
        if not await repo.try_lock(conn, lock):
            return False  # another replica sends for this organisation
        try:
            return await _send(org, url, secrets, deps)
        finally:
            await repo.unlock(conn, lock)


async def _send(org: str, url: str, secrets: list[WebhookSecret], deps: Deps) -> bool:
    start = await repo.positions(deps.db.pool, org)
    page = await deps.inbox.read(org, start, limit=deps.push_batch)
    cursor = Cursor.of(org, start)
    for rec in page.records:
        event, msg_id = structured_record(org, rec)
        if event is None:  # no CloudEvent (logged): nothing a receiver could verify or use; moved past
            await _acknowledge(org, cursor := cursor.advanced(rec.partition, rec.offset), deps)
            continue
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        result = await deps.pusher.post(url, msg_id=msg_id, body=body, secrets=secrets, now=deps.clock.now())
        if not result.delivered:
            metrics.PUSHED.labels(org, "failed").inc()
            state = await repo.state(deps.db.pool, org)
            attempts = (state["push_attempts"] if state else 0) + 1
            delay = backoff(attempts, deps.push_retry_base_s, deps.push_retry_max_s)
            await repo.record_push_failure(deps.db.pool, org, deps.clock.now() + timedelta(seconds=delay), result.reason)
            log.warning(
                "push attempt failed; retrying",
                extra={"org": org, "event_id": msg_id, "attempt": attempts, "reason": result.reason, "retry_in_s": round(delay, 2)},
            )
            return False
        metrics.PUSHED.labels(org, "delivered").inc()
        cursor = cursor.advanced(rec.partition, rec.offset)
        await _acknowledge(org, cursor, deps)
        log.info("inbox record pushed", extra={"org": org, "event_id": msg_id, "status": result.status_code})
    return len(page.records) >= deps.push_batch


async def _acknowledge(org: str, cursor: Cursor, deps: Deps) -> None:
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await repo.advance_positions(conn, org, cursor.as_dict(), deps.clock.now())
        await repo.mark_acknowledged(conn, org, deps.clock.now())
