"""One function per command or event. State changes and the events announcing them share one transaction."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from contracts import PARTNER_REFERRAL, Envelope, encode, new_event, spec_for, topics
from contracts.events import (
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
    DisclosureBlocked,
    DisclosureMade,
    DisclosureRequested,
    PartnerReferral,
)
from contracts.vocab import DataCategory, Purpose
from lotse_kit import outbox
from lotse_kit.consumer import Rejected

from .adapters import metrics
from .adapters import repository as repo
from .adapters.decision_cache import DecisionCache
from .adapters.decision_reader import DecisionReader
from .adapters.network import OrgDirectory
from .adapters.partner_topics import PartnerTopics
from .domain.forwarding import Audience, forwarded_event_id, recipients, rule_for
from .domain.model import (
    Consent,
    ConsentForm,
    ConsentRuleViolation,
    ConsentStatus,
    Decision,
    InformationGiven,
    decide,
    new_consent,
)

log = logging.getLogger(__name__)

SOURCE = "/lotse/consent"
Clock = Callable[[], datetime]
_EVENT_NS = uuid.UUID("0d7a4f3e-2b8c-4c61-9f0a-6e5d3c2b1a09")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    """What handlers need besides a connection; bootstrap builds it, tests swap parts."""

    pool_getter: Callable[[], asyncpg.Pool]
    partner_topics: PartnerTopics
    directory: OrgDirectory
    cache: DecisionCache | None
    clock: Clock = utc_now
    reader: DecisionReader | None = None  # dedicated connections for the decision API; None: the pool
    default_validity: timedelta = timedelta(days=365)
    max_validity: timedelta = timedelta(days=730)
    expiry_batch_size: int = 100


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


# ---------------------------------------------------------------- commands
@dataclass(frozen=True)
class GrantConsent:
    client_id: UUID
    collecting_org: str
    recipients: Sequence[str]
    purposes: Sequence[Purpose]
    categories: Sequence[DataCategory]
    form: ConsentForm
    form_reason: str | None
    information: InformationGiven
    information_language: str
    interpreter_used: bool
    valid_until: datetime | None
    recorded_by: str | None = None


async def grant_consent(deps: Deps, cmd: GrantConsent) -> Consent:
    unknown = [o for o in [cmd.collecting_org, *cmd.recipients] if not deps.directory.knows(o)]
    if unknown:
        raise ConsentRuleViolation("recipients", f"not organisations of this network: {', '.join(sorted(set(unknown)))}")
    consent = new_consent(
        consent_id=uuid.uuid4(),
        client_id=cmd.client_id,
        collecting_org=cmd.collecting_org,
        recipients=cmd.recipients,
        purposes=cmd.purposes,
        categories=cmd.categories,
        form=cmd.form,
        form_reason=cmd.form_reason,
        information=cmd.information,
        information_language=cmd.information_language,
        interpreter_used=cmd.interpreter_used,
        valid_until=cmd.valid_until,
        now=deps.clock(),
        default_validity=deps.default_validity,
        max_validity=deps.max_validity,
        recorded_by=cmd.recorded_by,
    )
    event = ConsentGranted(
        client_id=consent.client_id,
        consent_id=consent.consent_id,
        collecting_org=consent.collecting_org,
        recipients=list(consent.recipients),
        purposes=list(consent.purposes),
        categories=list(consent.categories),
        legal_basis=list(consent.legal_basis),
        form=consent.form.value,
        information_language=consent.information_language,
        interpreter_used=consent.interpreter_used,
        granted_at=consent.granted_at,
        valid_until=consent.valid_until,
    )
    async with deps.pool_getter().acquire() as conn, conn.transaction():
        await repo.insert_consent(conn, consent)
        await repo.bump_version(conn, consent.client_id)
        await outbox.enqueue(conn, new_event(event, source=SOURCE, acting_org=cmd.collecting_org), topics.CONSENTS)
    log.info("consent granted", extra={"consent_id": str(consent.consent_id), "client_id": str(consent.client_id)})
    return consent


async def withdraw_consent(deps: Deps, consent_id: UUID, *, by_org: str) -> Consent:
    """GDPR Art. 7(3): effective for every decision after commit; partners that received data are told."""
    async with deps.pool_getter().acquire() as conn:
        async with conn.transaction():
            consent = await repo.get_consent(conn, consent_id, for_update=True)
            if consent is None:
                raise NotFound(f"no consent {consent_id}")
            now = deps.clock()
            status = consent.status(now)
            if status is ConsentStatus.WITHDRAWN:
                pass  # withdrawing twice is harmless; the first withdrawal stands
            elif status is ConsentStatus.EXPIRED:
                raise Conflict(f"consent {consent_id} expired at {consent.valid_until.isoformat()}; there is nothing to withdraw")
            else:
                await repo.mark_withdrawn(conn, consent_id, at=now, by_org=by_org)
                await repo.bump_version(conn, consent.client_id)
                disclosed = await repo.recipients_of_consent(conn, consent_id)
                env = new_event(
                    ConsentWithdrawn(
                        client_id=consent.client_id, consent_id=consent_id, withdrawn_at=now,
                        recorded_by_org=by_org, disclosed_to=disclosed,
                    ),
                    source=SOURCE,
                    acting_org=by_org,
                )
                await outbox.enqueue(conn, env, topics.CONSENTS)
                await forward_to_partners(conn, env, deps)
                log.info("consent withdrawn", extra={"consent_id": str(consent_id), "disclosed_to": disclosed})
        if deps.cache is not None:
            deps.cache.invalidate(consent.client_id)  # not needed for correctness (versions are), frees memory at once
        withdrawn = await repo.get_consent(conn, consent_id)
    assert withdrawn is not None
    return withdrawn


async def expire_due_consents(deps: Deps) -> int:
    """Marks consents past valid_until as expired and emits lotse.consent.expired once per consent.

    Safe with several replicas: rows are claimed FOR UPDATE SKIP LOCKED and the
    status change is conditional, so each consent is expired by exactly one transaction.
    """
    now = deps.clock()
    expired = 0
    async with deps.pool_getter().acquire() as conn, conn.transaction():
        for consent in await repo.claim_due_expiries(conn, now=now, limit=deps.expiry_batch_size):
            if not await repo.mark_expired(conn, consent.consent_id, at=consent.valid_until):
                continue
            await repo.bump_version(conn, consent.client_id)
            disclosed = await repo.recipients_of_consent(conn, consent.consent_id)
            env = new_event(
                ConsentExpired(
                    client_id=consent.client_id, consent_id=consent.consent_id,
                    expired_at=consent.valid_until, disclosed_to=disclosed,
                ),
                source=SOURCE,
                event_id=uuid.uuid5(_EVENT_NS, f"expired:{consent.consent_id}"),
            )
            await outbox.enqueue(conn, env, topics.CONSENTS)
            await forward_to_partners(conn, env, deps)
            expired += 1
    if expired:
        log.info("consents expired", extra={"count": expired})
    return expired


# ---------------------------------------------------------------- queries
async def check_decision(
    deps: Deps, *, client_id: UUID, recipient: str, purpose: Purpose, categories: Sequence[DataCategory]
) -> Decision:
    read = deps.reader or _pool_reader(deps)
    snap = None
    cache = "off"
    if deps.cache is not None:
        snap = deps.cache.get(client_id, await read(lambda c: repo.client_version(c, client_id)))
        cache = "hit" if snap is not None else "miss"
    if snap is None:
        snap = await read(lambda c: repo.client_snapshot(c, client_id))
        if deps.cache is not None:
            deps.cache.put(client_id, snap)
    d = decide(snap.consents, recipient=recipient, purpose=purpose, categories=categories, now=deps.clock(), erased_at=snap.erased_at)
    metrics.decisions.labels(str(d.allowed).lower(), cache).inc()
    return d


def _pool_reader(deps: Deps):  # type: ignore[no-untyped-def]
    async def read(query):  # type: ignore[no-untyped-def]
        return await query(deps.pool_getter())

    return read


async def get_consent(deps: Deps, consent_id: UUID) -> Consent:
    async with deps.pool_getter().acquire() as conn:
        consent = await repo.get_consent(conn, consent_id)
    if consent is None:
        raise NotFound(f"no consent {consent_id}")
    return consent


async def list_client_consents(deps: Deps, client_id: UUID) -> list[Consent]:
    async with deps.pool_getter().acquire() as conn:
        return await repo.client_consents(conn, client_id, with_disclosures=True)


# ---------------------------------------------------------------- events
async def gate_disclosure_request(conn: asyncpg.Connection, env: Envelope[DisclosureRequested], deps: Deps) -> None:
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
    now = deps.clock()
    # Locks the client's consents FOR SHARE: a withdrawal running now either committed before
    # (and we see it) or waits until we commit (and then names this recipient in disclosed_to).
    consents = await repo.lock_client_consents(conn, req.client_id)
    erased = await repo.lock_client_erasure(conn, req.client_id)
    decision = decide(consents, recipient=req.to_org, purpose=req.purpose, categories=req.categories, now=now, erased_at=erased)
    if decision.allowed and not deps.directory.knows(req.to_org):
        decision = Decision(False, None, f"unknown-recipient: {req.to_org} is not an organisation of this network", ())
    if decision.allowed:
        await _disclose(conn, env, decision, deps, now)
    else:
        await _block(conn, env, decision, now)
    metrics.gate_decisions.labels("made" if decision.allowed else "blocked").inc()


async def _disclose(conn: asyncpg.Connection, env: Envelope[DisclosureRequested], decision: Decision, deps: Deps, now: datetime) -> None:
    req = env.data
    assert decision.consent_id is not None
    # The partner's topics must exist before the relay publishes to them.
    await deps.partner_topics.ensure(req.to_org)
    personal = req.personal_data.restricted_to(set(req.categories))
    disclosed = personal.categories()
    referral = PartnerReferral(
        client_id=req.client_id, referral_id=req.referral_id, from_org=req.from_org, to_org=req.to_org,
        service=req.service, need=req.need, reason=req.reason, free_text=req.free_text, answer_due=req.answer_due,
        consent_id=decision.consent_id, categories=disclosed, personal_data=personal, sent_at=now,
    )
    partner_env = new_event(
        referral, source=SOURCE, acting_org=req.from_org, spec=PARTNER_REFERRAL,
        event_id=uuid.uuid5(_EVENT_NS, f"partner-referral:{req.request_id}"), time=now,
    )
    # The hash covers the exact bytes the partner receives: encode() is what the outbox stores.
    sha = hashlib.sha256(encode(partner_env).value).hexdigest()
    recorded = await repo.insert_disclosure(
        conn,
        repo.DisclosureRecord(
            request_id=req.request_id, client_id=req.client_id, referral_id=req.referral_id, from_org=req.from_org,
            recipient=req.to_org, purpose=req.purpose, categories=tuple(disclosed), outcome="made",
            consent_id=decision.consent_id, reason=decision.reason, missing_categories=(), payload_sha256=sha,
            partner_event_id=partner_env.id, decided_at=now,
        ),
    )
    if not recorded:  # decided concurrently under the same request_id; that decision stands
        return
    await outbox.enqueue(conn, partner_env, topics.partner_inbox(req.to_org))
    made = DisclosureMade(
        client_id=req.client_id, request_id=req.request_id, referral_id=req.referral_id, recipient=req.to_org,
        purpose=req.purpose, categories=disclosed, consent_id=decision.consent_id, payload_sha256=sha, disclosed_at=now,
    )
    await outbox.enqueue(conn, new_event(made, source=SOURCE, acting_org=req.from_org, time=now), topics.DISCLOSURES)
    log.info(
        "disclosure made",
        extra={"request_id": str(req.request_id), "recipient": req.to_org, "categories": [c.value for c in disclosed],
               "consent_id": str(decision.consent_id)},
    )


async def _block(conn: asyncpg.Connection, env: Envelope[DisclosureRequested], decision: Decision, now: datetime) -> None:
    req = env.data
    recorded = await repo.insert_disclosure(
        conn,
        repo.DisclosureRecord(
            request_id=req.request_id, client_id=req.client_id, referral_id=req.referral_id, from_org=req.from_org,
            recipient=req.to_org, purpose=req.purpose, categories=tuple(req.categories), outcome="blocked",
            consent_id=decision.consent_id, reason=decision.reason, missing_categories=decision.missing_categories,
            payload_sha256=None, partner_event_id=None, decided_at=now,
        ),
    )
    if not recorded:
        return
    blocked = DisclosureBlocked(
        client_id=req.client_id, request_id=req.request_id, referral_id=req.referral_id, recipient=req.to_org,
        purpose=req.purpose, categories=list(req.categories), reason=decision.reason,
        missing_categories=list(decision.missing_categories), blocked_at=now,
    )
    await outbox.enqueue(conn, new_event(blocked, source=SOURCE, acting_org=req.from_org, time=now), topics.DISCLOSURES)
    log.info("disclosure blocked", extra={"request_id": str(req.request_id), "recipient": req.to_org, "reason": decision.reason})


async def record_client_erasure(conn: asyncpg.Connection, env: Envelope[Any], deps: Deps) -> None:
    """After erasure no decision allows anything for the client; partners that received data are told to erase."""
    await repo.bump_version(conn, env.data.client_id, erased_at=env.data.erased_at)
    await forward_to_partners(conn, env, deps)


async def forward_to_partners(conn: asyncpg.Connection, env: Envelope[Any], deps: Deps) -> list[str]:
    """Copies a pseudonymous event to the inbox of every partner entitled to it (domain/forwarding.py)."""
    rule = rule_for(env.type)
    if rule is None:
        return []
    orgs = await _audience(conn, rule.audience, env, deps.clock())
    targets = recipients(orgs, originator=env.source_partner)
    spec = spec_for(env.type, env.dataschema)
    assert spec is not None
    for org in targets:
        await deps.partner_topics.ensure(org)
        copy = new_event(
            env.data, source=SOURCE, acting_org=env.acting_org, spec=spec,
            event_id=forwarded_event_id(env.id, org), time=env.time,
        )
        await outbox.enqueue(conn, copy, topics.partner_inbox(org))
    if targets:
        log.info("event forwarded to partners", extra={"type": env.type, "partners": targets, "why": rule.why})
    return targets


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
