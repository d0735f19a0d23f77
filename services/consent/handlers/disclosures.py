"""The disclosure gate: the only place personal data leaves the platform, re-checked at that moment.

The request names only pseudonymous ids, the recipient and the categories (`lotse.disclosure.requested`
v2). After its own consent check the gate fetches exactly the allowed categories from intake's internal
API, seals them to the recipient's newest active encryption key and writes the referral to the recipient's
inbox, in the consumer's transaction together with the disclosure record and `lotse.disclosure.made`.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

import asyncpg

from contracts import PARTNER_REFERRAL, Envelope, encode, new_event, topics
from contracts.events import DisclosureBlocked, DisclosureMade, DisclosureRequested, PartnerReferralV2, Sealed
from contracts.vocab import DataCategory
from lotse_kit.consumer import Rejected

from ..adapters import metrics
from ..adapters import repository as repo
from ..adapters.intake import ClientErasedAtIntake
from ..domain.event_ids import SOURCE, partner_referral_event_id
from ..domain.model import Decision, decide
from .deps import Deps
from .sealing import fetch_and_seal, recipient_key

log = logging.getLogger(__name__)


async def gate_disclosure_request(env: Envelope[DisclosureRequested], conn: asyncpg.Connection, deps: Deps) -> None:
    """Re-checks consent at this moment and either hands the sealed referral to the partner's inbox or blocks it.

    Runs in the consumer's transaction, which also records the event id: a
    redelivered record is skipped by the kit, a re-sent request (same
    request_id, new event) by the disclosure ledger. Intake unreachable raises
    `IntakeUnavailable` (transient): the transaction rolls back and the consumer retries.
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
    key = await recipient_key(conn, deps, req.to_org) if decision.allowed else None
    if decision.allowed and key is None:
        decision = Decision(
            False,
            decision.consent_id,
            f"no-recipient-key: {req.to_org} has registered no active encryption key (network file or POST /v1/organisations/{req.to_org}/keys)",
            (),
        )
    if decision.allowed:
        assert key is not None
        try:
            sealed, disclosed = await fetch_and_seal(
                deps, client_id=req.client_id, categories=req.categories, key=key, referral_id=req.referral_id
            )
        except ClientErasedAtIntake:
            decision = Decision(False, None, "erased: intake has erased the client's data", tuple(req.categories))
        else:
            await _disclose(conn, env, decision, deps, now, sealed=sealed, disclosed=disclosed)
    if not decision.allowed:
        await _block(conn, env, decision, deps, now)
    metrics.gate_decisions.labels("made" if decision.allowed else "blocked").inc()


async def _disclose(
    conn: asyncpg.Connection,
    env: Envelope[DisclosureRequested],
    decision: Decision,
    deps: Deps,
    now: datetime,
    *,
    sealed: Sealed,
    disclosed: list[DataCategory],
) -> None:
    req = env.data
    assert decision.consent_id is not None
    # The partner's topics must exist before the relay publishes to them.
    await deps.partner_topics.ensure(req.to_org)
    referral = PartnerReferralV2(
        client_id=req.client_id,
        referral_id=req.referral_id,
        from_org=req.from_org,
        to_org=req.to_org,
        service=req.service,
        need=req.need,
        answer_due=req.answer_due,
        consent_id=decision.consent_id,
        categories=disclosed,
        sealed=sealed,
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
            "kid": referral.sealed.kid,
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
