"""Read-only queries: what intake's HTTP GETs show, and how a referral or deadline reads in any answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from contracts.events import ReferralNotes, SealedContent
from contracts.vocab import DataCategory, Purpose
from lotse_kit import access, calendar
from lotse_kit.errors import DomainError, Unavailable

from .adapters import metrics
from .adapters import repository as repo
from .adapters.consent import Question
from .adapters.vault import DataUnavailable
from .domain.clients import PERSONAL_FIELDS, RECEIVER_SEES, check_responsible, full_personal_data, restrict_case
from .domain.errors import ClientErased, ConsentRequired, DoNotContact, Forbidden, NotFound

if TYPE_CHECKING:
    from .domain.commands import ContactItem, DisclosureItem
    from .handlers.deps import Deps

_REFERRAL_FIELDS = (
    "referral_id",
    "client_id",
    "from_org",
    "to_org",
    "service",
    "need",
    "requested_categories",
    "status",
    "consent_id",
    "answer_due",
    "answer_deadline_id",
    "sent_at",
    "updated_at",
    "accepted_at",
    "appointment_at",
    "declined_at",
    "decline_reason",
    "completed_at",
    "revoked_at",
    "blocked_at",
    "blocked_reason",
    "disclosed_at",
)
_NOTE_FIELDS = ("reason", "free_text", "decline_text", "outcome", "revoke_reason")
_DEADLINE_FIELDS = (
    "deadline_id",
    "client_id",
    "kind",
    "due_at",
    "last_day",
    "responsible_org",
    "referral_id",
    "legal_note",
    "lead_times_days",
    "status",
    "registered_at",
    "missed_at",
    "resolved_at",
    "resolution",
)
_CASE_FIELDS = (
    "client_id",
    "registering_org",
    "responsible_org",
    "preferred_language",
    "languages",
    "needs",
    "residence_title",
    "residence_valid_until",
    "legal_regime",
    "registered_at",
    "updated_at",
    "do_not_contact",
)


def referral_view(row: Mapping[str, Any], notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out = {k: row[k] for k in _REFERRAL_FIELDS}
    if notes is not None:
        out.update({k: notes[k] for k in _NOTE_FIELDS})
    return out


def deadline_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in _DEADLINE_FIELDS}


async def view_of(conn: asyncpg.Connection, client: Mapping[str, Any], org: str) -> access.ClientView:
    """How much of the case `org` sees (the kit's scope rule, from intake's facts)."""
    referred = org not in (client["registering_org"], client["responsible_org"]) and await repo.referred_to(
        conn, client["client_id"], org, RECEIVER_SEES
    )
    return access.client_view(
        org, registering_org=client["registering_org"], responsible_org=client["responsible_org"], referred_to=referred
    )


async def visible_client(
    conn: asyncpg.Connection, client_id: uuid.UUID, org: str, *, for_update: bool = False, erased_ok: bool = False
) -> asyncpg.Record:
    """The client's case row if `org` may see the client at all; otherwise it does not exist for `org` (404).
    An erased client is 410 for those who see it (unless `erased_ok`: the erasure itself, repeated)."""
    return await check_visible(conn, await repo.get_client(conn, client_id, for_update=for_update), client_id, org, erased_ok=erased_ok)


async def check_visible(
    conn: asyncpg.Connection, client: asyncpg.Record | None, client_id: uuid.UUID, org: str, *, erased_ok: bool = False
) -> asyncpg.Record:
    """`visible_client` for a case row the caller has read already (None: there is none)."""
    if client is None or await view_of(conn, client, org) is access.ClientView.NONE:
        raise NotFound(f"no client {client_id}")
    if client["erased_at"] is not None and not erased_ok:
        raise ClientErased(client_id, client["erased_at"])
    return client


async def case_for(
    conn: asyncpg.Connection, client_id: uuid.UUID, acting_org: str, *, for_update: bool = False, erased_ok: bool = False
) -> asyncpg.Record:
    """The client's case row, for the organisation responsible for it: 404 if the client is not
    visible to the organisation, 403 if it is but the organisation is not responsible, 410 if erased."""
    client = await visible_client(conn, client_id, acting_org, for_update=for_update, erased_ok=erased_ok)
    check_responsible(client, acting_org)
    return client


async def sealed_case_for(conn: asyncpg.Connection, client_id: uuid.UUID, acting_org: str, *, for_update: bool = False) -> asyncpg.Record:
    """`case_for`, with the sealed personal data and the wrapped data key in the same row (`repo.get_client_sealed`):
    one round trip where a use case needs both."""
    client = await check_visible(conn, await repo.get_client_sealed(conn, client_id, for_update=for_update), client_id, acting_org)
    check_responsible(client, acting_org)
    return client


async def get_client(deps: Deps, client_id: uuid.UUID, acting_org: str) -> dict[str, Any]:
    """The case with personal data, referrals and deadlines: all of it for the registering and the
    responsible organisation; for an organisation the client was referred to, only the categories a
    valid consent for referrals allows (asked of the consent service, fail closed) and only its own
    referrals and deadlines. 410 once the client was erased."""
    async with deps.db.pool.acquire() as conn:
        client = await visible_client(conn, client_id, acting_org)
        view = await view_of(conn, client, acting_org)
        p = await deps.vault.personal(conn, client_id) or dict.fromkeys(PERSONAL_FIELDS)
        refs = await repo.referrals_of_client(conn, client_id)
        dls = await repo.deadlines_of_client(conn, client_id)
    case = {k: client[k] for k in _CASE_FIELDS} | {k: p[k] for k in PERSONAL_FIELDS}
    if view is access.ClientView.ALL:
        out = case | {"view": view.value}
    else:
        asked = list(DataCategory)
        decision = await deps.consent.decide(client_id, acting_org, Purpose.REFERRAL, asked)
        # The consent that covers most names what it lacks; what it covers may be shown.
        allowed = [c for c in asked if c not in decision.missing_categories]
        out = restrict_case(case, set(allowed)) | {"view": view.value, "categories": [c.value for c in allowed]}
        refs = [r for r in refs if acting_org in (r["from_org"], r["to_org"])]
        dls = [d for d in dls if d["responsible_org"] == acting_org]
    out["referrals"] = [referral_view(r) for r in refs]
    out["deadlines"] = [deadline_view(d) for d in dls]
    return out


async def get_contact(deps: Deps, client_id: uuid.UUID, acting_org: str) -> dict[str, Any]:
    """Contact data for the notifications service, only where the client consented to it for that organisation
    and did not ask not to be contacted (409 `do-not-contact`); 410 once the client was erased."""
    deps.require_member(acting_org)
    async with deps.db.pool.acquire() as conn:
        client = await repo.get_client(conn, client_id)
    refused = _contact_refusal(client, client_id)
    if refused is not None:
        raise refused
    categories = [DataCategory.CONTACT]
    decision = await deps.consent.decide(client_id, acting_org, Purpose.CONTACT_FOR_NOTIFICATIONS, categories)
    if not decision.allowed:
        raise ConsentRequired(acting_org, Purpose.CONTACT_FOR_NOTIFICATIONS, categories, decision.missing_categories, decision.reason)
    async with deps.db.pool.acquire() as conn:
        client = await repo.get_client(conn, client_id)
        p = await deps.vault.personal(conn, client_id)
    if p is None or client is None:
        raise NotFound(f"no client {client_id}")
    refused = _contact_refusal(client, client_id)  # erased or do-not-contact while the consent service was asked
    if refused is not None:
        raise refused
    return _contact(client_id, client, p)


def _contact(client_id: uuid.UUID, client: Mapping[str, Any], p: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "client_id": str(client_id),
        "preferred_language": client["preferred_language"],
        "languages": list(client["languages"]),
        "email": p["email"],
        "phone": p["phone"],
    }


async def get_contacts(deps: Deps, items: Sequence[ContactItem]) -> list[dict[str, Any]]:
    """`get_contact` for many lookups at once (the notifications service's batch), in order: per item
    {"status": 200, "contact": <the single route's body>} or {"status": <its status>, "problem": <its problem body>}
    (not-a-member 403, not-found 404, do-not-contact 409, consent-required 409, client-erased 410). The same checks in
    the same order as the single route, with one consent decision request for the whole list and two queries
    whatever its length. The consent service unavailable fails the whole list (503), as it fails the single route."""
    out: list[dict[str, Any] | None] = [None] * len(items)
    async with deps.db.pool.acquire() as conn:
        before = await repo.clients(conn, [i.client_id for i in items])
    ask: list[int] = []
    for n, item in enumerate(items):
        if not deps.directory.has(item.on_behalf_of):
            out[n] = _problem(access.NotAMember(f"{item.on_behalf_of} is not a member of this network."))
            continue
        refused = _contact_refusal(before.get(item.client_id), item.client_id)
        if refused is not None:
            out[n] = _problem(refused)
        else:
            ask.append(n)
    if ask:
        categories = (DataCategory.CONTACT,)
        questions = list(
            dict.fromkeys(Question(items[n].client_id, items[n].on_behalf_of, Purpose.CONTACT_FOR_NOTIFICATIONS, categories) for n in ask)
        )
        decisions = dict(zip(questions, await deps.consent.decide_many(questions), strict=True))
        allowed = []
        for n in ask:
            decision = decisions[Question(items[n].client_id, items[n].on_behalf_of, Purpose.CONTACT_FOR_NOTIFICATIONS, categories)]
            if decision.allowed:
                allowed.append(n)
            else:
                out[n] = _problem(
                    ConsentRequired(
                        items[n].on_behalf_of, Purpose.CONTACT_FOR_NOTIFICATIONS, categories, decision.missing_categories, decision.reason
                    )
                )
        if allowed:
            async with deps.db.pool.acquire() as conn:
                after = await repo.clients_sealed(conn, [items[n].client_id for n in allowed])
            for n in allowed:
                out[n] = _contact_after_consent(deps, after.get(items[n].client_id), items[n].client_id)
    return [o if o is not None else _problem(Unavailable("no answer")) for o in out]


def _contact_refusal(client: Mapping[str, Any] | None, client_id: uuid.UUID) -> DomainError | None:
    """What `get_contact` refuses before and after asking for consent (erased: checked before do-not-contact)."""
    if client is None:
        return NotFound(f"no client {client_id}")
    if client["erased_at"] is not None:
        return ClientErased(client_id, client["erased_at"])
    if client["do_not_contact"]:
        return DoNotContact(client_id)
    return None


def _contact_after_consent(deps: Deps, client: Mapping[str, Any] | None, client_id: uuid.UUID) -> dict[str, Any]:
    """The second half of `get_contact` from a row of `repo.clients_sealed` read after the consent decision."""
    if client is None or not client["has_personal"]:  # the single route's order: no personal data first
        return _problem(NotFound(f"no client {client_id}"))
    refused = _contact_refusal(client, client_id)  # erased or do-not-contact while the consent service was asked
    if refused is not None:
        return _problem(refused)
    try:
        p = deps.vault.personal_of(client)
    except DataUnavailable:
        # Where the single route fails as a whole (its data does not open), this item fails alone; nothing is named.
        return _problem(Unavailable("the client's contact data is unavailable"))
    if p is None:
        return _problem(NotFound(f"no client {client_id}"))
    return {"status": 200, "contact": _contact(client_id, client, p)}


def _problem(exc: DomainError) -> dict[str, Any]:
    """A batch item's answer: the status and the problem body the single route would answer with (without `instance`)."""
    body: dict[str, Any] = {"type": exc.instance_type, "title": exc.instance_title, "status": exc.status}
    if exc.detail:
        body["detail"] = exc.detail
    body.update(exc.extensions)
    return {"status": exc.status, "problem": body}


async def get_disclosure(deps: Deps, client_id: uuid.UUID, categories: list[DataCategory], referral_id: uuid.UUID | None) -> dict[str, Any]:
    """For the consent gate only (internal API): the client's personal data of exactly `categories`, the
    referral's notes (when `referral_id` names a referral of this client) and the do-not-contact flag, as
    `contracts.events.SealedContent`. The gate has checked the consent; intake hands out nothing more
    than it was asked for. 404 for an unknown client or a referral of another client, 410 once erased."""
    async with deps.db.pool.acquire() as conn:
        client = await repo.get_client(conn, client_id)
        if client is None:
            metrics.disclosure_fetches.labels("not_found").inc()
            raise NotFound(f"no client {client_id}")
        if client["erased_at"] is not None:
            metrics.disclosure_fetches.labels("erased").inc()
            raise ClientErased(client_id, client["erased_at"])
        notes = None
        if referral_id is not None:
            ref = await repo.get_referral(conn, referral_id)
            if ref is None or ref["client_id"] != client_id:
                metrics.disclosure_fetches.labels("not_found").inc()
                raise NotFound(f"no referral {referral_id} of client {client_id}")
            notes = await deps.vault.notes(conn, client_id, referral_id)
        personal = await deps.vault.personal(conn, client_id)
    if personal is None:
        raise NotFound(f"no client {client_id}")
    metrics.disclosure_fetches.labels("served").inc()
    return _sealed_content(client, personal, notes, categories)


async def get_disclosures(deps: Deps, items: Sequence[DisclosureItem]) -> list[dict[str, Any]]:
    """`get_disclosure` for many requests at once (the consent gate's batch), in two queries whatever their number.
    Per item, in order: {"status": "ok", "content": SealedContent}, {"status": "erased"} (the single endpoint's 410),
    {"status": "not-found"} (its 404: an unknown client, or a referral of another client) or {"status": "unavailable"}
    (the client's data does not open, where the single endpoint fails as a whole)."""
    async with deps.db.pool.acquire() as conn:
        clients = await repo.clients_sealed(conn, [i.client_id for i in items])
        wanted = [i.referral_id for i in items if i.referral_id is not None and i.client_id in clients]
        referrals = await repo.referrals_with_sealed_notes(conn, wanted) if wanted else {}
    out: list[dict[str, Any]] = []
    for item in items:
        client = clients.get(item.client_id)
        status = "ok"
        if client is None:
            status = "not-found"
        elif client["erased_at"] is not None:
            status = "erased"
        elif item.referral_id is not None and (
            item.referral_id not in referrals or referrals[item.referral_id]["client_id"] != item.client_id
        ):
            status = "not-found"
        if status != "ok":
            metrics.disclosure_fetches.labels("not_found" if status == "not-found" else status).inc()
            out.append({"status": status})
            continue
        assert client is not None
        try:
            notes = deps.vault.notes_of(client, item.referral_id, referrals[item.referral_id]) if item.referral_id is not None else None
            personal = deps.vault.personal_of(client)
        except DataUnavailable:
            # What the single route fails on (its data does not open) fails this item only; no value is named.
            metrics.disclosure_fetches.labels("unavailable").inc()
            out.append({"status": "unavailable"})
            continue
        if personal is None:
            metrics.disclosure_fetches.labels("not_found").inc()
            out.append({"status": "not-found"})
            continue
        metrics.disclosure_fetches.labels("served").inc()
        out.append({"status": "ok", "content": _sealed_content(client, personal, notes, item.categories)})
    return out


def _sealed_content(
    client: Mapping[str, Any], personal: Mapping[str, Any], notes: Mapping[str, Any] | None, categories: Iterable[DataCategory]
) -> dict[str, Any]:
    content = SealedContent(
        personal_data=full_personal_data(client, personal).restricted_to(set(categories)),
        notes=ReferralNotes(reason=notes["reason"], free_text=notes["free_text"]) if notes is not None else None,
        do_not_contact=client["do_not_contact"],
    )
    return content.model_dump(mode="json")


async def get_referral(deps: Deps, referral_id: uuid.UUID, acting_org: str) -> dict[str, Any]:
    async with deps.db.pool.acquire() as conn:
        ref = await repo.get_referral(conn, referral_id)
        if ref is None:
            raise NotFound(f"no referral {referral_id}")
        if acting_org not in (ref["from_org"], ref["to_org"]):
            raise NotFound(f"no referral {referral_id}")  # another organisation's referral does not exist for this one
        # The notes may describe the client: the sender sees them; the receiver gets them only through the consent gate.
        # After the client's erasure they are gone (null), the referral's pseudonymous record stays.
        notes = None
        if acting_org == ref["from_org"]:
            notes = await deps.vault.notes(conn, ref["client_id"], referral_id) or dict.fromkeys(_NOTE_FIELDS)
    return referral_view(ref, notes)


async def list_referrals(deps: Deps, *, org: str, view: str, status: str | None, acting_org: str, limit: int = 200) -> list[dict[str, Any]]:
    """An organisation's worklist: sent, received, overdue (answer due before today and still unanswered) or all."""
    if org != acting_org:
        raise Forbidden(f"{acting_org} cannot read the worklist of {org}")
    today = calendar.local_date(deps.clock.now(), deps.tz)
    async with deps.db.pool.acquire() as conn:
        rows = await repo.list_referrals(conn, org=org, view=view, status=status, today=today, limit=limit)
    return [referral_view(r) | {"overdue": r["status"] == "sent" and r["answer_due"] is not None and r["answer_due"] < today} for r in rows]


def network(deps: Deps) -> dict[str, Any]:
    """The network configuration in force: organisations, services, process plans."""
    return deps.directory.network.model_dump(mode="json")
