"""Read-only queries: what the HTTP GETs show (consents, receipts, decisions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar
from uuid import UUID

from contracts.vocab import DataCategory, Purpose
from lotse_kit import access

from .adapters import metrics
from .adapters import repository as repo
from .adapters.decision_reader import Query
from .domain.errors import ConsentNotFound
from .domain.model import Consent, Decision, decide
from .domain.receipts import RECEIPT_SCHEMA, receipt_language, receipt_record
from .handlers.deps import Deps

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
    """May `recipient` receive these categories of the client's data for `purpose`, right now?"""
    snap = None
    cache = "off"
    if deps.cache is not None:
        snap = deps.cache.get(client_id, await _read(deps, lambda c: repo.client_version(c, client_id)))
        cache = "hit" if snap is not None else "miss"
    if snap is None:
        snap = await _read(deps, lambda c: repo.client_snapshot(c, client_id))
        if deps.cache is not None:
            deps.cache.put(client_id, snap)
    d = decide(snap.consents, recipient=recipient, purpose=purpose, categories=categories, now=deps.clock.now(), erased_at=snap.erased_at)
    metrics.decisions.labels(str(d.allowed).lower(), cache).inc()
    return d


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
