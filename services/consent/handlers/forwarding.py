"""Partner forwarding and erasure: pseudonymous events copied to the inbox of every partner entitled to them."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import asyncpg

from contracts import Envelope, new_event, spec_for, topics
from lotse_kit.consumer import Rejected

from ..adapters import repository as repo
from ..domain.acknowledgements import ACKNOWLEDGED, AckDue, due_at
from ..domain.event_ids import SOURCE
from ..domain.forwarding import Audience, forwarded_event_id, recipients, rule_for
from .deps import Deps

log = logging.getLogger(__name__)

INTAKE_SOURCE = "/lotse/intake"


async def forward_to_partners(env: Envelope[Any], conn: asyncpg.Connection, deps: Deps) -> None:
    """Copies a pseudonymous event to the inbox of every partner entitled to it (domain/forwarding.py)."""
    rule = rule_for(env.type)
    if rule is None:
        return
    orgs = await _audience(conn, rule.audience, env, deps.clock.now())
    targets = recipients(orgs, originator=env.source_partner)
    spec = spec_for(env.type, env.dataschema)
    assert spec is not None
    ack_kind = ACKNOWLEDGED.get(env.type)
    for org in targets:
        await deps.partner_topics.ensure(org)
        copy = new_event(
            env.data,
            source=SOURCE,
            acting_org=env.acting_org,
            spec=spec,
            event_id=forwarded_event_id(env.id, org),
            time=env.time,
        )
        await deps.outbox.enqueue(conn, copy, topics.partner_inbox(org))
        if ack_kind is not None:  # the recipient owes a signed acknowledgement of this copy
            await _record_ack_due(conn, deps, copy, org)
    if targets:
        log.info("event forwarded to partners", extra={"type": env.type, "partners": targets, "why": rule.why})


async def _record_ack_due(conn: asyncpg.Connection, deps: Deps, copy: Envelope[Any], org: str) -> None:
    data = copy.data
    kind = ACKNOWLEDGED[copy.type]
    consent_id = getattr(data, "consent_id", None) if kind == "withdrawal" else None
    if consent_id is not None:
        collecting = await repo.collecting_org_of(conn, consent_id)
    else:
        collecting = await repo.latest_collecting_org(conn, data.client_id, org)
    now = deps.clock.now()
    await repo.insert_ack_due(
        conn,
        AckDue(
            event_id=copy.id,
            client_id=data.client_id,
            org=org,
            kind=kind,
            consent_id=consent_id,
            collecting_org=collecting,
            forwarded_at=now,
            due_at=due_at(now, deps.ack_due_working_days),
        ),
    )


async def record_client_erasure(env: Envelope[Any], conn: asyncpg.Connection, deps: Deps) -> None:
    """GDPR Art. 17: after erasure no decision allows anything for the client; every organisation that
    received data is told to erase (and owes an acknowledgement); the free text of the client's consent
    records is erased. A second erasure of the same client changes nothing and tells nobody again."""
    if env.source != INTAKE_SOURCE:
        raise Rejected(f"erasures come from {INTAKE_SOURCE}, not {env.source}")
    already = await repo.lock_client_erasure(conn, env.data.client_id)
    await repo.bump_version(conn, env.data.client_id, erased_at=env.data.erased_at)
    await repo.erase_consent_free_text(conn, env.data.client_id, at=env.data.erased_at)
    if already is not None:
        log.info("client already erased", extra={"client_id": str(env.data.client_id)})
        return
    await forward_to_partners(env, conn, deps)


async def _audience(conn: asyncpg.Connection, audience: Audience, env: Envelope[Any], now: datetime) -> set[str]:
    data = env.data
    if audience is Audience.REFERRAL_SENDER:
        if getattr(data, "from_org", None):  # intake names it on every answer; only a partner's own may leave it out
            return {data.from_org}
        senders, _ = await repo.referral_parties(conn, data.referral_id)
        return senders
    if audience is Audience.REFERRAL_RECIPIENT:
        _, receivers = await repo.referral_parties(conn, data.referral_id)
        return receivers
    if audience is Audience.SERVING_RECIPIENTS:
        return set(await repo.serving_recipients(conn, data.client_id, now=now))
    if audience is Audience.CONSENT_RECIPIENTS:
        return set(await repo.recipients_of_consent(conn, data.consent_id))
    if audience is Audience.ALL_RECIPIENTS:
        return set(await repo.recipients_of_client(conn, data.client_id))
    raise AssertionError(f"unhandled audience {audience}")
