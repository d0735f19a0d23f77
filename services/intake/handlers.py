"""Intake's use cases: one function per command or consumed event.

Commands run in their own transaction on the pool; event handlers run on the consumer's
connection, inside the transaction that also records the event id. Every state change
writes its events to the outbox in the same transaction. Personal data is never logged.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from contracts import Envelope, new_event, topics
from contracts.events import (
    CaseHandedOver,
    ClientRegistered,
    ClientUpdated,
    Contact,
    DeadlineApproaching,
    DeadlineMissed,
    DeadlineRegistered,
    DeadlineResolved,
    DisclosureBlocked,
    DisclosureMade,
    DisclosureRequested,
    EventData,
    Identity,
    PersonalData,
    ReferralAccepted,
    ReferralAnswer,
    ReferralCompleted,
    ReferralDeclined,
    ReferralRevoked,
    ReferralSent,
    ResidenceStatus,
)
from contracts.vocab import DataCategory, DeadlineKind, Purpose, ResidenceTitle
from lotse_kit import outbox
from lotse_kit.consumer import Rejected, current_delivery

from . import commands as cmds
from .adapters import repository as repo
from .adapters.clock import Clock
from .adapters.consent import ConsentDecisions, Decision
from .config import IntakeSettings
from .domain import calendar, deadlines
from .domain.referrals import OPEN, Action, IllegalTransition, NotAllowed, ReferralStatus, check_actor, next_status
from lotse_kit.network import Network

log = logging.getLogger(__name__)

SOURCE = "/lotse/intake"
CONSENT_SOURCE = "/lotse/consent"
RESIDENCE_KINDS = (DeadlineKind.RESIDENCE_TITLE_EXPIRY.value, DeadlineKind.CHANCEN_AUFENTHALT_END.value)


# ---------------------------------------------------------------- dependencies and errors
@dataclass
class Deps:
    network: Network
    consent: ConsentDecisions
    clock: Clock
    settings: IntakeSettings

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.network.timezone)

    def lead_times(self, kind: DeadlineKind) -> list[int]:
        s = self.settings
        if kind is DeadlineKind.APPOINTMENT:
            return list(s.appointment_lead_times_days)
        if kind is DeadlineKind.REFERRAL_ANSWER_DUE:
            return list(s.referral_answer_lead_times_days)
        return list(s.deadline_lead_times_days)


class NotFound(Exception):
    pass


class Forbidden(Exception):
    pass


class Conflict(Exception):
    pass


class Invalid(Exception):
    """A request that is well-formed but names something unknown or inconsistent (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConsentRequired(Exception):
    def __init__(self, decision: Decision, recipient: str, purpose: Purpose, categories: list[DataCategory]) -> None:
        super().__init__(decision.reason or "no valid consent")
        self.decision = decision
        self.recipient = recipient
        self.purpose = purpose
        self.categories = categories


async def _enqueue(conn: asyncpg.Connection, data: EventData, acting_org: str | None, topic: str, event_id: uuid.UUID | None = None) -> Envelope[Any]:
    env = new_event(data, source=SOURCE, acting_org=acting_org, event_id=event_id)
    await outbox.enqueue(conn, env, topic)
    return env


def _member(deps: Deps, org: str) -> None:
    if not deps.network.has_org(org):
        raise Forbidden(f"{org} is not a member of the network {deps.network.district}")


def _responsible(client: asyncpg.Record, acting_org: str) -> None:
    if client["responsible_org"] != acting_org:
        raise Forbidden(f"only the responsible organisation {client['responsible_org']} may do this, not {acting_org}")


# ---------------------------------------------------------------- deadlines (shared)
def _first_check(due_at: datetime, lead_times: list[int], now: datetime) -> datetime | None:
    plan = deadlines.plan_notices(due_at, lead_times, now, set())
    return now if plan.notices else plan.next_check_at


async def _add_deadline(
    conn: asyncpg.Connection,
    deps: Deps,
    *,
    client_id: uuid.UUID,
    kind: DeadlineKind,
    due_at: datetime,
    last_day: Any,
    responsible_org: str,
    acting_org: str,
    referral_id: uuid.UUID | None = None,
    lead_times: list[int] | None = None,
) -> uuid.UUID:
    now = deps.clock.now()
    leads = sorted(set(lead_times or deps.lead_times(kind)), reverse=True)
    deadline_id = uuid.uuid4()
    note = deadlines.legal_note(kind, last_day)
    await repo.insert_deadline(conn, {
        "deadline_id": deadline_id, "client_id": client_id, "kind": kind.value, "due_at": due_at, "last_day": last_day,
        "responsible_org": responsible_org, "referral_id": referral_id, "legal_note": note, "lead_times_days": leads,
        "registered_at": now, "next_check_at": _first_check(due_at, leads, now),
    })
    await _enqueue(conn, DeadlineRegistered(
        client_id=client_id, deadline_id=deadline_id, kind=kind, due_at=due_at, responsible_org=responsible_org,
        referral_id=referral_id, legal_note=note, lead_times_days=leads, registered_at=now,
    ), acting_org, topics.DEADLINES)
    log.info("deadline registered", extra={"client_id": str(client_id), "deadline_id": str(deadline_id), "kind": kind.value})
    return deadline_id


def _deadline_data(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "client_id": row["client_id"], "deadline_id": row["deadline_id"], "kind": DeadlineKind(row["kind"]), "due_at": row["due_at"],
        "responsible_org": row["responsible_org"], "referral_id": row["referral_id"], "legal_note": row["legal_note"],
    }


async def _resolve(conn: asyncpg.Connection, deps: Deps, row: asyncpg.Record, resolution: str | None, acting_org: str | None) -> None:
    now = deps.clock.now()
    await repo.resolve_deadline(conn, row["deadline_id"], now, resolution)
    await _enqueue(conn, DeadlineResolved(**_deadline_data(row), resolved_at=now, resolution=resolution), acting_org, topics.DEADLINES)


def _residence_deadline(title: ResidenceTitle | None, valid_until: Any, valid_from: Any) -> tuple[DeadlineKind, Any] | None:
    """The automatic deadline for a residence title: (kind, last valid day), or None."""
    if title is None:
        return None
    if title is ResidenceTitle.CHANCEN_104C:
        last = deadlines.chancen_aufenthalt_last_day(valid_from) if valid_from else valid_until
        return (DeadlineKind.CHANCEN_AUFENTHALT_END, last) if last else None
    return (DeadlineKind.RESIDENCE_TITLE_EXPIRY, valid_until) if valid_until else None


def _check_104c(title: ResidenceTitle | None, valid_until: Any, valid_from: Any, field: str = "residence_valid_until") -> Any:
    """For a §104c title given with its first day, the last day is computed; a contradicting valid_until is refused."""
    if title is ResidenceTitle.CHANCEN_104C and valid_from:
        last = deadlines.chancen_aufenthalt_last_day(valid_from)
        if valid_until and valid_until != last:
            raise Invalid(field, f"a §104c title valid from {valid_from} ends on {last} (18 months, §188(2) BGB), not {valid_until}")
        return last
    return valid_until


# ---------------------------------------------------------------- clients
async def register_client(pool: asyncpg.Pool, deps: Deps, cmd: cmds.RegisterClient, acting_org: str) -> uuid.UUID:
    _member(deps, acting_org)
    if cmd.registering_org and cmd.registering_org != acting_org:
        raise Forbidden(f"{acting_org} cannot register a client on behalf of {cmd.registering_org}")
    valid_until = _check_104c(cmd.residence_title, cmd.residence_valid_until, cmd.residence_valid_from)
    client_id = uuid.uuid4()
    now = deps.clock.now()
    if valid_until and valid_until < calendar.local_date(now, deps.tz):
        raise Invalid("residence_valid_until", "the residence title has already expired")
    case = {
        "client_id": client_id, "registering_org": acting_org, "responsible_org": acting_org,
        "preferred_language": cmd.preferred_language, "languages": list(dict.fromkeys(cmd.languages)),
        "needs": [n.value for n in dict.fromkeys(cmd.needs)], "residence_title": cmd.residence_title.value if cmd.residence_title else None,
        "residence_valid_until": valid_until, "legal_regime": cmd.legal_regime.value if cmd.legal_regime else None, "registered_at": now,
    }
    personal = cmd.model_dump(include={"given_name", "family_name", "date_of_birth", "email", "phone", "education_qualifications", "health"})
    async with pool.acquire() as conn, conn.transaction():
        await repo.insert_client(conn, case, personal)
        await _enqueue(conn, ClientRegistered(
            client_id=client_id, registering_org=acting_org, responsible_org=acting_org, preferred_language=cmd.preferred_language,
            languages=case["languages"], needs=list(dict.fromkeys(cmd.needs)), residence_title=cmd.residence_title,
            residence_valid_until=valid_until, legal_regime=cmd.legal_regime, registered_at=now,
        ), acting_org, topics.CLIENTS)
        auto = _residence_deadline(cmd.residence_title, valid_until, cmd.residence_valid_from)
        if auto:
            kind, last = auto
            await _add_deadline(conn, deps, client_id=client_id, kind=kind, due_at=calendar.end_of_day(last, deps.tz), last_day=last,
                                responsible_org=acting_org, acting_org=acting_org)
    log.info("client registered", extra={"client_id": str(client_id), "registering_org": acting_org})
    return client_id


async def update_client(pool: asyncpg.Pool, deps: Deps, client_id: uuid.UUID, cmd: cmds.UpdateClient, acting_org: str) -> list[str]:
    fields = cmd.model_fields_set
    now = deps.clock.now()
    async with pool.acquire() as conn, conn.transaction():
        client = await repo.get_client(conn, client_id, for_update=True)
        if client is None:
            raise NotFound(f"no client {client_id}")
        _responsible(client, acting_org)
        personal = await repo.get_personal_data(conn, client_id)
        changes: dict[str, Any] = {}
        for f in ("preferred_language", "email", "phone"):
            if f in fields:
                current = client[f] if f == "preferred_language" else personal[f]
                if getattr(cmd, f) != current:
                    changes[f] = getattr(cmd, f)
        if "languages" in fields and list(dict.fromkeys(cmd.languages or [])) != list(client["languages"]):
            changes["languages"] = list(dict.fromkeys(cmd.languages or []))
        if "needs" in fields:
            needs = [n.value for n in dict.fromkeys(cmd.needs or [])]
            if needs != list(client["needs"]):
                changes["needs"] = needs
        if "legal_regime" in fields:
            regime = cmd.legal_regime.value if cmd.legal_regime else None
            if regime != client["legal_regime"]:
                changes["legal_regime"] = regime
        residence_touched = fields & {"residence_title", "residence_valid_until", "residence_valid_from"}
        if residence_touched:
            title = cmd.residence_title if "residence_title" in fields else (ResidenceTitle(client["residence_title"]) if client["residence_title"] else None)
            until = cmd.residence_valid_until if "residence_valid_until" in fields else (None if "residence_title" in fields else client["residence_valid_until"])
            if cmd.residence_valid_from and title is not ResidenceTitle.CHANCEN_104C:
                raise Invalid("residence_valid_from", "is only used for a §104c title (aufenthg_104c)")
            until = _check_104c(title, until, cmd.residence_valid_from)
            if until and title is None:
                raise Invalid("residence_valid_until", "needs a residence_title")
            if (title.value if title else None) != client["residence_title"]:
                changes["residence_title"] = title.value if title else None
            if until != client["residence_valid_until"]:
                changes["residence_valid_until"] = until
        if not changes:
            return []
        await repo.update_client(conn, client_id, changes, now)
        if "residence_title" in changes or "residence_valid_until" in changes:
            for d in await repo.open_deadlines(conn, client_id, kinds=RESIDENCE_KINDS):
                await _resolve(conn, deps, d, "residence title changed", acting_org)
            title = ResidenceTitle(changes.get("residence_title", client["residence_title"])) if changes.get("residence_title", client["residence_title"]) else None
            until = changes.get("residence_valid_until", client["residence_valid_until"])
            auto = _residence_deadline(title, until, None)
            if auto:
                kind, last = auto
                await _add_deadline(conn, deps, client_id=client_id, kind=kind, due_at=calendar.end_of_day(last, deps.tz), last_day=last,
                                    responsible_org=client["responsible_org"], acting_org=acting_org)
        event_fields = {k: changes[k] for k in ("preferred_language", "languages", "needs", "residence_title", "residence_valid_until") if k in changes}
        await _enqueue(conn, ClientUpdated(
            client_id=client_id, changed=sorted(changes), updated_by_org=acting_org, updated_at=now, **event_fields,
        ), acting_org, topics.CLIENTS)
    log.info("client updated", extra={"client_id": str(client_id), "changed": sorted(changes)})
    return sorted(changes)


async def hand_over_case(pool: asyncpg.Pool, deps: Deps, client_id: uuid.UUID, cmd: cmds.HandOverCase, acting_org: str) -> dict[str, Any]:
    if not deps.network.has_org(cmd.to_org):
        raise Invalid("to_org", f"unknown organisation {cmd.to_org!r}")
    now = deps.clock.now()
    async with pool.acquire() as conn, conn.transaction():
        client = await repo.get_client(conn, client_id, for_update=True)
        if client is None:
            raise NotFound(f"no client {client_id}")
        _responsible(client, acting_org)
        if cmd.to_org == client["responsible_org"]:
            raise Invalid("to_org", f"{cmd.to_org} is already responsible")
        changes: dict[str, Any] = {"responsible_org": cmd.to_org}
        if cmd.to_regime:
            changes["legal_regime"] = cmd.to_regime.value
        await repo.update_client(conn, client_id, changes, now)
        referral_ids = await repo.move_open_referrals(conn, client_id, acting_org, cmd.to_org, now)
        deadline_ids = await repo.move_open_deadlines(conn, client_id, acting_org, cmd.to_org)
        await _enqueue(conn, CaseHandedOver(
            client_id=client_id, from_org=acting_org, to_org=cmd.to_org,
            from_regime=client["legal_regime"], to_regime=cmd.to_regime, reason=cmd.reason,
            open_referral_ids=referral_ids, open_deadline_ids=deadline_ids, handed_over_at=now,
        ), acting_org, topics.CLIENTS)
    log.info("case handed over", extra={"client_id": str(client_id), "from_org": acting_org, "to_org": cmd.to_org,
                                        "referrals": len(referral_ids), "deadlines": len(deadline_ids)})
    return {"client_id": client_id, "from_org": acting_org, "to_org": cmd.to_org, "open_referral_ids": referral_ids,
            "open_deadline_ids": deadline_ids, "handed_over_at": now}


def personal_data(client: asyncpg.Record, personal: asyncpg.Record, categories: list[DataCategory]) -> PersonalData:
    """The client's personal data, restricted to `categories`; raises Invalid for a category with nothing recorded."""
    full = PersonalData(
        identity=Identity(given_name=personal["given_name"], family_name=personal["family_name"], date_of_birth=personal["date_of_birth"]),
        contact=Contact(email=personal["email"], phone=personal["phone"], preferred_language=client["preferred_language"],
                        languages=list(client["languages"])),
        residence_status=ResidenceStatus(title=client["residence_title"], valid_until=client["residence_valid_until"]),
        needs=list(client["needs"]),
        education_qualifications=personal["education_qualifications"],
        health=personal["health"],
    )
    missing = [c.value for c in categories if getattr(full, c.value) is None]
    if missing:
        raise Invalid("categories", f"nothing is recorded for this client in {', '.join(missing)}")
    return full.restricted_to(set(categories))


# ---------------------------------------------------------------- referrals
@dataclass(frozen=True)
class Route:
    to_org: str
    service: str
    answer_within_working_days: int


def route_referral(deps: Deps, cmd: cmds.SendReferral, acting_org: str) -> Route:
    """Receiver and service of a referral: as given, or from the process plan for the need."""
    net = deps.network
    to_org, service, need = cmd.to_org, cmd.service, cmd.need
    plan = net.plan_for(need) if need else None
    if to_org is None or service is None:
        if need is None:
            raise Invalid("need", "is required when to_org or service is not given")
        if plan is None:
            raise Invalid("to_org" if to_org is None else "service", f"no process plan covers need {need.value!r}; name to_org and service")
        to_org = to_org or plan.organisation
        if service is None:
            if to_org == plan.organisation:
                service = plan.service
            else:
                org = net.organisation(to_org)
                matching = [s.id for s in org.services if need in s.needs] if org else []
                if len(matching) != 1:
                    raise Invalid("service", f"name the service: {to_org} has {len(matching)} services for need {need.value!r}")
                service = matching[0]
    org = net.organisation(to_org)
    if org is None:
        raise Invalid("to_org", f"unknown organisation {to_org!r}")
    svc = org.service(service)
    if svc is None:
        raise Invalid("service", f"{to_org} offers no service {service!r}")
    if need and need not in svc.needs:
        raise Invalid("need", f"service {to_org}/{service} does not cover need {need.value!r}")
    if to_org == acting_org:
        raise Invalid("to_org", "an organisation cannot refer a client to itself")
    days = deps.settings.referral_default_answer_working_days
    if plan and plan.organisation == to_org and plan.service == service:
        days = plan.answer_within_working_days
    return Route(to_org, service, days)


async def send_referral(pool: asyncpg.Pool, deps: Deps, client_id: uuid.UUID, cmd: cmds.SendReferral, acting_org: str) -> dict[str, Any]:
    _member(deps, acting_org)
    route = route_referral(deps, cmd, acting_org)
    categories = list(dict.fromkeys(cmd.categories))
    async with pool.acquire() as conn:
        client = await repo.get_client(conn, client_id)
        if client is None:
            raise NotFound(f"no client {client_id}")
        _responsible(client, acting_org)
        personal_data(client, await repo.get_personal_data(conn, client_id), categories)  # fail early on empty categories
    # Ask before anything is written or sent; no transaction is held while waiting.
    decision = await deps.consent.decide(client_id, route.to_org, Purpose.REFERRAL, categories)
    if not decision.allowed:
        log.info("referral refused for want of consent", extra={"client_id": str(client_id), "to_org": route.to_org,
                                                                 "missing": [c.value for c in decision.missing_categories]})
        raise ConsentRequired(decision, route.to_org, Purpose.REFERRAL, categories)
    now = deps.clock.now()
    referral_id, request_id = uuid.uuid4(), uuid.uuid4()
    answer_due = calendar.add_working_days(calendar.local_date(now, deps.tz), route.answer_within_working_days)
    async with pool.acquire() as conn, conn.transaction():
        client = await repo.get_client(conn, client_id, for_update=True)
        if client is None:
            raise NotFound(f"no client {client_id}")
        _responsible(client, acting_org)  # the case may have moved while we asked
        data = personal_data(client, await repo.get_personal_data(conn, client_id), categories)
        deadline_id = uuid.uuid4()
        await repo.insert_referral(conn, {
            "referral_id": referral_id, "client_id": client_id, "from_org": acting_org, "to_org": route.to_org,
            "service": route.service, "need": cmd.need.value if cmd.need else None, "requested_categories": [c.value for c in categories],
            "consent_id": decision.consent_id, "disclosure_request_id": request_id, "answer_due": answer_due,
            "answer_deadline_id": None, "sent_at": now,
        }, {"reason": cmd.reason, "free_text": cmd.free_text})
        await _enqueue(conn, ReferralSent(
            client_id=client_id, referral_id=referral_id, from_org=acting_org, to_org=route.to_org, service=route.service,
            need=cmd.need, requested_categories=categories, answer_due=answer_due, sent_at=now,
        ), acting_org, topics.REFERRALS)
        await _enqueue(conn, DisclosureRequested(
            client_id=client_id, request_id=request_id, referral_id=referral_id, from_org=acting_org, to_org=route.to_org,
            purpose=Purpose.REFERRAL, service=route.service, need=cmd.need, categories=categories, reason=cmd.reason,
            free_text=cmd.free_text, answer_due=answer_due, personal_data=data, requested_at=now,
        ), acting_org, topics.DISCLOSURE_REQUESTS)
        deadline_id = await _add_deadline(
            conn, deps, client_id=client_id, kind=DeadlineKind.REFERRAL_ANSWER_DUE, due_at=calendar.end_of_day(answer_due, deps.tz),
            last_day=answer_due, responsible_org=route.to_org, acting_org=acting_org, referral_id=referral_id,
        )
        await conn.execute("UPDATE referrals SET answer_deadline_id = $2 WHERE referral_id = $1", referral_id, deadline_id)
        row = await repo.get_referral(conn, referral_id)
    log.info("referral sent", extra={"client_id": str(client_id), "referral_id": str(referral_id), "to_org": route.to_org, "service": route.service})
    return referral_view(row)


@dataclass(frozen=True)
class Answer:
    action: Action
    at: datetime
    appointment_at: datetime | None = None
    decline_reason: Any = None
    decline_text: str | None = None
    outcome: str | None = None
    revoke_reason: str | None = None


async def apply_referral_action(conn: asyncpg.Connection, deps: Deps, ref: asyncpg.Record, answer: Answer, acting_org: str) -> asyncpg.Record:
    """Moves a (locked) referral on, writes its event and settles its deadlines. Raises NotAllowed / IllegalTransition."""
    check_actor(answer.action, acting_org, ref["from_org"], ref["to_org"])
    status = next_status(ref["status"], answer.action)
    now = deps.clock.now()
    rid, cid, from_org, to_org = ref["referral_id"], ref["client_id"], ref["from_org"], ref["to_org"]
    changes: dict[str, Any] = {"status": status.value}
    if answer.action is Action.ACCEPT:
        changes.update(accepted_at=answer.at, appointment_at=answer.appointment_at)
        event: EventData = ReferralAccepted(client_id=cid, referral_id=rid, to_org=to_org, from_org=from_org, accepted_at=answer.at,
                                            appointment_at=answer.appointment_at)
    elif answer.action is Action.DECLINE:
        changes.update(declined_at=answer.at, decline_reason=answer.decline_reason.value, decline_text=answer.decline_text)
        event = ReferralDeclined(client_id=cid, referral_id=rid, to_org=to_org, from_org=from_org, reason=answer.decline_reason,
                                 reason_text=answer.decline_text, declined_at=answer.at)
    elif answer.action is Action.COMPLETE:
        changes.update(completed_at=answer.at, outcome=answer.outcome)
        event = ReferralCompleted(client_id=cid, referral_id=rid, to_org=to_org, from_org=from_org, completed_at=answer.at, outcome=answer.outcome)
    elif answer.action is Action.REVOKE:
        changes.update(revoked_at=answer.at, revoke_reason=answer.revoke_reason)
        event = ReferralRevoked(client_id=cid, referral_id=rid, from_org=from_org, to_org=to_org, reason=answer.revoke_reason, revoked_at=answer.at)
    else:
        raise ValueError(f"not an answer: {answer.action}")
    await repo.update_referral(conn, rid, changes, now)
    await _enqueue(conn, event, acting_org, topics.REFERRALS)
    await _settle_referral_deadlines(conn, deps, ref, status, acting_org)
    if answer.action is Action.ACCEPT and answer.appointment_at and answer.appointment_at > now:
        client = await repo.get_client(conn, cid)
        await _add_deadline(conn, deps, client_id=cid, kind=DeadlineKind.APPOINTMENT, due_at=answer.appointment_at, last_day=None,
                            responsible_org=client["responsible_org"], acting_org=acting_org, referral_id=rid)
    log.info("referral " + status.value, extra={"client_id": str(cid), "referral_id": str(rid), "acting_org": acting_org})
    return await repo.get_referral(conn, rid)


async def _settle_referral_deadlines(conn: asyncpg.Connection, deps: Deps, ref: asyncpg.Record, status: ReferralStatus, acting_org: str | None) -> None:
    """An answer resolves the answer deadline; a closed referral resolves every deadline attached to it."""
    for d in await repo.open_deadlines(conn, ref["client_id"], referral_id=ref["referral_id"]):
        if status in OPEN and d["kind"] != DeadlineKind.REFERRAL_ANSWER_DUE.value:
            continue
        await _resolve(conn, deps, d, f"referral {status.value}", acting_org)


async def act_on_referral(pool: asyncpg.Pool, deps: Deps, referral_id: uuid.UUID, action: Action, cmd: cmds.Command, acting_org: str) -> dict[str, Any]:
    now = deps.clock.now()
    answer = Answer(
        action, now,
        appointment_at=getattr(cmd, "appointment_at", None),
        decline_reason=getattr(cmd, "reason", None) if action is Action.DECLINE else None,
        decline_text=getattr(cmd, "reason_text", None),
        outcome=getattr(cmd, "outcome", None),
        revoke_reason=getattr(cmd, "reason", None) if action is Action.REVOKE else None,
    )
    async with pool.acquire() as conn, conn.transaction():
        ref = await repo.get_referral(conn, referral_id, for_update=True)
        if ref is None:
            raise NotFound(f"no referral {referral_id}")
        try:
            row = await apply_referral_action(conn, deps, ref, answer, acting_org)
        except NotAllowed as exc:
            raise Forbidden(str(exc)) from exc
        except IllegalTransition as exc:
            raise Conflict(str(exc)) from exc
    return referral_view(row)


# ---------------------------------------------------------------- consumed events
_PARTNER_ACTIONS = {
    "lotse.referral.accepted": Action.ACCEPT,
    "lotse.referral.declined": Action.DECLINE,
    "lotse.referral.completed": Action.COMPLETE,
}


def make_partner_answer_handler(deps: Deps):  # noqa: ANN201 - a kit Handler
    async def record_partner_answer(conn: asyncpg.Connection, env: Envelope[ReferralAnswer]) -> None:
        """A partner system answered a referral on its own outbox topic."""
        action = _PARTNER_ACTIONS[env.type]
        partner = env.source_partner
        data = env.data
        if partner is None:
            raise Rejected(f"answers on partner topics must come from /partners/<org>, not {env.source}")
        # ce_source is self-declared: it must name the owner of the outbox the answer arrived on.
        topic = current_delivery().topic
        owner = topics.partner_of(topic.removeprefix(deps.settings.topic_namespace)) if topic else None
        if owner != partner:
            raise Rejected(f"an answer from /partners/{partner} arrived on {topic}, not on {topics.partner_outbox(partner)}")
        if data.to_org != partner:
            raise Rejected(f"{partner} cannot answer in the name of {data.to_org}")
        ref = await repo.get_referral(conn, data.referral_id, for_update=True)
        if ref is None:
            raise Rejected(f"unknown referral {data.referral_id}")
        if ref["client_id"] != data.client_id:
            raise Rejected(f"referral {data.referral_id} is not about client {data.client_id}")
        if ref["to_org"] != partner:
            raise Rejected(f"only the receiving organisation {ref['to_org']} may {action.value} referral {data.referral_id}, not {partner}")
        if isinstance(data, ReferralAccepted):
            answer = Answer(action, data.accepted_at, appointment_at=data.appointment_at)
        elif isinstance(data, ReferralDeclined):
            answer = Answer(action, data.declined_at, decline_reason=data.reason, decline_text=data.reason_text)
        else:
            answer = Answer(action, data.completed_at, outcome=data.outcome)  # type: ignore[attr-defined]
        try:
            await apply_referral_action(conn, deps, ref, answer, partner)
        except (NotAllowed, IllegalTransition) as exc:
            raise Rejected(str(exc)) from exc

    return record_partner_answer


def make_disclosure_handlers(deps: Deps) -> dict[str, Any]:
    async def _referral(conn: asyncpg.Connection, env: Envelope[Any]) -> asyncpg.Record | None:
        if env.source != CONSENT_SOURCE:
            raise Rejected(f"disclosure outcomes come from {CONSENT_SOURCE}, not {env.source}")
        if env.data.referral_id is None:
            return None  # not about one of our referrals (e.g. a contact disclosure)
        ref = await repo.get_referral(conn, env.data.referral_id, for_update=True)
        if ref is not None and ref["to_org"] != env.data.recipient:
            raise Rejected(f"referral {ref['referral_id']} goes to {ref['to_org']}, not {env.data.recipient}")
        return ref

    async def record_disclosure_blocked(conn: asyncpg.Connection, env: Envelope[DisclosureBlocked]) -> None:
        ref = await _referral(conn, env)
        if ref is None or ReferralStatus(ref["status"]) not in OPEN:
            return
        await repo.update_referral(conn, ref["referral_id"], {
            "status": ReferralStatus.BLOCKED.value, "blocked_at": env.data.blocked_at, "blocked_reason": env.data.reason[:500],
        }, deps.clock.now())
        await _settle_referral_deadlines(conn, deps, ref, ReferralStatus.BLOCKED, None)
        log.warning("referral blocked by the consent gate", extra={"client_id": str(ref["client_id"]), "referral_id": str(ref["referral_id"]),
                                                                    "missing": [c.value for c in env.data.missing_categories]})

    async def record_disclosure_made(conn: asyncpg.Connection, env: Envelope[DisclosureMade]) -> None:
        ref = await _referral(conn, env)
        if ref is None:
            return
        await repo.update_referral(conn, ref["referral_id"], {"disclosed_at": env.data.disclosed_at, "consent_id": env.data.consent_id},
                                   deps.clock.now())

    return {"lotse.disclosure.blocked": record_disclosure_blocked, "lotse.disclosure.made": record_disclosure_made}


# ---------------------------------------------------------------- deadlines
async def register_deadline(pool: asyncpg.Pool, deps: Deps, client_id: uuid.UUID, cmd: cmds.RegisterDeadline, acting_org: str) -> dict[str, Any]:
    now = deps.clock.now()
    today = calendar.local_date(now, deps.tz)
    async with pool.acquire() as conn, conn.transaction():
        client = await repo.get_client(conn, client_id, for_update=True)
        if client is None:
            raise NotFound(f"no client {client_id}")
        _responsible(client, acting_org)
        responsible = client["responsible_org"]
        if cmd.kind is DeadlineKind.CHANCEN_AUFENTHALT_END:
            last_day, field = deadlines.chancen_aufenthalt_last_day(cmd.valid_from), "valid_from"
            due_at = calendar.end_of_day(last_day, deps.tz)
        elif cmd.kind is DeadlineKind.APPOINTMENT:
            last_day, field, due_at = None, "due_at", cmd.due_at
        else:
            last_day, field = cmd.due_date, "due_date"
            due_at = calendar.end_of_day(last_day, deps.tz)
        if (last_day and last_day < today) or due_at <= now:
            raise Invalid(field, "the deadline lies in the past")
        if cmd.referral_id is not None:
            ref = await repo.get_referral(conn, cmd.referral_id)
            if ref is None or ref["client_id"] != client_id:
                raise Invalid("referral_id", f"no referral {cmd.referral_id} for this client")
            if cmd.kind is DeadlineKind.REFERRAL_ANSWER_DUE:
                responsible = ref["to_org"]
        deadline_id = await _add_deadline(conn, deps, client_id=client_id, kind=cmd.kind, due_at=due_at, last_day=last_day,
                                          responsible_org=responsible, acting_org=acting_org, referral_id=cmd.referral_id,
                                          lead_times=cmd.lead_times_days)
        row = await repo.get_deadline(conn, deadline_id)
    return deadline_view(row)


async def resolve_deadline(pool: asyncpg.Pool, deps: Deps, deadline_id: uuid.UUID, cmd: cmds.ResolveDeadline, acting_org: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        d = await repo.get_deadline(conn, deadline_id, for_update=True)
        if d is None:
            raise NotFound(f"no deadline {deadline_id}")
        client = await repo.get_client(conn, d["client_id"])
        if acting_org not in (d["responsible_org"], client["responsible_org"]):
            raise Forbidden(f"only {d['responsible_org']} or the responsible organisation may resolve this deadline")
        if d["status"] != "open":
            raise Conflict(f"deadline {deadline_id} is already {d['status']}")
        await _resolve(conn, deps, d, cmd.resolution, acting_org)
        row = await repo.get_deadline(conn, deadline_id)
    log.info("deadline resolved", extra={"client_id": str(row["client_id"]), "deadline_id": str(deadline_id)})
    return deadline_view(row)


async def emit_due_deadline_notices(pool: asyncpg.Pool, deps: Deps) -> int:
    """One scheduler pass over a batch: emits approaching/missed notices that are due. Returns the deadlines looked at.

    Safe with several replicas: rows are claimed with FOR UPDATE SKIP LOCKED, and each notice is a row
    (primary key deadline_id + notice) written in the same transaction as its outbox row, so a notice is
    emitted exactly once, across restarts too.
    """
    now = deps.clock.now()
    emitted = 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await repo.claim_due_deadlines(conn, now, deps.settings.deadline_batch_size)
        for row in rows:
            done = await repo.recorded_notices(conn, row["deadline_id"])
            plan = deadlines.plan_notices(row["due_at"], list(row["lead_times_days"]), now, done)
            missed_at = None
            for n in plan.notices:
                event_id = uuid.uuid4() if n.emit else None
                if not await repo.record_notice(conn, row["deadline_id"], n.key, n.emit, event_id, now) or not n.emit:
                    continue
                if n.key == deadlines.MISSED:
                    missed_at = now
                    data: EventData = DeadlineMissed(**_deadline_data(row), missed_at=now)
                else:
                    data = DeadlineApproaching(**_deadline_data(row), lead_time_days=n.lead_time_days,
                                               days_left=deadlines.days_left(row["due_at"], now))
                await _enqueue(conn, data, row["responsible_org"], topics.DEADLINES, event_id=event_id)
                emitted += 1
                log.info("deadline notice emitted", extra={"client_id": str(row["client_id"]), "deadline_id": str(row["deadline_id"]), "notice": n.key})
            await repo.set_next_check(conn, row["deadline_id"], plan.next_check_at, missed_at)
    return len(rows)


# ---------------------------------------------------------------- queries
def referral_view(row: asyncpg.Record, notes: asyncpg.Record | None = None) -> dict[str, Any]:
    out = {k: row[k] for k in (
        "referral_id", "client_id", "from_org", "to_org", "service", "need", "requested_categories", "status", "consent_id",
        "answer_due", "answer_deadline_id", "sent_at", "updated_at", "accepted_at", "appointment_at", "declined_at",
        "decline_reason", "completed_at", "revoked_at", "blocked_at", "blocked_reason", "disclosed_at",
    )}
    if notes is not None:
        out.update({k: notes[k] for k in ("reason", "free_text", "decline_text", "outcome", "revoke_reason")})
    return out


def deadline_view(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in (
        "deadline_id", "client_id", "kind", "due_at", "last_day", "responsible_org", "referral_id", "legal_note", "lead_times_days",
        "status", "registered_at", "missed_at", "resolved_at", "resolution",
    )}


async def get_client(pool: asyncpg.Pool, deps: Deps, client_id: uuid.UUID, acting_org: str) -> dict[str, Any]:
    async with pool.acquire() as conn:
        client = await repo.get_client(conn, client_id)
        if client is None:
            raise NotFound(f"no client {client_id}")
        _responsible(client, acting_org)
        p = await repo.get_personal_data(conn, client_id)
        refs = await repo.referrals_of_client(conn, client_id)
        dls = await repo.deadlines_of_client(conn, client_id)
    out = {k: client[k] for k in ("client_id", "registering_org", "responsible_org", "preferred_language", "languages", "needs",
                                  "residence_title", "residence_valid_until", "legal_regime", "registered_at", "updated_at")}
    out.update({k: p[k] for k in ("given_name", "family_name", "date_of_birth", "email", "phone", "education_qualifications", "health")})
    out["referrals"] = [referral_view(r) for r in refs]
    out["deadlines"] = [deadline_view(d) for d in dls]
    return out


async def get_contact(pool: asyncpg.Pool, deps: Deps, client_id: uuid.UUID, acting_org: str) -> dict[str, Any]:
    """Contact data for the notifications service, only where the client consented to it for that organisation."""
    _member(deps, acting_org)
    async with pool.acquire() as conn:
        client = await repo.get_client(conn, client_id)
        if client is None:
            raise NotFound(f"no client {client_id}")
    categories = [DataCategory.CONTACT]
    decision = await deps.consent.decide(client_id, acting_org, Purpose.CONTACT_FOR_NOTIFICATIONS, categories)
    if not decision.allowed:
        raise ConsentRequired(decision, acting_org, Purpose.CONTACT_FOR_NOTIFICATIONS, categories)
    async with pool.acquire() as conn:
        p = await repo.get_personal_data(conn, client_id)
        client = await repo.get_client(conn, client_id)
    if p is None or client is None:
        raise NotFound(f"no client {client_id}")
    return {"client_id": client_id, "preferred_language": client["preferred_language"], "languages": list(client["languages"]),
            "email": p["email"], "phone": p["phone"]}


async def get_referral(pool: asyncpg.Pool, deps: Deps, referral_id: uuid.UUID, acting_org: str) -> dict[str, Any]:
    async with pool.acquire() as conn:
        ref = await repo.get_referral(conn, referral_id)
        if ref is None:
            raise NotFound(f"no referral {referral_id}")
        if acting_org not in (ref["from_org"], ref["to_org"]):
            raise Forbidden(f"{acting_org} is neither sender nor receiver of this referral")
        # The notes may describe the client: the sender sees them; the receiver gets them only through the consent gate.
        notes = await conn.fetchrow("SELECT * FROM referral_notes WHERE referral_id = $1", referral_id) if acting_org == ref["from_org"] else None
    return referral_view(ref, notes)


async def list_referrals(pool: asyncpg.Pool, deps: Deps, *, org: str, view: str, status: str | None, acting_org: str, limit: int = 200) -> list[dict[str, Any]]:
    if org != acting_org:
        raise Forbidden(f"{acting_org} cannot read the worklist of {org}")
    today = calendar.local_date(deps.clock.now(), deps.tz)
    async with pool.acquire() as conn:
        rows = await repo.list_referrals(conn, org=org, view=view, status=status, today=today, limit=limit)
    return [referral_view(r) | {"overdue": r["status"] == "sent" and r["answer_due"] is not None and r["answer_due"] < today} for r in rows]
