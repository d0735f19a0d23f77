"""The gate's client of intake's internal disclosure API: exactly the consented categories of one client.

Agreed API (intake service):
    GET /internal/v1/clients/{client_id}/disclosure?category=<c>&category=<c>[&referral_id=<uuid>]
    Authorization: Bearer <the consent service's own access token (client credentials)>
    -> 200 the JSON of `contracts.events.SealedContent`, restricted to exactly those categories
           (and the notes of that referral)
    -> 410 problem+json: the client was erased

The token comes from the issuer's token endpoint (`lotse_kit.auth.ServiceTokens`, LOTSE_OIDC_CLIENT_ID /
LOTSE_OIDC_CLIENT_SECRET of the consent service) and is reused until shortly before it expires; a 401 discards
it and the request is sent once more with a new one.

`IntakeUnavailable` is a `ConnectionError`, hence one of the kit's transient errors: the gate's consumer retries
the request until intake answers (it never acknowledges a request it could not serve). Any answer other than 200
or 410 is `IntakeUnavailable` too: a 404 would mean a wrong URL or version (intake itself asked for the
disclosure, so it knows the client), and retrying keeps the request until that is fixed. A 410 is
`ClientErasedAtIntake`, which the gate turns into a blocked disclosure. Nothing here logs or raises with the body of an
answer: it is personal data.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import httpx
from pydantic import ValidationError

from contracts.events import SealedContent
from contracts.vocab import DataCategory
from lotse_kit.auth import ServiceTokens, get_with_service_token
from lotse_kit.errors import DomainError

PATH = "/internal/v1/clients/{client_id}/disclosure"


class IntakeUnavailable(ConnectionError):
    """Intake did not answer, or not as agreed: transient, the request is retried."""


class ClientErasedAtIntake(Exception):
    """Intake erased the client (410): nothing can be disclosed."""


class IntakeDisclosures(Protocol):
    async def disclosure(
        self, client_id: uuid.UUID, categories: Iterable[DataCategory], referral_id: uuid.UUID | None = None
    ) -> SealedContent: ...

    async def aclose(self) -> None: ...


class HttpIntakeDisclosures:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        tokens: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)
        self.tokens = tokens or ServiceTokens()
        self.calls = 0

    async def _token(self) -> str:
        try:
            return await self.tokens()
        except (httpx.HTTPError, KeyError, ValueError, DomainError) as exc:
            raise IntakeUnavailable(f"no access token for intake: {type(exc).__name__}") from exc

    async def disclosure(
        self, client_id: uuid.UUID, categories: Iterable[DataCategory], referral_id: uuid.UUID | None = None
    ) -> SealedContent:
        params: list[tuple[str, str]] = [("category", DataCategory(c).value) for c in categories]
        if referral_id is not None:
            params.append(("referral_id", str(referral_id)))
        path = PATH.format(client_id=uuid.UUID(str(client_id)))
        try:
            self.calls += 1
            resp = await get_with_service_token(self._client, path, tokens=self.tokens, token=self._token, params=params)
        except httpx.HTTPError as exc:
            raise IntakeUnavailable(f"intake not reachable: {type(exc).__name__}") from exc
        if resp.status_code == 410:
            raise ClientErasedAtIntake(f"client {client_id} was erased")
        if resp.status_code != 200:
            raise IntakeUnavailable(f"intake answered {resp.status_code}")
        try:
            return SealedContent.model_validate_json(resp.content)
        except ValidationError as exc:
            # Only where the body failed, never its values.
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise IntakeUnavailable(f"intake answered an unexpected body (at {where or 'root'})") from None

    async def aclose(self) -> None:
        await self._client.aclose()
