"""The disclosure gate: the only place personal data leaves the platform, re-checked at that moment.

The request names only pseudonymous ids, the recipient and the categories (`lotse.disclosure.requested`
v2). After its own consent check the gate fetches exactly the allowed categories from intake's internal
API, seals them to the recipient's newest active encryption key and writes the referral to the recipient's
inbox, in the consumer's transaction together with the disclosure record and `lotse.disclosure.made`.

A batch of requests is prepared before its transaction opens (`prepare_gate_batch`, the gate subscription's
`prepare`): a read-only pre-check with the same `decide()` over the current consents, then ONE request to intake
for exactly the requests that pass it, with exactly the categories it allowed. The handler still decides under
its locks; it seals the prefetched content only when its own decision allows exactly those categories for that
request, and otherwise fetches alone, as without a batch. Within the batch's transaction it also reads each
recipient's keys once. Per request the gate asks "decided already?" (unless the pre-check found the request
undecided), reads and locks the client's consents and version row, and reads the recipient's keys unless its batch
has them, in one statement (`lock_gate_state`); a decision made elsewhere after that still wins:
`insert_disclosure` then records nothing and nothing is emitted.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from contracts import PARTNER_REFERRAL, Envelope, encode, new_event, topics
from contracts.events import DisclosureBlocked, DisclosureMade, DisclosureRequested, PartnerReferralV2, Sealed, SealedContent
from contracts.sealed import PublicKey
from contracts.vocab import DataCategory
from lotse_kit.consumer import Rejected, prepared

from ..adapters import metrics
from ..adapters import repository as repo
from ..adapters.intake import NOT_SERVED, ClientErasedAtIntake, DisclosureQuery, Fetched, IntakeUnavailable
from ..domain.event_ids import SOURCE, partner_referral_event_id
from ..domain.model import Decision, decide
from .deps import Deps
from .sealing import fetch_and_seal, recipient_key_of, seal_fetched

log = logging.getLogger(__name__)

# A batch of one request is handled as without a batch: the pre-check's reads would cost more than they save.
PREPARE_FROM = 2


@dataclass(frozen=True)
class Prefetched:
    """What intake answered, before the batch's transaction, for one request that passed the pre-check."""

    query: DisclosureQuery
    fetched: Fetched  # the content, or ERASED

    def fits(self, req: DisclosureRequested) -> bool:
        """Fetched for this request's client and referral, with exactly the categories the handler's decision allows."""
        return self.query == DisclosureQuery(req.client_id, tuple(req.categories), req.referral_id)


@dataclass
class GateBatch:
    """`prepare_gate_batch`'s result, which the gate's handlers of that batch read through `prepared()`."""

    undecided: frozenset[uuid.UUID]  # requests no decision was recorded for when the batch was prepared
    prefetched: dict[uuid.UUID, Prefetched]  # by request id; taken (and dropped) by the handler of that request
    # Filled by the handlers, inside the batch's one transaction: each recipient's sealing key is read once
    # (with the first of its requests' `lock_gate_state`).
    keys: dict[str, PublicKey | None] = field(default_factory=dict)
    decided_here: set[uuid.UUID] = field(default_factory=set)  # a request twice in one batch is decided once


async def prepare_gate_batch(envs: Sequence[Envelope[Any]], deps: Deps) -> GateBatch:
    """The gate subscription's `prepare`: read-only, no locks, no effects. Pre-checks each request with the same
    `decide()` over the client's current consents (and the recipient's membership and key, as the handler does),
    then fetches from intake in one request exactly the requests that pass, with exactly their categories: personal
    data reaches the gate only where consent allows it at that moment. Intake unavailable leaves the handlers to
    fetch one by one; any other failure makes the kit handle the batch without it. A lone request is left to its
    handler (`PREPARE_FROM`)."""
    reqs = [e.data for e in envs if isinstance(e.data, DisclosureRequested) and e.source_partner is None]
    if len(reqs) < PREPARE_FROM:
        return GateBatch(frozenset(), {})  # nothing to share: the handler alone costs less than the pre-check
    now = deps.clock.now()
    orgs = sorted({r.to_org for r in reqs if deps.directory.has(r.to_org)})
    async with deps.db.pool.acquire() as conn:
        state = await repo.gate_batch_state(conn, [r.request_id for r in reqs], [r.client_id for r in reqs], orgs)
    decided, consents, erased = state.decided, state.consents, state.erased
    has_key = {org: recipient_key_of(deps, org, keys) is not None for org, keys in state.stored_keys.items()}
    queries: dict[uuid.UUID, DisclosureQuery] = {}
    for req in reqs:
        if req.request_id in decided or req.request_id in queries or not has_key.get(req.to_org, False):
            continue
        decision = decide(
            consents.get(req.client_id, ()),
            recipient=req.to_org,
            purpose=req.purpose,
            categories=req.categories,
            now=now,
            erased_at=erased.get(req.client_id),
        )
        if decision.allowed:  # one consent covers every requested category: exactly those are fetched
            queries[req.request_id] = DisclosureQuery(req.client_id, tuple(req.categories), req.referral_id)
    batch = GateBatch(frozenset(r.request_id for r in reqs) - decided, {})
    if queries:
        try:
            answers = await deps.intake.disclosures(list(queries.values()))
        except IntakeUnavailable as exc:
            log.warning("intake's batch disclosure failed; the gate fetches one by one", extra={"error": str(exc)})
            return batch
        batch.prefetched = {rid: Prefetched(q, a) for (rid, q), a in zip(queries.items(), answers, strict=True) if a != NOT_SERVED}
    metrics.gate_prefetched.inc(len(batch.prefetched))
    return batch


def _batch() -> GateBatch | None:
    found = prepared()
    return found if isinstance(found, GateBatch) else None


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
    batch = _batch()
    # Taken at once: prefetched personal data is sealed by this handler or dropped, never kept for another.
    pre = batch.prefetched.pop(req.request_id, None) if batch is not None else None
    # One statement: "decided already?" and the client's consents and version row, locked FOR SHARE: a
    # withdrawal or erasure running now either committed before (and we see it) or waits until we commit
    # (and then names this recipient in disclosed_to). A request decided earlier in this batch's
    # transaction is seen as decided too; the batch's pre-check spares that question where it found none. The
    # recipient's stored keys come with it, unless this batch has them.
    known_undecided = batch is not None and req.request_id in batch.undecided and req.request_id not in batch.decided_here
    keys_org = req.to_org if deps.directory.has(req.to_org) and (batch is None or req.to_org not in batch.keys) else None
    state = await repo.lock_gate_state(conn, req.client_id, None if known_undecided else req.request_id, keys_of=keys_org)
    if batch is not None and state.stored_keys is not None:
        batch.keys[req.to_org] = recipient_key_of(deps, req.to_org, state.stored_keys)
    if state.decided:
        log.info("disclosure request already decided", extra={"request_id": str(req.request_id)})
        return
    if batch is not None:
        batch.decided_here.add(req.request_id)
    now = deps.clock.now()
    decision = decide(
        state.consents, recipient=req.to_org, purpose=req.purpose, categories=req.categories, now=now, erased_at=state.erased_at
    )
    if decision.allowed and not deps.directory.has(req.to_org):
        decision = Decision(False, None, f"unknown-recipient: {req.to_org} is not an organisation of this network", ())
    key: PublicKey | None = None
    if decision.allowed:
        if batch is not None:
            key = batch.keys[req.to_org]
        elif state.stored_keys is not None:
            key = recipient_key_of(deps, req.to_org, state.stored_keys)
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
            if pre is not None and pre.fits(req):  # this decision allows exactly what was fetched for this request
                if not isinstance(pre.fetched, SealedContent):  # ERASED: intake's 410, in the batch
                    raise ClientErasedAtIntake(f"client {req.client_id} was erased")
                sealed, disclosed = seal_fetched(pre.fetched, categories=req.categories, key=key, referral_id=req.referral_id)
            else:
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
