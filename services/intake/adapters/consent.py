"""The consent decision adapter: asks the consent service whether a disclosure is allowed.

Agreed API (consent service):
    GET /v1/decisions?client_id=<uuid>&recipient=<org>&purpose=<Purpose>&category=<DataCategory>&category=...
    Authorization: Bearer <intake's own access token (client credentials)>
    -> 200 {"allowed": bool, "consent_id": uuid|null, "reason": str, "missing_categories": [DataCategory...]}
    POST /v1/decisions {"items": [{"client_id", "recipient", "purpose", "categories": [...]}, ...]}  (at most 200)
    -> 200 {"items": [<the answer above, for each question in order>]}

The decision API answers service tokens only. Intake's token comes from the issuer's token endpoint
(`lotse_kit.auth.ServiceTokens`, LOTSE_OIDC_CLIENT_ID / LOTSE_OIDC_CLIENT_SECRET) and is reused until
shortly before it expires; a 401 (e.g. the provider rotated its keys) discards it and the request is
sent once more with a new one. Any other answer but 200 is `ConsentUnavailable`: intake fails closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.vocab import DataCategory, Purpose
from lotse_kit.auth import ServiceTokens, get_with_service_token, post_with_service_token
from lotse_kit.errors import DomainError
from lotse_kit.http_transport import service_client

from ..domain.errors import ConsentUnavailable

__all__ = ["DECISION_BATCH_MAX", "ConsentDecisions", "ConsentUnavailable", "Decision", "HttpConsentDecisions", "Question"]

DECISION_BATCH_MAX = 200  # the consent service's bound on one POST /v1/decisions


@dataclass(frozen=True)
class Decision:
    allowed: bool
    consent_id: uuid.UUID | None
    reason: str
    missing_categories: list[DataCategory] = field(default_factory=list)


@dataclass(frozen=True)
class Question:
    """One question of `decide_many`: the parameters of `decide`."""

    client_id: uuid.UUID
    recipient: str
    purpose: Purpose
    categories: tuple[DataCategory, ...]


class ConsentDecisions(Protocol):
    async def decide(self, client_id: uuid.UUID, recipient: str, purpose: Purpose, categories: Iterable[DataCategory]) -> Decision: ...

    async def decide_many(self, questions: Sequence[Question]) -> list[Decision]: ...

    async def aclose(self) -> None: ...


class _DecisionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    allowed: bool
    consent_id: uuid.UUID | None = None
    reason: str = ""
    missing_categories: list[DataCategory] = []


class _DecisionsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    items: list[_DecisionBody]


class HttpConsentDecisions:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
        tokens: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        # The kit's lean transport (lotse_kit/http_transport.py) unless a test passes one.
        self._client = service_client(base_url, timeout_s=timeout_s, transport=transport)
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

    async def decide_many(self, questions: Sequence[Question]) -> list[Decision]:
        """`decide` for each question, in order, in one request per DECISION_BATCH_MAX questions; fails as a whole
        (ConsentUnavailable) exactly where `decide` fails."""
        out: list[Decision] = []
        for start in range(0, len(questions), DECISION_BATCH_MAX):
            chunk = questions[start : start + DECISION_BATCH_MAX]
            body = {
                "items": [
                    {
                        "client_id": str(q.client_id),
                        "recipient": q.recipient,
                        "purpose": Purpose(q.purpose).value,
                        "categories": [DataCategory(c).value for c in q.categories],
                    }
                    for q in chunk
                ]
            }
            try:
                resp = await post_with_service_token(self._client, "/v1/decisions", tokens=self.tokens, token=self._token, json=body)
            except httpx.HTTPError as exc:
                raise ConsentUnavailable(f"consent service not reachable: {type(exc).__name__}") from exc
            if resp.status_code != 200:
                raise ConsentUnavailable(f"consent service answered {resp.status_code}")
            try:
                answers = _DecisionsBody.model_validate_json(resp.content).items
            except ValidationError as exc:
                raise ConsentUnavailable(f"consent service answered an unexpected body: {exc.errors()[0]['msg']}") from exc
            if len(answers) != len(chunk):
                raise ConsentUnavailable(f"consent service answered {len(answers)} decisions for {len(chunk)} questions")
            out += [Decision(a.allowed, a.consent_id, a.reason, list(a.missing_categories)) for a in answers]
        return out

    async def aclose(self) -> None:
        await self._client.aclose()
