"""Client contact details from intake's consent-gated contact API.

GET {LOTSE_INTAKE_URL}/v1/clients/{id}/contact, with this service's own access token and the
organisation it asks for in `Lotse-On-Behalf-Of`, answers only if the client consented that this
organisation may contact them for notifications
(purpose contact_for_notifications, category contact); else 409. A client who asked not to be
contacted (`do_not_contact`) is a 409 problem of type `urn:lotse:problem:do-not-contact`, whatever
the consents say. Contact data is fetched when needed and never stored here.

POST {LOTSE_INTAKE_URL}/internal/v1/contacts {"items": [{"client_id", "on_behalf_of"}, ...]} (at most 200 items,
this service's own token only) answers the same for many lookups in one request, intake asking the consent service
once for all of them: per item {"status": 200, "contact": {...}} or {"status": <the single route's status>,
"problem": <its problem body>}. `lookup_all` uses it for a batch and falls back to one lookup per client and
organisation when it fails as a whole (e.g. an intake without the route, or switched off: `batch=False`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from lotse_kit.auth import ServiceTokens, get_with_service_token, post_with_service_token
from lotse_kit.context import ON_BEHALF_OF
from lotse_kit.http_transport import service_client

from ..domain.model import CLIENT_UNKNOWN, DO_NOT_CONTACT, NO_CONSENT

log = logging.getLogger(__name__)

DO_NOT_CONTACT_PROBLEM = "urn:lotse:problem:do-not-contact"
BATCH_MAX = 200  # intake's bound on one POST /internal/v1/contacts


@dataclass(frozen=True)
class ClientContact:
    client_id: str
    preferred_language: str | None = None
    languages: tuple[str, ...] = ()
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class NoContact:
    """The client may not (or can no longer) be contacted on behalf of this organisation: no consent, the
    client asked not to be contacted (`do_not_contact`), or intake no longer knows the client."""

    reason: str
    missing: tuple[str, ...] = field(default_factory=tuple)


class ContactsUnavailable(ConnectionError):
    """Intake did not answer usefully; a temporary condition (an OSError, so the kit retries it)."""


Key = tuple[str, str]  # (client id, on behalf of which organisation)
Found = ClientContact | NoContact | Exception  # the exception: that lookup failed (ContactsUnavailable: try again later)


class Contacts(Protocol):
    async def lookup(self, client_id: str, org: str) -> ClientContact | NoContact: ...

    async def lookup_many(self, keys: Sequence[Key]) -> dict[Key, Found]:
        """Every key's answer, in as few requests as the adapter can; raises when the request fails as a whole."""
        ...

    async def aclose(self) -> None: ...


class IntakeContacts:
    def __init__(self, base_url: str, timeout_s: float = 5.0, *, tokens: Callable[[], Awaitable[str]] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.tokens = tokens or ServiceTokens()
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = service_client(self.base_url, timeout_s=self.timeout_s, headers={"User-Agent": "lotse-notifications"})
        return self._client

    async def lookup(self, client_id: str, org: str) -> ClientContact | NoContact:
        try:
            r = await get_with_service_token(
                self._http(), f"/v1/clients/{client_id}/contact", tokens=self.tokens, headers={ON_BEHALF_OF: org}
            )
        except httpx.TransportError as exc:
            raise ContactsUnavailable(f"intake contact API unreachable: {type(exc).__name__}") from exc
        found = _answer(r.status_code, r.json() if r.status_code == 200 else _json(r), client_id)
        if isinstance(found, Exception):
            raise found
        return found

    async def lookup_many(self, keys: Sequence[Key]) -> dict[Key, Found]:
        """One POST /internal/v1/contacts per BATCH_MAX keys; each item read exactly as `lookup` reads the single
        route's answer. Raises ContactsUnavailable when a request fails as a whole (the caller falls back)."""
        out: dict[Key, Found] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), BATCH_MAX):
            chunk = unique[start : start + BATCH_MAX]
            body = {"items": [{"client_id": c, "on_behalf_of": o} for c, o in chunk]}
            try:
                r = await post_with_service_token(self._http(), "/internal/v1/contacts", tokens=self.tokens, json=body)
            except httpx.TransportError as exc:
                raise ContactsUnavailable(f"intake batch contact API unreachable: {type(exc).__name__}") from exc
            items = _json(r).get("items") if r.status_code == 200 else None
            if not isinstance(items, list) or len(items) != len(chunk):
                raise ContactsUnavailable(f"intake batch contact API answered {r.status_code} without one item per lookup")
            for (client_id, org), item in zip(chunk, items, strict=True):
                item = item if isinstance(item, dict) else {}
                status = item.get("status")
                answer = item.get("contact") if status == 200 else item.get("problem")
                if not isinstance(status, int) or not isinstance(answer, dict):
                    out[(client_id, org)] = ContactsUnavailable("intake batch contact API answered an item without status and body")
                    continue
                out[(client_id, org)] = _answer(status, answer, client_id)
        return out

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _answer(status: int, body: dict[str, Any], client_id: str) -> Found:
    """What the single contact route's answer (status, JSON body) means; an exception for a failed lookup."""
    if status == 200:
        return ClientContact(
            client_id=str(body.get("client_id") or client_id),
            preferred_language=body.get("preferred_language"),
            languages=tuple(body.get("languages") or ()),
            email=body.get("email") or None,
            phone=body.get("phone") or None,
        )
    if status == 409:
        if body.get("type") == DO_NOT_CONTACT_PROBLEM:
            return NoContact(DO_NOT_CONTACT)
        missing = tuple(str(m) for m in body.get("missing_categories") or body.get("missing") or ())
        return NoContact(NO_CONSENT, missing)
    if status in (404, 410):
        return NoContact(CLIENT_UNKNOWN)
    if status >= 500 or status == 429:
        return ContactsUnavailable(f"intake contact API answered {status}")
    return RuntimeError(f"intake contact API refused our request: {status}")


async def lookup_all(contacts: Contacts, keys: Sequence[Key], *, concurrency: int, batch: bool = True) -> dict[Key, Found]:
    """Every key's contact for one batch (of the consumer or of the delivery worker): one batch request to intake;
    if that fails as a whole (or `batch` is off), one lookup per key, at most `concurrency` at once, as before."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    if batch:
        try:
            found = await contacts.lookup_many(keys)
            if all(k in found for k in keys):
                return found
            log.warning("batch contact lookup left keys out; asking one by one")
        except Exception as exc:
            log.warning("batch contact lookup failed; asking one by one", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
    limit = asyncio.Semaphore(concurrency)

    async def one(client_id: str, org: str) -> Found:
        async with limit:
            try:
                return await contacts.lookup(client_id, org)
            except Exception as exc:  # decided per key by the caller
                return exc

    return dict(zip(keys, await asyncio.gather(*(one(c, o) for c, o in keys)), strict=True))


def _json(r: httpx.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
