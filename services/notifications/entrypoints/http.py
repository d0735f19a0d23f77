"""HTTP API: webhook endpoints (per organisation) and the notification status API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, field_validator

from lotse_kit.context import Ctx, RequestContext
from lotse_kit.problems import Problem

from .. import handlers
from ..adapters import postgres as pg
from ..config import NotificationsSettings
from ..domain.model import Channel, Status
from ..domain.routing import ROUTES, Audience
from ..handlers import Deps

# Event types an organisation's endpoint can receive: the organisation rows of the routing table with a webhook.
WEBHOOK_EVENT_TYPES = sorted({r.trigger for r in ROUTES if r.audience is Audience.ORGANISATION and Channel.WEBHOOK in r.channels})


class EndpointIn(BaseModel):
    url: str = Field(max_length=2000, examples=["https://partner.example/lotse/webhooks"])
    description: str | None = Field(default=None, max_length=500)
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
    previous_secret_expires_at: datetime


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


def router(deps: Deps, settings: NotificationsSettings) -> APIRouter:
    r = APIRouter(prefix="/v1")

    def pool(request: Request) -> asyncpg.Pool:
        return request.app.state.runtime.pool

    def check_url(url: str) -> str:
        parts = urlsplit(url)
        allowed = ("https", "http") if settings.webhook_allow_http else ("https",)
        if parts.scheme not in allowed or not parts.hostname:
            raise Problem(422, "Invalid endpoint URL", f"the URL must be absolute and use {' or '.join(allowed)}",
                          type_="urn:lotse:problem:invalid-endpoint-url", field="url")
        if parts.username or parts.password:
            raise Problem(422, "Invalid endpoint URL", "credentials in the URL are not accepted", type_="urn:lotse:problem:invalid-endpoint-url", field="url")
        return url

    def check_member(ctx: RequestContext) -> None:
        directory = deps.directory()
        if directory.orgs and not directory.has(ctx.acting_org):
            raise Problem(403, "Unknown organisation", f"{ctx.acting_org} is not a member of the network", type_="urn:lotse:problem:unknown-org")

    async def own_endpoint(request: Request, ctx: RequestContext, endpoint_id: uuid.UUID) -> asyncpg.Record:
        row = await pg.get_endpoint(pool(request), endpoint_id)
        if row is None or row["org_id"] != ctx.acting_org:
            # Another organisation's endpoint is reported as absent, not as forbidden.
            raise Problem(404, "Endpoint not found", f"no webhook endpoint {endpoint_id} for {ctx.acting_org}", type_="urn:lotse:problem:not-found")
        return row

    @r.post("/webhook-endpoints", status_code=201, response_model=EndpointCreated, tags=["webhooks"])
    async def create(body: EndpointIn, ctx: Ctx, request: Request) -> Any:
        check_member(ctx)
        url = check_url(body.url)
        row, secret = await handlers.register_endpoint(pool(request), org_id=ctx.acting_org, url=url, description=body.description, event_types=body.event_types)
        return EndpointCreated(**dict(row), secret=secret)

    @r.get("/webhook-endpoints", response_model=list[EndpointOut], tags=["webhooks"])
    async def list_(ctx: Ctx, request: Request) -> Any:
        return [EndpointOut(**dict(row)) for row in await pg.list_endpoints(pool(request), ctx.acting_org)]

    @r.get("/webhook-endpoints/{endpoint_id}", response_model=EndpointOut, tags=["webhooks"])
    async def get(endpoint_id: uuid.UUID, ctx: Ctx, request: Request) -> Any:
        return EndpointOut(**dict(await own_endpoint(request, ctx, endpoint_id)))

    @r.post("/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=SecretRotated, tags=["webhooks"])
    async def rotate(endpoint_id: uuid.UUID, ctx: Ctx, request: Request) -> Any:
        await own_endpoint(request, ctx, endpoint_id)
        row, secret = await handlers.rotate_endpoint_secret(pool(request), endpoint_id, settings.secret_rotation_overlap_s)
        if row is None:
            raise Problem(404, "Endpoint not found", type_="urn:lotse:problem:not-found")
        return SecretRotated(id=row["id"], secret=secret, previous_secret_expires_at=row["previous_secret_expires_at"])

    @r.post("/webhook-endpoints/{endpoint_id}/enable", response_model=EndpointOut, tags=["webhooks"])
    async def enable(endpoint_id: uuid.UUID, ctx: Ctx, request: Request) -> Any:
        await own_endpoint(request, ctx, endpoint_id)
        async with pool(request).acquire() as conn:
            row = await pg.enable_endpoint(conn, endpoint_id)
        return EndpointOut(**dict(row))

    @r.delete("/webhook-endpoints/{endpoint_id}", status_code=204, tags=["webhooks"])
    async def delete(endpoint_id: uuid.UUID, ctx: Ctx, request: Request) -> Response:
        await own_endpoint(request, ctx, endpoint_id)
        async with pool(request).acquire() as conn:
            await pg.delete_endpoint(conn, endpoint_id)
        return Response(status_code=204)

    def visibility(ctx: RequestContext) -> str | None:
        return None if ctx.acting_org in settings.operator_orgs else ctx.acting_org

    @r.get("/notifications", response_model=NotificationPage, tags=["notifications"])
    async def notifications(
        ctx: Ctx,
        request: Request,
        client_id: uuid.UUID | None = None,
        status: Status | None = None,
        channel: Channel | None = None,
        trigger_event_id: uuid.UUID | None = None,
        before: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        """What was sent and what failed. Operators see everything; others what was addressed to or concerns their organisation."""
        rows = await pg.list_notifications(
            pool(request), visible_to=visibility(ctx), client_id=client_id, status=status.value if status else None,
            channel=channel.value if channel else None, trigger_event_id=trigger_event_id, before=before, limit=limit,
        )
        items = [NotificationOut(**dict(row)) for row in rows]
        return NotificationPage(items=items, next_before=items[-1].created_at if len(items) == limit else None)

    @r.get("/notifications/{notification_id}", response_model=NotificationDetail, tags=["notifications"])
    async def notification(notification_id: uuid.UUID, ctx: Ctx, request: Request) -> Any:
        row, attempts = await pg.get_notification(pool(request), notification_id)
        org = visibility(ctx)
        if row is None or (org is not None and row["recipient_org"] != org and org not in (row["concerned_orgs"] or [])):
            raise Problem(404, "Notification not found", type_="urn:lotse:problem:not-found")
        data = {k: v for k, v in dict(row).items() if k != "concerned_orgs"}
        return NotificationDetail(**data, attempts_log=[AttemptOut(**dict(a)) for a in attempts])

    return r
