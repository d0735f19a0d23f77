"""The gate's client of intake's internal disclosure API: exactly the consented categories of one client.

Agreed API (intake service):
    GET /internal/v1/clients/{client_id}/disclosure?category=<c>&category=<c>[&referral_id=<uuid>]
    Authorization: Bearer <the consent service's own access token (client credentials)>
    -> 200 the JSON of `contracts.events.SealedContent`, restricted to exactly those categories
           (and the notes of that referral)
    -> 410 problem+json: the client was erased

    POST /internal/v1/disclosures   (the gate's batch; same token)
    {"items": [{"client_id": <uuid>, "categories": [<c>...], "referral_id": <uuid>|null}, ...]}   (1..200 items)
    -> 200 {"items": [{"status": "ok", "content": <SealedContent>} | {"status": "erased"} | {"status": "not-found"}
                      | {"status": "unavailable"}, ...]}
           one per item, in order; `erased` is the single request's 410, `not-found` its 404, `unavailable` its failure

The token comes from the issuer's token endpoint (`lotse_kit.auth.ServiceTokens`, LOTSE_OIDC_CLIENT_ID /
LOTSE_OIDC_CLIENT_SECRET of the consent service) and is reused until shortly before it expires; a 401 discards
it and the request is sent once more with a new one.

`IntakeUnavailable` is a `ConnectionError`, hence one of the kit's transient errors: the gate's consumer retries
the request until intake answers (it never acknowledges a request it could not serve). Any answer other than 200
or 410 is `IntakeUnavailable` too: a 404 would mean a wrong URL or version (intake itself asked for the
disclosure, so it knows the client), and retrying keeps the request until that is fixed. A 410 is
`ClientErasedAtIntake`, which the gate turns into a blocked disclosure. In a batch answer, per item, `erased` is
`ERASED`; `not-found` and `unavailable` are `NOT_SERVED` (the gate then asks for that one alone, as before).
Nothing here logs or raises with the body of an answer: it is personal data.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.events import SealedContent
from contracts.vocab import DataCategory
from lotse_kit.auth import ServiceTokens, get_with_service_token, post_with_service_token
from lotse_kit.errors import DomainError
from lotse_kit.http_transport import service_client

PATH = "/internal/v1/clients/{client_id}/disclosure"
BATCH_PATH = "/internal/v1/disclosures"
BATCH_MAX = 200  # intake's limit per batch request (services/intake/domain/commands.py DISCLOSURE_BATCH_MAX)

log = logging.getLogger(__name__)


class IntakeUnavailable(ConnectionError):
    """Intake did not answer, or not as agreed: transient, the request is retried."""


class ClientErasedAtIntake(Exception):
    """Intake erased the client (410): nothing can be disclosed."""


@dataclass(frozen=True)
class DisclosureQuery:
    """One item of a batch: exactly these categories of the client, and the notes of this referral."""

    client_id: uuid.UUID
    categories: tuple[DataCategory, ...]
    referral_id: uuid.UUID | None = None


ERASED: Literal["erased"] = "erased"
NOT_SERVED: Literal["not-served"] = "not-served"
Fetched = SealedContent | Literal["erased", "not-served"]


class IntakeDisclosures(Protocol):
    async def disclosure(
        self, client_id: uuid.UUID, categories: Iterable[DataCategory], referral_id: uuid.UUID | None = None
    ) -> SealedContent: ...

    async def disclosures(self, queries: Sequence[DisclosureQuery]) -> list[Fetched]: ...

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
        self._client = service_client(base_url, timeout_s=timeout_s, transport=transport)
        self.tokens = tokens or ServiceTokens()
        self.calls = 0  # single requests
        self.batch_calls = 0  # batch requests

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

    async def disclosures(self, queries: Sequence[DisclosureQuery]) -> list[Fetched]:
        """`disclosure` for each query, in order, in one request per BATCH_MAX queries: the content, ERASED, or
        NOT_SERVED (intake answered `not-found` or `unavailable` for it). Raises `IntakeUnavailable` when a request fails as a whole."""
        out: list[Fetched] = []
        for start in range(0, len(queries), BATCH_MAX):
            out += await self._batch(queries[start : start + BATCH_MAX])
        return out

    async def _batch(self, queries: Sequence[DisclosureQuery]) -> list[Fetched]:
        body = {
            "items": [
                {
                    "client_id": str(q.client_id),
                    "categories": [DataCategory(c).value for c in q.categories],
                    "referral_id": str(q.referral_id) if q.referral_id is not None else None,
                }
                for q in queries
            ]
        }
        try:
            self.batch_calls += 1
            resp = await post_with_service_token(self._client, BATCH_PATH, tokens=self.tokens, token=self._token, json=body)
        except httpx.HTTPError as exc:
            raise IntakeUnavailable(f"intake not reachable: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise IntakeUnavailable(f"intake answered {resp.status_code}")
        try:
            items = _BatchAnswer.model_validate_json(resp.content).items
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise IntakeUnavailable(f"intake answered an unexpected body (at {where or 'root'})") from None
        if len(items) != len(queries):
            raise IntakeUnavailable(f"intake answered {len(items)} items for {len(queries)}")
        return [i.content if i.status == "ok" and i.content is not None else ERASED if i.status == "erased" else NOT_SERVED for i in items]

    async def aclose(self) -> None:
        await self._client.aclose()


class _BatchItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: Literal["ok", "erased", "not-found", "unavailable"]
    content: SealedContent | None = None


class _BatchAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    items: list[_BatchItem]
