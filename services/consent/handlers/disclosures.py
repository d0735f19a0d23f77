"""The disclosure gate: the only place personal data leaves the platform, re-checked at that moment."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

import asyncpg

from contracts import PARTNER_REFERRAL, Envelope, encode, new_event, topics
from contracts.events import DisclosureBlocked, DisclosureMade, DisclosureRequested, PartnerReferral
from lotse_kit.consumer import Rejected

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.event_ids import SOURCE, partner_referral_event_id
from ..domain.model import Decision, decide
from .deps import Deps

log = logging.getLogger(__name__)


async def gate_disclosure_request(env: Envelope[DisclosureRequested], conn: asyncpg.Connection, deps: Deps) -> None:
    """Re-checks consent at this moment and either hands the referral to the partner's inbox or blocks it.

    Runs in the consumer's transaction, which also records the event id: a
    redelivered record is skipped by the kit, a re-sent request (same
    request_id, new event) by the disclosure ledger.
    """
    req = env.data
    if env.source_partner is not None:
        raise Rejected(f"disclosure requests come from Lotse services, not from partner {env.source_partner}")
    if await repo.disclosure_decided(conn, req.request_id):
        log.info("disclosure request already decided", extra={"request_id": str(req.request_id)})
        return
    now = deps.clock.now()
    # Locks the client's consents FOR SHARE: a withdrawal running now either committed before
    # (and we see it) or waits until we commit (and then names this recipient in disclosed_to).
    consents = await repo.lock_client_consents(conn, req.client_id)
    erased = await repo.lock_client_erasure(conn, req.client_id)
    decision = decide(consents, recipient=req.to_org, purpose=req.purpose, categories=req.categories, now=now, erased_at=erased)
    if decision.allowed and not deps.directory.has(req.to_org):
        decision = Decision(False, None, f"unknown-recipient: {req.to_org} is not an organisation of this network", ())
    if decision.allowed:
        await _disclose(conn, env, decision, deps, now)
    else:
        await _block(conn, env, decision, deps, now)
    metrics.gate_decisions.labels("made" if decision.allowed else "blocked").inc()


async def _disclose(conn: asyncpg.Connection, env: Envelope[DisclosureRequested], decision: Decision, deps: Deps, now: datetime) -> None:
    req = env.data
    assert decision.consent_id is not None
    # The partner's topics must exist before the relay publishes to them.
    await deps.partner_topics.ensure(req.to_org)
    personal = req.personal_data.restricted_to(set(req.categories))
    disclosed = personal.categories()
    referral = PartnerReferral(
        client_id=req.client_id,
        referral_id=req.referral_id,
        from_org=req.from_org,
        to_org=req.to_org,
        service=req.service,
        need=req.need,
        reason=req.reason,
        free_text=req.free_text,
        answer_due=req.answer_due,
        consent_id=decision.consent_id,
        categories=disclosed,
        personal_data=personal,
        sent_at=now,
    )
    partner_env = new_event(
        referral,
        source=SOURCE,
        acting_org=req.from_org,
        spec=PARTNER_REFERRAL,
        event_id=partner_referral_event_id(req.request_id),
        time=now,
    )
    # The hash covers the exact bytes the partner receives: encode() is what the outbox stores.
    sha = hashlib.sha256(encode(partner_env).value).hexdigest()
    recorded = await repo.insert_disclosure(
        conn,
        repo.DisclosureRecord(
            request_id=req.request_id,
            client_id=req.client_id,
            referral_id=req.referral_id,
            from_org=req.from_org,
            recipient=req.to_org,
            purpose=req.purpose,
            categories=tuple(disclosed),
            outcome="made",
            consent_id=decision.consent_id,
            reason=decision.reason,
            missing_categories=(),
            payload_sha256=sha,
            partner_event_id=partner_env.id,
            decided_at=now,
        ),
    )
    if not recorded:  # decided concurrently under the same request_id; that decision stands
        return
    await deps.outbox.enqueue(conn, partner_env, topics.partner_inbox(req.to_org))
    made = DisclosureMade(
        client_id=req.client_id,
        request_id=req.request_id,
        referral_id=req.referral_id,
        recipient=req.to_org,
        purpose=req.purpose,
        categories=disclosed,
        consent_id=decision.consent_id,
        payload_sha256=sha,
        disclosed_at=now,
    )
    await deps.outbox.enqueue(conn, new_event(made, source=SOURCE, acting_org=req.from_org, time=now))
    log.info(
        "disclosure made",
        extra={
            "request_id": str(req.request_id),
            "recipient": req.to_org,
            "categories": [c.value for c in disclosed],
            "consent_id": str(decision.consent_id),
        },
    )


async def _block(conn: asyncpg.Connection, env: Envelope[DisclosureRequested], decision: Decision, deps: Deps, now: datetime) -> None:
    req = env.data
    recorded = await repo.insert_disclosure(
        conn,
        repo.DisclosureRecord(
            request_id=req.request_id,
            client_id=req.client_id,
            referral_id=req.referral_id,
            from_org=req.from_org,
            recipient=req.to_org,
            purpose=req.purpose,
            categories=tuple(req.categories),
            outcome="blocked",
            consent_id=decision.consent_id,
            reason=decision.reason,
            missing_categories=decision.missing_categories,
            payload_sha256=None,
            partner_event_id=None,
            decided_at=now,
        ),
    )
    if not recorded:
        return
    blocked = DisclosureBlocked(
        client_id=req.client_id,
        request_id=req.request_id,
        referral_id=req.referral_id,
        recipient=req.to_org,
        purpose=req.purpose,
        categories=list(req.categories),
        reason=decision.reason,
        missing_categories=list(decision.missing_categories),
        blocked_at=now,
    )
    await deps.outbox.enqueue(conn, new_event(blocked, source=SOURCE, acting_org=req.from_org, time=now))
    log.info("disclosure blocked", extra={"request_id": str(req.request_id), "recipient": req.to_org, "reason": decision.reason})
