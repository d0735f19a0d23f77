"""Read-only queries: what the HTTP GETs show (consents, receipts, decisions, keys, disclosure records)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from contracts.vocab import DataCategory, Purpose
from lotse_kit import access

from .adapters import metrics
from .adapters import repository as repo
from .adapters.decision_reader import Query
from .adapters.repository import ClientSnapshot
from .domain.acknowledgements import AckDue
from .domain.errors import ConsentNotFound, OtherOrganisation
from .domain.keys import OrgKey
from .domain.model import Consent, ConsentStatus, Decision, decide
from .domain.receipts import RECEIPT_SCHEMA, receipt_language, receipt_record
from .handlers.deps import Deps
from .handlers.sealing import org_keys

T = TypeVar("T")


async def get_consent(deps: Deps, consent_id: UUID, org: str) -> Consent:
    """A consent record, for the collecting organisation and the client's responsible organisations;
    for any other it does not exist (404, exactly as for an unknown id)."""
    async with deps.db.pool.acquire() as conn:
        consent = await repo.get_consent(conn, consent_id)
        if consent is not None and org != consent.collecting_org:
            responsible = await repo.responsible_orgs(conn, consent.client_id)
            if not access.sees_consent(org, collecting_org=consent.collecting_org, responsible_orgs=responsible):
                consent = None
    if consent is None:
        raise ConsentNotFound(f"no consent {consent_id}")
    return consent


async def list_client_consents(deps: Deps, client_id: UUID, org: str) -> list[Consent]:
    """The client's consents that `org` may see, newest first, with the organisations that received data under each."""
    async with deps.db.pool.acquire() as conn:
        responsible = await repo.responsible_orgs(conn, client_id)
        consents = await repo.client_consents(conn, client_id, with_disclosures=True)
    return [c for c in consents if access.sees_consent(org, collecting_org=c.collecting_org, responsible_orgs=responsible)]


async def check_decision(deps: Deps, *, client_id: UUID, recipient: str, purpose: Purpose, categories: Sequence[DataCategory]) -> Decision:
    """May `recipient` receive these categories of the client's data for `purpose`, right now?

    With a cached snapshot: the client's version (one primary-key lookup), and the snapshot again only if the version
    changed. Without one (not cached yet, evicted, or the cache off): the snapshot at once, one statement; reading
    the version first would be a second (docs/consent.md, "Decision cache")."""
    cached = deps.cache.peek(client_id) if deps.cache is not None else None
    snap = None
    if cached is not None and await _read(deps, lambda c: repo.client_version(c, client_id)) == cached.version:
        snap = cached  # the object peeked at: a concurrent put or eviction cannot swap it
    if deps.cache is None:
        cache = "off"
    elif snap is not None:
        deps.cache.hit(client_id)
        cache = "hit"
    else:
        deps.cache.miss()
        cache = "miss"
    if snap is None:
        snap = await _read(deps, lambda c: repo.client_snapshot(c, client_id))
        if deps.cache is not None:
            deps.cache.put(client_id, snap)
    d = decide(snap.consents, recipient=recipient, purpose=purpose, categories=categories, now=deps.clock.now(), erased_at=snap.erased_at)
    metrics.decisions.labels(str(d.allowed).lower(), cache).inc()
    return d


@dataclass(frozen=True)
class DecisionQuestion:
    """One question of a batch: exactly the parameters of `check_decision`."""

    client_id: UUID
    recipient: str
    purpose: Purpose
    categories: Sequence[DataCategory]


async def check_decisions(deps: Deps, questions: Sequence[DecisionQuestion]) -> list[Decision]:
    """`check_decision` for many questions, in order: the same domain rule and the same cache. The versions of the
    clients with a cached snapshot in one statement, the snapshots of those without one or whose version changed in
    one statement: one statement when every client is cached and current or none is cached, two otherwise, whatever
    the number of questions."""
    clients = list(dict.fromkeys(q.client_id for q in questions))
    cached = {c: snap for c in clients if deps.cache is not None and (snap := deps.cache.peek(c)) is not None}
    snaps: dict[UUID, ClientSnapshot] = {}
    if cached:
        versions = await _read(deps, lambda c: repo.client_versions(c, list(cached)))
        snaps = {c: snap for c, snap in cached.items() if versions[c] == snap.version}  # the objects peeked at
    missing = [c for c in clients if c not in snaps]
    if deps.cache is not None:
        for client_id in snaps:
            deps.cache.hit(client_id)
        for _ in missing:
            deps.cache.miss()
    if missing:
        read = await _read(deps, lambda c: repo.client_snapshots(c, missing))
        for client_id in missing:
            snaps[client_id] = read[client_id]
            if deps.cache is not None:
                deps.cache.put(client_id, read[client_id])
    now = deps.clock.now()
    out: list[Decision] = []
    for q in questions:
        snap = snaps[q.client_id]
        d = decide(snap.consents, recipient=q.recipient, purpose=q.purpose, categories=q.categories, now=now, erased_at=snap.erased_at)
        cache = "off" if deps.cache is None else "miss" if q.client_id in missing else "hit"
        metrics.decisions.labels(str(d.allowed).lower(), cache).inc()
        out.append(d)
    return out


async def _read(deps: Deps, query: Query[T]) -> T:
    """On the decision API's own connections when it has them, else through the pool."""
    if deps.reader is not None:
        return await deps.reader.read(query)
    return await query(deps.db.pool)


async def consent_receipt(deps: Deps, consent_id: UUID, lang: str | None, org: str) -> dict[str, Any]:
    """The receipt: the record (domain/receipts.py) and its text in the client's language (adapters/receipt_texts.py);
    for whoever may see the consent record."""
    consent = await get_consent(deps, consent_id, org)
    language = receipt_language(lang, consent.information_language)
    now = deps.clock.now()
    return {
        "schema": RECEIPT_SCHEMA,
        "language": language,
        "record": receipt_record(consent, now=now, org_name=deps.directory.name),
        "text": deps.receipt_texts.render(consent, lang=language, now=now, org_label=lambda o: _org_label(deps, o)),
    }


def _org_label(deps: Deps, org_id: str) -> str:
    """In the text, a member is shown with its name and id; an organisation that left the network by its id."""
    return f"{deps.directory.name(org_id)} ({org_id})" if deps.directory.has(org_id) else org_id


# ---------------------------------------------------------------- keys
async def list_keys(deps: Deps, org: str, acting_org: str) -> list[OrgKey]:
    """An organisation's own keys (network file and API, retired ones too), newest first."""
    if org != acting_org:
        raise OtherOrganisation(f"{acting_org} cannot read the keys of {org}.")
    return await org_keys(deps.db.pool, deps, org)


# ---------------------------------------------------------------- disclosure records
def _disclosure(row: dict[str, Any], consent_status: str) -> dict[str, Any]:
    return {
        "request_id": row["request_id"],
        "kind": row["kind"],
        "client_id": row["client_id"],
        "referral_id": row["referral_id"],
        "from_org": row["from_org"],
        "recipient": row["recipient"],
        "purpose": row["purpose"],
        "categories": list(row["categories"]),
        "consent_id": row["consent_id"],
        "collecting_org": row["collecting_org"],
        "consent_status": consent_status,
        "payload_sha256": row["payload_sha256"],
        "disclosed_at": row["decided_at"],
    }


def _status_now(row: dict[str, Any], now: Any) -> str:
    if row["consent_status"] == ConsentStatus.ACTIVE.value and row["valid_until"] <= now:
        return ConsentStatus.EXPIRED.value  # past valid_until: expired at once, even before the job ran
    return str(row["consent_status"])


def _ack(a: AckDue, now: Any) -> dict[str, Any]:
    return {
        "event_id": a.event_id,
        "kind": a.kind,
        "client_id": a.client_id,
        "org": a.org,
        "consent_id": a.consent_id,
        "collecting_org": a.collecting_org,
        "forwarded_at": a.forwarded_at,
        "due_at": a.due_at,
        "status": a.status(now).value,
        "acknowledged_at": a.acknowledged_at,
        "received_at": a.received_at,
        "overdue_raised_at": a.overdue_raised_at,
    }


async def client_disclosures(deps: Deps, client_id: UUID, scope: str | None) -> dict[str, Any]:
    """What was disclosed about the client, to whom, when, under which consent, and the acknowledgements owed.

    `scope` None (auditors, the district's dpo) or the client's responsible organisation: everything; the
    collecting organisation of a consent: what was disclosed under its consents and the acknowledgements of
    those; any other organisation: nothing (an empty record, exactly as for an unknown client)."""
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn:
        rows = await repo.disclosures_of_client(conn, client_id)
        acks = await repo.acks_of_client(conn, client_id)
        responsible = await repo.responsible_orgs(conn, client_id) if scope is not None else frozenset()
    if scope is not None and scope not in responsible:
        rows = [r for r in rows if r["collecting_org"] == scope]
        consents = {r["consent_id"] for r in rows}
        recipients = {r["recipient"] for r in rows}
        acks = [a for a in acks if a.consent_id in consents or (a.kind == "erasure" and a.org in recipients)]
    return {
        "client_id": client_id,
        "disclosures": [_disclosure(r, _status_now(r, now)) for r in rows],
        "acknowledgements": [_ack(a, now) for a in acks],
    }


async def org_disclosures(deps: Deps, org: str, scope: str | None) -> dict[str, Any]:
    """What the organisation received (and what was disclosed at its request), and the acknowledgements it
    owes or is owed for consents it collected. For the organisation itself and district-wide readers."""
    if scope is not None and scope != org:
        raise OtherOrganisation(f"{scope} cannot read the disclosure records of {org}.")
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn:
        rows = await repo.disclosures_of_org(conn, org)
        acks = await repo.acks_of_org(conn, org)
    return {
        "org": org,
        "disclosures": [_disclosure(r, _status_now(r, now)) for r in rows],
        "acknowledgements": [_ack(a, now) for a in acks],
    }
