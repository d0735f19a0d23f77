"""The consent decision adapter: asks the consent service whether a disclosure is allowed.

Agreed API (consent service):
    GET /v1/decisions?client_id=<uuid>&recipient=<org>&purpose=<Purpose>&category=<DataCategory>&category=...
    Authorization: Bearer <intake's own access token (client credentials)>
    -> 200 {"allowed": bool, "consent_id": uuid|null, "reason": str, "missing_categories": [DataCategory...]}

The decision API answers service tokens only. Intake's token comes from the issuer's token endpoint
(`lotse_kit.auth.ServiceTokens`, LOTSE_OIDC_CLIENT_ID / LOTSE_OIDC_CLIENT_SECRET) and is reused until
shortly before it expires; a 401 (e.g. the provider rotated its keys) discards it and the request is
sent once more with a new one. Any other answer but 200 is `ConsentUnavailable`: intake fails closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.vocab import DataCategory, Purpose
from lotse_kit.auth import ServiceTokens, get_with_service_token
from lotse_kit.errors import DomainError

from ..domain.errors import ConsentUnavailable

__all__ = ["ConsentDecisions", "ConsentUnavailable", "Decision", "HttpConsentDecisions"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    consent_id: uuid.UUID | None
    reason: str
    missing_categories: list[DataCategory] = field(default_factory=list)


class ConsentDecisions(Protocol):
    async def decide(self, client_id: uuid.UUID, recipient: str, purpose: Purpose, categories: Iterable[DataCategory]) -> Decision: ...

    async def aclose(self) -> None: ...


class _DecisionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    allowed: bool
    consent_id: uuid.UUID | None = None
    reason: str = ""
    missing_categories: list[DataCategory] = []


class HttpConsentDecisions:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
        tokens: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)
        self.tokens = tokens or ServiceTokens()

    async def _token(self) -> str:
        try:
            return await self.tokens()
        except (httpx.HTTPError, KeyError, ValueError, DomainError) as exc:
            raise ConsentUnavailable(f"no access token for the consent service: {type(exc).__name__}") from exc

    async def decide(self, client_id: uuid.UUID, recipient: str, purpose: Purpose, categories: Iterable[DataCategory]) -> Decision:
        params: list[tuple[str, str]] = [("client_id", str(client_id)), ("recipient", recipient), ("purpose", Purpose(purpose).value)]
        params += [("category", DataCategory(c).value) for c in categories]
        try:
            resp = await get_with_service_token(self._client, "/v1/decisions", tokens=self.tokens, token=self._token, params=params)
        except httpx.HTTPError as exc:
            raise ConsentUnavailable(f"consent service not reachable: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise ConsentUnavailable(f"consent service answered {resp.status_code}")
        try:
            body = _DecisionBody.model_validate_json(resp.content)
        except ValidationError as exc:
            raise ConsentUnavailable(f"consent service answered an unexpected body: {exc.errors()[0]['msg']}") from exc
        return Decision(body.allowed, body.consent_id, body.reason, list(body.missing_categories))

    async def aclose(self) -> None:
        await self._client.aclose()
