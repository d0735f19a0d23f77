"""The consent decision adapter: asks the consent service whether a disclosure is allowed.

Agreed API (consent service):
    GET /v1/decisions?client_id=<uuid>&recipient=<org>&purpose=<Purpose>&category=<DataCategory>&category=...
    -> 200 {"allowed": bool, "consent_id": uuid|null, "reason": str, "missing_categories": [DataCategory...]}
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.vocab import DataCategory, Purpose

from ..domain.errors import ConsentUnavailable

log = logging.getLogger(__name__)

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
    def __init__(self, base_url: str, *, timeout_s: float = 3.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)

    async def decide(self, client_id: uuid.UUID, recipient: str, purpose: Purpose, categories: Iterable[DataCategory]) -> Decision:
        params: list[tuple[str, str]] = [("client_id", str(client_id)), ("recipient", recipient), ("purpose", Purpose(purpose).value)]
        params += [("category", DataCategory(c).value) for c in categories]
        try:
            resp = await self._client.get("/v1/decisions", params=params)
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
