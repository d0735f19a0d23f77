"""Client contact details from intake's consent-gated contact API.

GET {LOTSE_INTAKE_URL}/v1/clients/{id}/contact, with this service's own access token and the
organisation it asks for in `Lotse-On-Behalf-Of`, answers only if the client consented that this
organisation may contact them for notifications
(purpose contact_for_notifications, category contact); else 409. A client who asked not to be
contacted (`do_not_contact`) is a 409 problem of type `urn:lotse:problem:do-not-contact`, whatever
the consents say. Contact data is fetched when needed and never stored here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from lotse_kit.auth import ServiceTokens, get_with_service_token
from lotse_kit.context import ON_BEHALF_OF

from ..domain.model import CLIENT_UNKNOWN, DO_NOT_CONTACT, NO_CONSENT

log = logging.getLogger(__name__)

DO_NOT_CONTACT_PROBLEM = "urn:lotse:problem:do-not-contact"


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


class Contacts(Protocol):
    async def lookup(self, client_id: str, org: str) -> ClientContact | NoContact: ...

    async def aclose(self) -> None: ...


class IntakeContacts:
    def __init__(self, base_url: str, timeout_s: float = 5.0, *, tokens: Callable[[], Awaitable[str]] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.tokens = tokens or ServiceTokens()
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, headers={"User-Agent": "lotse-notifications"})
        return self._client

    async def lookup(self, client_id: str, org: str) -> ClientContact | NoContact:
        try:
            r = await get_with_service_token(
                self._http(), f"/v1/clients/{client_id}/contact", tokens=self.tokens, headers={ON_BEHALF_OF: org}
            )
        except httpx.TransportError as exc:
            raise ContactsUnavailable(f"intake contact API unreachable: {type(exc).__name__}") from exc
        if r.status_code == 200:
            body = r.json()
            return ClientContact(
                client_id=str(body.get("client_id") or client_id),
                preferred_language=body.get("preferred_language"),
                languages=tuple(body.get("languages") or ()),
                email=body.get("email") or None,
                phone=body.get("phone") or None,
            )
        if r.status_code == 409:
            problem = _json(r)
            if problem.get("type") == DO_NOT_CONTACT_PROBLEM:
                return NoContact(DO_NOT_CONTACT)
            missing = tuple(str(m) for m in problem.get("missing_categories") or problem.get("missing") or ())
            return NoContact(NO_CONSENT, missing)
        if r.status_code in (404, 410):
            return NoContact(CLIENT_UNKNOWN)
        if r.status_code >= 500 or r.status_code == 429:
            raise ContactsUnavailable(f"intake contact API answered {r.status_code}")
        raise RuntimeError(f"intake contact API refused our request: {r.status_code}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _json(r: httpx.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
