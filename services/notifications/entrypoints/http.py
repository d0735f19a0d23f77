"""HTTP API: webhook endpoints (per organisation), the webhook signing public key (for anyone) and the notification status API.

Thin: parses, calls a command handler (`handlers.handle`) or a view (`views`), shapes the answer.
Refusals are domain errors (domain.errors), mapped to problem+json by the kit.
"""

# No `from __future__ import annotations`: route parameters are typed with access policies bound inside
# the router builder (local names), and FastAPI resolves postponed annotations in module globals only.

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, field_validator

from contracts.dates import SupportedDateTime
from contracts.text import FreeText, ShortText
from lotse_kit import access
from lotse_kit.context import CallerContext, RequestContext

from .. import views
from ..domain.commands import EnableEndpoint, RegisterEndpoint, RemoveEndpoint, RotateEndpointSecret
from ..domain.model import Channel, Status
from ..domain.routing import ROUTES, Audience
from ..handlers import Deps, handle

# Event types an organisation's endpoint can receive: the organisation rows of the routing table with a webhook.
WEBHOOK_EVENT_TYPES = sorted({r.trigger for r in ROUTES if r.audience is Audience.ORGANISATION and Channel.WEBHOOK in r.channels})


class EndpointIn(BaseModel):
    url: FreeText = Field(max_length=2000, examples=["https://partner.example/lotse/webhooks"])
    description: ShortText | None = None
    event_types: list[str] | None = Field(default=None, description=f"Only these types; all when omitted. One of {WEBHOOK_EVENT_TYPES}.")

    @field_validator("event_types")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        unknown = sorted(set(v) - set(WEBHOOK_EVENT_TYPES))
        if unknown or not v:
            raise ValueError(f"unknown or empty event types {unknown}; allowed: {WEBHOOK_EVENT_TYPES}")
        return sorted(set(v))


class EndpointOut(BaseModel):
    id: uuid.UUID
    org_id: str
    url: str
    description: str | None
    event_types: list[str] | None
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="Shown once. Verify our requests with it (Standard Webhooks).")


class SecretRotated(BaseModel):
    id: uuid.UUID
    secret: str = Field(description="Shown once. Until previous_secret_expires_at both secrets sign every request.")
    previous_secret_expires_at: datetime | None = Field(description="None when the endpoint had no secret (discarded by migration 002).")


class PublicKeyOut(BaseModel):
    key_id: str = Field(description="First 16 hex digits of the SHA-256 of the raw public key.")
    public_key: str = Field(description="Standard Webhooks serialisation: whpk_ and the base64 of the 32-byte Ed25519 public key.")
    status: Literal["current", "previous"]


class PublicKeys(BaseModel):
    algorithm: Literal["ed25519"] = "ed25519"
    signature_version: Literal["v1a"] = "v1a"
    public_key: str = Field(description="The current key (whpk_...); verify v1a signatures with it.")
    keys: list[PublicKeyOut] = Field(description="The current key and, during a signing-key rotation, the previous one.")


class NotificationOut(BaseModel):
    id: uuid.UUID
    trigger_event_id: uuid.UUID
    trigger_type: str
    client_id: uuid.UUID | None
    recipient_kind: str
    recipient_org: str | None
    endpoint_id: uuid.UUID | None
    channel: Channel
    template: str | None
    language: str | None
    status: Status
    attempts: int
    next_attempt_at: datetime | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: str
    status_code: int | None
    reason: str
    retry_after_s: float | None
    next_attempt_at: datetime | None


class NotificationDetail(NotificationOut):
    attempts_log: list[AttemptOut]


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_before: datetime | None = Field(description="Pass as `before` for the next (older) page.")


PUBLIC_KEY = access.Open("webhook-public-key", "the key that verifies webhook signatures is public by nature")


def router(deps: Deps) -> APIRouter:
    r = APIRouter(prefix="/v1")
    guard = access.Guard(deps.directory)
    # Webhook endpoints are the organisation's: its partner systems and caseworkers manage them.
    Ctx = Annotated[RequestContext, guard(access.ORG_STAFF)]
    # Notification status: an organisation's own; operators see everything.
    Reader = Annotated[CallerContext, guard(access.NOTIFICATION_STATUS)]

    @r.get("/webhooks/public-key", response_model=PublicKeys, tags=["webhooks"], dependencies=[access.declared(PUBLIC_KEY)])
    async def public_key() -> Any:
        """The Ed25519 public key(s) that verify the `v1a` signature of every webhook. Unauthenticated: it is public."""
        keys = [PublicKeyOut(**k) for k in views.public_keys(deps)]
        return PublicKeys(public_key=keys[0].public_key, keys=keys)

    @r.post("/webhook-endpoints", status_code=201, response_model=EndpointCreated, tags=["webhooks"])
    async def create(body: EndpointIn, ctx: Ctx) -> Any:
        row, secret = await handle(RegisterEndpoint(ctx.acting_org, body.url, body.description, body.event_types), deps)
        return EndpointCreated(**dict(row), secret=secret)

    @r.get("/webhook-endpoints", response_model=list[EndpointOut], tags=["webhooks"])
    async def list_(ctx: Ctx) -> Any:
        return [EndpointOut(**dict(row)) for row in await views.endpoints(deps, ctx.acting_org)]

    @r.get("/webhook-endpoints/{endpoint_id}", response_model=EndpointOut, tags=["webhooks"])
    async def get(endpoint_id: uuid.UUID, ctx: Ctx) -> Any:
        return EndpointOut(**dict(await views.endpoint(deps, ctx.acting_org, endpoint_id)))

    @r.post("/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=SecretRotated, tags=["webhooks"])
    async def rotate(endpoint_id: uuid.UUID, ctx: Ctx) -> Any:
        row, secret = await handle(RotateEndpointSecret(ctx.acting_org, endpoint_id), deps)
        return SecretRotated(id=row["id"], secret=secret, previous_secret_expires_at=row["previous_secret_expires_at"])

    @r.post("/webhook-endpoints/{endpoint_id}/enable", response_model=EndpointOut, tags=["webhooks"])
    async def enable(endpoint_id: uuid.UUID, ctx: Ctx) -> Any:
        return EndpointOut(**dict(await handle(EnableEndpoint(ctx.acting_org, endpoint_id), deps)))

    @r.delete("/webhook-endpoints/{endpoint_id}", status_code=204, tags=["webhooks"])
    async def delete(endpoint_id: uuid.UUID, ctx: Ctx) -> Response:
        await handle(RemoveEndpoint(ctx.acting_org, endpoint_id), deps)
        return Response(status_code=204)

    @r.get("/notifications", response_model=NotificationPage, tags=["notifications"])
    async def notifications(
        ctx: Reader,
        client_id: uuid.UUID | None = None,
        status: Status | None = None,
        channel: Channel | None = None,
        trigger_event_id: uuid.UUID | None = None,
        before: SupportedDateTime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        """What was sent and what failed. Operators see everything; others what was addressed to or concerns their organisation."""
        rows = await views.notifications(
            deps,
            access.notification_scope(ctx, deps.operator_orgs),
            client_id=client_id,
            status=status.value if status else None,
            channel=channel.value if channel else None,
            trigger_event_id=trigger_event_id,
            before=before,
            limit=limit,
        )
        items = [NotificationOut(**dict(row)) for row in rows]
        return NotificationPage(items=items, next_before=items[-1].created_at if len(items) == limit else None)

    @r.get("/notifications/{notification_id}", response_model=NotificationDetail, tags=["notifications"])
    async def notification(notification_id: uuid.UUID, ctx: Reader) -> Any:
        data, attempts = await views.notification(deps, access.notification_scope(ctx, deps.operator_orgs), notification_id)
        return NotificationDetail(**data, attempts_log=[AttemptOut(**dict(a)) for a in attempts])

    return r
