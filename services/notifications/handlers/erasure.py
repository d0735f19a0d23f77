"""A client's personal data was erased (`lotse.client.erased`, GDPR Art. 17): forget what this service kept about the client.

The service never stores addresses, phone numbers or message texts (they are fetched from intake at send time and
rendered in memory). What it keeps about a client is the trigger's pseudonymous data in each notification's
`payload` and, for referrals, which organisations and service a referral was about. On erasure
(`repository.forget_client`, in the consumer's inbox transaction):

- the client's own notifications not yet sent end as `permanent-failure` ("client erased"), announced as
  `lotse.notification.failed`, and are never attempted again;
- every finished notification about the client keeps its pseudonymous delivery facts (trigger id and type,
  recipient kind and organisation, channel, language, status, reason, times, attempts) and loses its payload;
  notifications to organisations still under way lose theirs when they end;
- the client's remembered referrals are deleted;
- the pseudonymous id is remembered as erased, so a trigger that arrives later records nothing for the client
  and keeps no payload once its organisation rows end.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from contracts import Envelope

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.model import CLIENT_ERASED, Status
from .deliveries import final_event
from .deps import Deps
from .triggers import SERVICE, note_client_erased

log = logging.getLogger(__name__)


async def forget_client(env: Envelope[Any], conn: asyncpg.Connection, deps: Deps) -> None:
    now = deps.clock.now()
    cancelled = await repo.forget_client(conn, env.data.client_id, env.data.erased_at, CLIENT_ERASED, now)
    note_client_erased(str(env.data.client_id))  # the batch's later triggers read erasures once, before this one
    for row in cancelled:
        metrics.completed.labels(SERVICE, row["channel"], Status.PERMANENT_FAILURE.value).inc()
    await deps.outbox.enqueue_many(conn, [final_event(row, Status.PERMANENT_FAILURE, CLIENT_ERASED, now) for row in cancelled])
    log.info(
        "client erased: notifications forgot what they kept", extra={"client_id": str(env.data.client_id), "cancelled": len(cancelled)}
    )
