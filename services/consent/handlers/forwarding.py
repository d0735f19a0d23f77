"""Partner forwarding and erasure: pseudonymous events copied to the inbox of every partner entitled to them."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import asyncpg

from contracts import Envelope, new_event, spec_for, topics

from ..adapters import repository as repo
from ..domain.event_ids import SOURCE
from ..domain.forwarding import Audience, forwarded_event_id, recipients, rule_for
from .deps import Deps

log = logging.getLogger(__name__)


async def forward_to_partners(env: Envelope[Any], conn: asyncpg.Connection, deps: Deps) -> None:
    """Copies a pseudonymous event to the inbox of every partner entitled to it (domain/forwarding.py)."""
    rule = rule_for(env.type)
    if rule is None:
        return
    orgs = await _audience(conn, rule.audience, env, deps.clock.now())
    targets = recipients(orgs, originator=env.source_partner)
    spec = spec_for(env.type, env.dataschema)
    assert spec is not None
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
    if targets:
        log.info("event forwarded to partners", extra={"type": env.type, "partners": targets, "why": rule.why})


async def record_client_erasure(env: Envelope[Any], conn: asyncpg.Connection, deps: Deps) -> None:
    """After erasure no decision allows anything for the client; partners that received data are told to erase."""
    await repo.bump_version(conn, env.data.client_id, erased_at=env.data.erased_at)
    await forward_to_partners(env, conn, deps)


async def _audience(conn: asyncpg.Connection, audience: Audience, env: Envelope[Any], now: datetime) -> set[str]:
    data = env.data
    if audience is Audience.REFERRAL_SENDER:
        senders, _ = await repo.referral_parties(conn, data.referral_id)
        return {data.from_org} if getattr(data, "from_org", None) else senders
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
