"""Referrals: sending one (consent-gated), the receiver's and sender's answers, and the consent gate's outcomes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from contracts import Envelope
from contracts.events import (
    DeadlineResolved,
    DisclosureBlocked,
    DisclosureMade,
    DisclosureRequested,
    EventData,
    ReferralAccepted,
    ReferralCompleted,
    ReferralDeclined,
    ReferralRevoked,
    ReferralSent,
)
from contracts.vocab import DeadlineKind, Purpose
from lotse_kit import calendar
from lotse_kit.consumer import Rejected

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.clients import personal_data
from ..domain.commands import AcceptReferral, CompleteReferral, DeclineReferral, RevokeReferral, SendReferral
from ..domain.errors import ConsentRequired, NotFound
from ..domain.referrals import OPEN, Action, Answer, ReferralStatus, check_actor, next_status, route_referral
from ..views import referral_view, sealed_case_for
from .deadlines import log_registered, new_deadline, resolve_referral_deadlines
from .deps import Deps

log = logging.getLogger(__name__)

CONSENT_SOURCE = "/lotse/consent"


# ---------------------------------------------------------------- sending
async def send_referral(cmd: SendReferral, deps: Deps) -> dict[str, Any]:
    client_id, acting_org = cmd.client_id, cmd.acting_org
    deps.require_member(acting_org)
    route = route_referral(
        deps.directory.network,
        need=cmd.need,
        to_org=cmd.to_org,
        service=cmd.service,
        acting_org=acting_org,
        default_answer_days=deps.settings.referral_default_answer_working_days,
    )
    categories = list(dict.fromkeys(cmd.categories))
    async with deps.db.pool.acquire() as conn:
        # The case, its personal data and its data key in one round trip (here and under the lock below).
        client = await sealed_case_for(conn, client_id, acting_org)
        personal_data(client, _personal(deps, client), categories)  # fail early on empty categories
    # Ask before anything is written or sent; no transaction is held while waiting.
    decision = await deps.consent.decide(client_id, route.to_org, Purpose.REFERRAL, categories)
    if not decision.allowed:
        metrics.referrals.labels("refused_no_consent").inc()
        log.info(
            "referral refused for want of consent",
            extra={"client_id": str(client_id), "to_org": route.to_org, "missing": [c.value for c in decision.missing_categories]},
        )
        raise ConsentRequired(route.to_org, Purpose.REFERRAL, categories, decision.missing_categories, decision.reason)
    now = deps.clock.now()
    referral_id, request_id = uuid.uuid4(), uuid.uuid4()
    answer_due = calendar.add_working_days(calendar.local_date(now, deps.tz), route.answer_within_working_days)
    deadline, deadline_registered = new_deadline(
        deps,
        client_id=client_id,
        kind=DeadlineKind.REFERRAL_ANSWER_DUE,
        due_at=calendar.end_of_day(answer_due, deps.tz),
        last_day=answer_due,
        responsible_org=route.to_org,
        referral_id=referral_id,
    )
    async with deps.db.pool.acquire() as conn, conn.transaction():
        client = await sealed_case_for(conn, client_id, acting_org, for_update=True)  # the case may have moved (or gone) while we asked
        personal_data(client, _personal(deps, client), categories)
        aead = deps.vault.data_key_of(client)
        assert aead is not None  # its personal data just opened under it
        # The notes stay in intake, encrypted; the consent gate fetches them with the personal data it may forward.
        # The referral, its notes and its answer deadline: one statement, which returns the referral's row.
        row = await repo.insert_sent_referral(
            conn,
            {
                "referral_id": referral_id,
                "client_id": client_id,
                "from_org": acting_org,
                "to_org": route.to_org,
                "service": route.service,
                "need": cmd.need.value if cmd.need else None,
                "requested_categories": [c.value for c in categories],
                "consent_id": decision.consent_id,
                "disclosure_request_id": request_id,
                "answer_due": answer_due,
                "answer_deadline_id": deadline["deadline_id"],
                "sent_at": now,
            },
            deps.vault.sealed_notes(aead, client_id, referral_id, {"reason": cmd.reason, "free_text": cmd.free_text}),
            deadline,
        )
        # The three events in the order they always had, in one round trip.
        await deps.emit_all(
            conn,
            [
                ReferralSent(
                    client_id=client_id,
                    referral_id=referral_id,
                    from_org=acting_org,
                    to_org=route.to_org,
                    service=route.service,
                    need=cmd.need,
                    requested_categories=categories,
                    answer_due=answer_due,
                    sent_at=now,
                ),
                DisclosureRequested(
                    client_id=client_id,
                    request_id=request_id,
                    referral_id=referral_id,
                    from_org=acting_org,
                    to_org=route.to_org,
                    purpose=Purpose.REFERRAL,
                    service=route.service,
                    need=cmd.need,
                    categories=categories,
                    answer_due=answer_due,
                    requested_at=now,
                ),
                deadline_registered,
            ],
            acting_org,
        )
    log_registered(deadline)
    metrics.referrals.labels("sent").inc()
    log.info(
        "referral sent",
        extra={"client_id": str(client_id), "referral_id": str(referral_id), "to_org": route.to_org, "service": route.service},
    )
    return referral_view(row)


def _personal(deps: Deps, client: asyncpg.Record) -> dict[str, Any]:
    personal = deps.vault.personal_of(client)
    if personal is None:
        raise NotFound(f"no client {client['client_id']}")
    return personal


# ---------------------------------------------------------------- the life cycle
async def apply_referral_action(
    conn: asyncpg.Connection, deps: Deps, ref: asyncpg.Record, answer: Answer, acting_org: str
) -> asyncpg.Record:
    """Moves a (locked) referral on, writes its event and settles its deadlines. Raises NotAllowed / IllegalTransition."""
    check_actor(answer.action, acting_org, ref["from_org"], ref["to_org"])
    status = next_status(ref["status"], answer.action)
    now = deps.clock.now()
    rid, cid, from_org, to_org = ref["referral_id"], ref["client_id"], ref["from_org"], ref["to_org"]
    found, erased_at, responsible_org = await _client_of(conn, ref)
    erased = found and erased_at is not None
    if erased:
        # The client was erased: the referral's life cycle goes on, but free text about it is neither kept nor passed on.
        answer = replace(answer, decline_text=None, outcome=None, revoke_reason=None)
    changes: dict[str, Any] = {"status": status.value}
    event: EventData
    if answer.action is Action.ACCEPT:
        changes.update(accepted_at=answer.at, appointment_at=answer.appointment_at)
        event = ReferralAccepted(
            client_id=cid, referral_id=rid, to_org=to_org, from_org=from_org, accepted_at=answer.at, appointment_at=answer.appointment_at
        )
    elif answer.action is Action.DECLINE:
        changes.update(declined_at=answer.at, decline_reason=answer.decline_reason.value, decline_text=answer.decline_text)
        event = ReferralDeclined(
            client_id=cid,
            referral_id=rid,
            to_org=to_org,
            from_org=from_org,
            reason=answer.decline_reason,
            reason_text=answer.decline_text,
            declined_at=answer.at,
        )
    elif answer.action is Action.COMPLETE:
        changes.update(completed_at=answer.at, outcome=answer.outcome)
        event = ReferralCompleted(
            client_id=cid, referral_id=rid, to_org=to_org, from_org=from_org, completed_at=answer.at, outcome=answer.outcome
        )
    elif answer.action is Action.REVOKE:
        changes.update(revoked_at=answer.at, revoke_reason=answer.revoke_reason)
        event = ReferralRevoked(
            client_id=cid, referral_id=rid, from_org=from_org, to_org=to_org, reason=answer.revoke_reason, revoked_at=answer.at
        )
    else:
        raise ValueError(f"not an answer: {answer.action}")
    notes = {k: changes.pop(k) for k in ("decline_text", "outcome", "revoke_reason") if k in changes}
    updated = await repo.update_referral(conn, rid, changes, now)
    assert updated is not None  # locked by the caller
    await deps.vault.update_notes(conn, cid, rid, {k: v for k, v in notes.items() if v is not None})  # no statement without notes
    events: list[EventData] = [event, *await settle_referral_deadlines(conn, deps, ref, status)]
    appointment: dict[str, Any] | None = None
    if answer.action is Action.ACCEPT and answer.appointment_at and answer.appointment_at > now and found and not erased:
        assert responsible_org is not None  # a case always has a responsible organisation
        appointment, registered = new_deadline(
            deps,
            client_id=cid,
            kind=DeadlineKind.APPOINTMENT,
            due_at=answer.appointment_at,
            last_day=None,
            responsible_org=responsible_org,
            referral_id=rid,
        )
        await repo.insert_deadline(conn, appointment)
        events.append(registered)
    # The referral's event, its deadlines' resolutions and the appointment's registration, in this order (as always),
    # in one round trip (`add_deadline` would write the registration on its own).
    await deps.emit_all(conn, events, acting_org)
    if appointment is not None:
        log_registered(appointment)
    metrics.referrals.labels(status.value).inc()
    log.info("referral " + status.value, extra={"client_id": str(cid), "referral_id": str(rid), "acting_org": acting_org})
    return updated  # nothing after the update changes the referral's row


async def settle_referral_deadlines(
    conn: asyncpg.Connection, deps: Deps, ref: asyncpg.Record, status: ReferralStatus
) -> list[DeadlineResolved]:
    """An answer resolves the answer deadline; a closed referral resolves every deadline attached to it.
    Returns their events for the caller to emit."""
    kinds = [DeadlineKind.REFERRAL_ANSWER_DUE] if status in OPEN else None
    return await resolve_referral_deadlines(conn, deps, ref, f"referral {status.value}", kinds=kinds)


async def _client_of(conn: asyncpg.Connection, ref: asyncpg.Record) -> tuple[bool, datetime | None, str | None]:
    """Whether the referral's client exists, when it was erased and who is responsible for it: from the row of
    `repo.get_referral_to_answer`, or read again when the referral changed while that statement waited for its lock."""
    if ref["client_current"]:
        return ref["client_found"], ref["client_erased_at"], ref["client_responsible_org"]
    client = await repo.get_client(conn, ref["client_id"])
    if client is None:
        return False, None, None
    return True, client["erased_at"], client["responsible_org"]


async def _act(deps: Deps, referral_id: uuid.UUID, answer: Answer, acting_org: str) -> dict[str, Any]:
    async with deps.db.pool.acquire() as conn, conn.transaction():
        ref = await repo.get_referral_to_answer(conn, referral_id)
        if ref is None or acting_org not in (ref["from_org"], ref["to_org"]):
            # Another organisation's referral does not exist for this one (a party on the wrong side gets 403 below).
            raise NotFound(f"no referral {referral_id}")
        row = await apply_referral_action(conn, deps, ref, answer, acting_org)
    return referral_view(row)


async def accept_referral(cmd: AcceptReferral, deps: Deps) -> dict[str, Any]:
    return await _act(deps, cmd.referral_id, Answer(Action.ACCEPT, deps.clock.now(), appointment_at=cmd.appointment_at), cmd.acting_org)


async def decline_referral(cmd: DeclineReferral, deps: Deps) -> dict[str, Any]:
    answer = Answer(Action.DECLINE, deps.clock.now(), decline_reason=cmd.reason, decline_text=cmd.reason_text)
    return await _act(deps, cmd.referral_id, answer, cmd.acting_org)


async def complete_referral(cmd: CompleteReferral, deps: Deps) -> dict[str, Any]:
    return await _act(deps, cmd.referral_id, Answer(Action.COMPLETE, deps.clock.now(), outcome=cmd.outcome), cmd.acting_org)


async def revoke_referral(cmd: RevokeReferral, deps: Deps) -> dict[str, Any]:
    return await _act(deps, cmd.referral_id, Answer(Action.REVOKE, deps.clock.now(), revoke_reason=cmd.reason), cmd.acting_org)


# ---------------------------------------------------------------- the consent gate's outcomes (lotse.disclosures.v1)
async def lock_batch_referrals(envs: Sequence[Envelope[Any]], conn: asyncpg.Connection, deps: Deps) -> None:
    """The batch lock of both subscriptions (lotse_kit.declaration.LockBatch): the referrals a batch of disclosure
    outcomes or partner answers names, locked in one order before its handlers run. The two subscriptions' batches
    touch the same referrals in delivery order (a referral's outcome and its answer arrive close together), which
    deadlocked before."""
    await repo.lock_referrals(conn, sorted({rid for env in envs if (rid := getattr(env.data, "referral_id", None)) is not None}))


def _outcome_referral_id(env: Envelope[Any]) -> uuid.UUID | None:
    """The referral a disclosure outcome is about (None: not one of ours, e.g. a contact disclosure); only the
    consent gate may send one."""
    if env.source != CONSENT_SOURCE:
        raise Rejected(f"disclosure outcomes come from {CONSENT_SOURCE}, not {env.source}")
    referral_id: uuid.UUID | None = env.data.referral_id
    return referral_id


def _check_recipient(ref: asyncpg.Record | None, recipient: str) -> None:
    if ref is not None and ref["to_org"] != recipient:
        raise Rejected(f"referral {ref['referral_id']} goes to {ref['to_org']}, not {recipient}")


async def _disclosed_referral(conn: asyncpg.Connection, env: Envelope[Any]) -> asyncpg.Record | None:
    referral_id = _outcome_referral_id(env)
    if referral_id is None:
        return None
    ref = await repo.get_referral(conn, referral_id, for_update=True)
    _check_recipient(ref, env.data.recipient)
    return ref


async def record_disclosure_blocked(env: Envelope[DisclosureBlocked], conn: asyncpg.Connection, deps: Deps) -> None:
    ref = await _disclosed_referral(conn, env)
    if ref is None or ReferralStatus(ref["status"]) not in OPEN:
        return
    await repo.update_referral(
        conn,
        ref["referral_id"],
        {
            "status": ReferralStatus.BLOCKED.value,
            "blocked_at": env.data.blocked_at,
            "blocked_reason": env.data.reason[:500],
        },
        deps.clock.now(),
    )
    await deps.emit_all(conn, await settle_referral_deadlines(conn, deps, ref, ReferralStatus.BLOCKED), None)
    metrics.referrals.labels(ReferralStatus.BLOCKED.value).inc()
    log.warning(
        "referral blocked by the consent gate",
        extra={
            "client_id": str(ref["client_id"]),
            "referral_id": str(ref["referral_id"]),
            "missing": [c.value for c in env.data.missing_categories],
        },
    )


async def record_disclosure_made(env: Envelope[DisclosureMade], conn: asyncpg.Connection, deps: Deps) -> None:
    referral_id = _outcome_referral_id(env)
    if referral_id is None:
        return
    data = env.data
    # One statement in the usual case: no status changes here, so the row needs no lock of its own before the update.
    changed = await repo.update_referral(
        conn, referral_id, {"disclosed_at": data.disclosed_at, "consent_id": data.consent_id}, deps.clock.now(), to_org=data.recipient
    )
    if changed is None:  # no such referral, or one to someone else
        _check_recipient(await repo.get_referral(conn, referral_id), data.recipient)
