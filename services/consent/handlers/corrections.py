"""Corrections (GDPR Art. 16 and 19): the corrected categories go to every organisation that received them.

Intake announces which categories of a client it corrected (`lotse.client.corrected`, values stay in intake).
Every organisation that received one of them under a consent still in effect, which still allows them, gets a
`lotse.client.corrected` (schema `...partner.v1`) on its inbox with the current values sealed to it, exactly
like a disclosure; and it is logged as one (`lotse.disclosure.made` on `lotse.disclosures.v1`, a `correction`
in the disclosure ledger).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import asyncpg

from contracts import Envelope, encode, new_event, topics
from contracts.events import PARTNER_CORRECTION, ClientCorrected, DisclosureBlocked, DisclosureMade, PartnerCorrection
from lotse_kit.consumer import Rejected

from ..adapters import repository as repo
from ..adapters.intake import ClientErasedAtIntake
from ..domain.corrections import Correction, correction_request_id, plan_corrections
from ..domain.event_ids import SOURCE, partner_correction_event_id
from .deps import Deps
from .forwarding import INTAKE_SOURCE
from .sealing import fetch_and_seal, recipient_key

log = logging.getLogger(__name__)


async def forward_correction(env: Envelope[ClientCorrected], conn: asyncpg.Connection, deps: Deps) -> None:
    if env.source != INTAKE_SOURCE:
        raise Rejected(f"corrections come from {INTAKE_SOURCE}, not {env.source}")
    data = env.data
    consents = await repo.lock_client_consents(conn, data.client_id)
    if await repo.lock_client_erasure(conn, data.client_id) is not None:
        return  # erased: nobody may receive anything any more
    now = deps.clock.now()
    plans = plan_corrections(await repo.received_by_client(conn, data.client_id), consents, data.categories, now=now)
    for plan in plans:
        request_id = correction_request_id(env.id, plan.recipient, plan.consent_id)
        if await repo.disclosure_decided(conn, request_id):
            continue
        key = await recipient_key(conn, deps, plan.recipient)
        if key is None:
            await _blocked(conn, deps, env, plan, request_id, "no-recipient-key: no active encryption key registered")
            continue
        try:
            sealed, sent = await fetch_and_seal(deps, client_id=data.client_id, categories=plan.categories, key=key)
        except ClientErasedAtIntake:
            log.info("correction not forwarded: intake erased the client", extra={"client_id": str(data.client_id)})
            return
        if not sent:
            continue  # intake holds no value for these categories any more: nothing to correct
        await deps.partner_topics.ensure(plan.recipient)
        correction = PartnerCorrection(
            client_id=data.client_id, consent_id=plan.consent_id, categories=sent, sealed=sealed, corrected_at=data.corrected_at
        )
        partner_env = new_event(
            correction,
            source=SOURCE,
            acting_org=data.corrected_by_org,
            spec=PARTNER_CORRECTION,
            event_id=partner_correction_event_id(request_id),
            time=now,
        )
        sha = hashlib.sha256(encode(partner_env).value).hexdigest()
        await repo.insert_disclosure(
            conn,
            repo.DisclosureRecord(
                request_id=request_id,
                client_id=data.client_id,
                referral_id=None,
                from_org=data.corrected_by_org,
                recipient=plan.recipient,
                purpose=plan.purpose,
                categories=tuple(sent),
                outcome="made",
                consent_id=plan.consent_id,
                reason=f"correction: GDPR Art. 19, under consent {plan.consent_id}",
                missing_categories=(),
                payload_sha256=sha,
                partner_event_id=partner_env.id,
                decided_at=now,
                kind="correction",
            ),
        )
        await deps.outbox.enqueue(conn, partner_env, topics.partner_inbox(plan.recipient))
        made = DisclosureMade(
            client_id=data.client_id,
            request_id=request_id,
            recipient=plan.recipient,
            purpose=plan.purpose,
            categories=sent,
            consent_id=plan.consent_id,
            payload_sha256=sha,
            disclosed_at=now,
        )
        await deps.outbox.enqueue(conn, new_event(made, source=SOURCE, acting_org=data.corrected_by_org, time=now))
        log.info(
            "correction disclosed",
            extra={"request_id": str(request_id), "recipient": plan.recipient, "categories": [c.value for c in sent], "kid": key.kid},
        )


async def _blocked(conn: asyncpg.Connection, deps: Deps, env: Envelope[Any], plan: Correction, request_id: Any, reason: str) -> None:
    data = env.data
    now = deps.clock.now()
    recorded = await repo.insert_disclosure(
        conn,
        repo.DisclosureRecord(
            request_id=request_id,
            client_id=data.client_id,
            referral_id=None,
            from_org=data.corrected_by_org,
            recipient=plan.recipient,
            purpose=plan.purpose,
            categories=plan.categories,
            outcome="blocked",
            consent_id=plan.consent_id,
            reason=reason,
            missing_categories=(),
            payload_sha256=None,
            partner_event_id=None,
            decided_at=now,
            kind="correction",
        ),
    )
    if recorded:
        blocked = DisclosureBlocked(
            client_id=data.client_id,
            request_id=request_id,
            recipient=plan.recipient,
            purpose=plan.purpose,
            categories=list(plan.categories),
            reason=reason,
            blocked_at=now,
        )
        await deps.outbox.enqueue(conn, new_event(blocked, source=SOURCE, acting_org=data.corrected_by_org, time=now))
    log.warning("correction blocked", extra={"request_id": str(request_id), "recipient": plan.recipient, "reason": reason})
