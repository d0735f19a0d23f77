"""Acknowledgements: partners confirm, signed, that they acted on a forwarded withdrawal or erasure; the
overdue job raises `lotse.acknowledgement.overdue` once for each one missing after the configured working days.

An acknowledgement on `partner.<org>.outbox.v1` is accepted only if it comes from the organisation whose outbox
carried it (`ce_source` and `org` both name the outbox's owner: the topic is enforced by Kafka's ACLs, the
rest is self-declared), refers to an inbox record consent forwarded to that organisation (a withdrawal for a
withdrawal, an erasure for an erasure, about the same client), and its JWS verifies with one of the
organisation's active signing keys. Anything else is dead-lettered with the reason. A valid one marks the
acknowledgement received; a repeated one changes nothing.
"""

from __future__ import annotations

import logging

import asyncpg

from contracts import Envelope, new_event, topics
from contracts.events import Acknowledgement, AcknowledgementOverdue
from contracts.sealed import SealedError, verify_ack
from lotse_kit.consumer import Rejected, current_delivery

from ..adapters import repository as repo
from ..domain.acknowledgements import ACK_TYPES, overdue_event_id
from ..domain.commands import RaiseOverdueAcknowledgements
from ..domain.event_ids import SOURCE
from ..domain.keys import signing_keys
from .deps import Deps
from .sealing import org_keys

log = logging.getLogger(__name__)


async def record_acknowledgement(env: Envelope[Acknowledgement], conn: asyncpg.Connection, deps: Deps) -> None:
    data = env.data
    kind = ACK_TYPES[env.type]
    owner = topics.partner_of(deps.naming.logical(current_delivery().topic))
    partner = env.source_partner
    if owner is None or partner != owner:
        raise Rejected(f"an acknowledgement from {env.source} arrived on the outbox of {owner}: it must come from the outbox's owner")
    if data.org != owner:
        raise Rejected(f"{owner} cannot acknowledge in the name of {data.org}")
    due = await repo.get_ack_due(conn, data.acknowledged_event_id, for_update=True)
    if due is None or due.org != owner or due.client_id != data.client_id:
        raise Rejected(f"{data.acknowledged_event_id} is no event consent forwarded to {owner} about client {data.client_id}")
    if due.kind != kind:
        raise Rejected(f"{data.acknowledged_event_id} was a forwarded {due.kind}, not a {kind}")
    try:
        kid = verify_ack(
            data.signature, str(data.client_id), str(data.acknowledged_event_id), signing_keys(await org_keys(conn, deps, owner))
        )
    except SealedError as exc:
        raise Rejected(f"signature of {owner}'s acknowledgement does not verify: {exc}") from exc
    if due.acknowledged_at is not None:
        return  # acknowledged before: the first acknowledgement stands
    await repo.mark_acknowledged(
        conn, due.event_id, acknowledged_at=data.acknowledged_at, ack_event_id=env.id, kid=kid, received_at=deps.clock.now()
    )
    log.info(
        "acknowledgement received",
        extra={"org": owner, "kind": kind, "event_id": str(due.event_id), "kid": kid, "late": due.overdue_raised_at is not None},
    )


async def raise_overdue_acknowledgements(cmd: RaiseOverdueAcknowledgements, deps: Deps) -> int:
    """One `lotse.acknowledgement.overdue` per missing acknowledgement past due: the flag and the outbox row
    commit together, rows are claimed FOR UPDATE SKIP LOCKED and the event id is derived from the
    acknowledgement's, so it is raised once, across replicas and restarts."""
    now = deps.clock.now()
    raised = 0
    async with deps.db.pool.acquire() as conn, conn.transaction():
        for due in await repo.claim_overdue(conn, now=now, limit=cmd.limit):
            if not await repo.mark_overdue_raised(conn, due.event_id, at=now):
                continue
            overdue = AcknowledgementOverdue(
                client_id=due.client_id,
                org=due.org,
                kind=due.kind,
                acknowledged_event_id=due.event_id,
                collecting_org=due.collecting_org,
                forwarded_at=due.forwarded_at,
                due_at=due.due_at,
            )
            await deps.outbox.enqueue(conn, new_event(overdue, source=SOURCE, event_id=overdue_event_id(due.event_id), time=now))
            raised += 1
    if raised:
        log.warning("acknowledgements overdue", extra={"count": raised})
    return raised
