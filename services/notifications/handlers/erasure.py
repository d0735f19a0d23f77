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

from contracts import Envelope, new_event
from contracts.events import NotificationFailed
from contracts.vocab import NotificationFailure

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.model import CLIENT_ERASED, Channel, RecipientKind, Status
from .deps import Deps
from .triggers import SERVICE, SOURCE

log = logging.getLogger(__name__)


async def forget_client(env: Envelope[Any], conn: asyncpg.Connection, deps: Deps) -> None:
    now = deps.clock.now()
    cancelled = await repo.forget_client(conn, env.data.client_id, env.data.erased_at, CLIENT_ERASED, now)
    for row in cancelled:
        metrics.completed.labels(SERVICE, row["channel"], Status.PERMANENT_FAILURE.value).inc()
        data = NotificationFailed(
            notification_id=row["id"],
            client_id=row["client_id"],
            trigger_event_id=row["trigger_event_id"],
            trigger_type=row["trigger_type"],
            channel=Channel(row["channel"]),
            recipient_kind=RecipientKind(row["recipient_kind"]),
            recipient_org=row["recipient_org"],
            language=row["language"],
            status=NotificationFailure.PERMANENT,
            reason=CLIENT_ERASED,
            attempts=row["attempts"],
            failed_at=now,
        )
        await deps.outbox.enqueue(conn, new_event(data, source=SOURCE, acting_org=row["recipient_org"], time=now))
    log.info(
        "client erased: notifications forgot what they kept", extra={"client_id": str(env.data.client_id), "cancelled": len(cancelled)}
    )
