"""The HTTP side every service shares: lifespan, health, readiness, metrics, problem+json errors, access control.

Deny by default: the app is built only if every route declares exactly one access policy
(`lotse_kit.access.check_routes`); health is open, /metrics only for the allowed client networks
(`LOTSE_METRICS_ALLOWED_NETWORKS`, default loopback).

Every request but health and metrics gets a server span that continues the caller's `traceparent`
(`lotse_kit.tracing`; FastAPI's own telemetry is switched off: it would record query strings and
exception messages).

A request that fails because the infrastructure is briefly away (`lotse_kit.retry.TRANSIENT_ERRORS`)
is answered 503 problem+json with Retry-After, never 500 (`problems.install`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import access, metrics, problems, tracing
from .runtime import Runtime

log = logging.getLogger(__name__)

# Not traced: probes and scrapes every few seconds would drown the traces that matter.
_UNTRACED = ("/health/", "/metrics")
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}


class TraceRequests:
    """ASGI middleware: one server span per request (`lotse_kit.tracing.server`), named by the route's
    template once routing chose it, with the response's status code."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_UNTRACED):
            await self.app(scope, receive, send)
            return
        # A caller's `tracestate` is not taken: it is free text that would travel on in the events' ce_tracestate
        # into the append-only audit log (`traceparent` is only hex, checked by the propagator).
        traceparent = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
        if traceparent is None and not tracing.enabled():
            await self.app(scope, receive, send)  # nothing to record, nothing to pass on
            return
        status: list[int] = []

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        with tracing.server(self.service, scope["method"], None, scope.get("scheme", "http"), traceparent, None) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                if span is not None:
                    route = getattr(scope.get("route"), "path", None)
                    if route:
                        span.set_attribute("http.route", route)
                        span.update_name(f"{scope['method']} {route}")
                    if status:
                        span.set_attribute("http.response.status_code", status[0])
                        if status[0] >= 500:
                            tracing.failed(span, str(status[0]))


def create_app(
    runtime: Runtime,
    routers: Iterable[APIRouter] = (),
    *,
    title: str | None = None,
    version: str = "1.0.0",
    access_settings: access.AccessSettings | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title or f"Lotse {runtime.service}", version=version, lifespan=lifespan, telemetry=_NO_TELEMETRY)
    app.state.runtime = runtime
    app.add_middleware(TraceRequests, service=runtime.service)
    problems.install(app)

    health = [access.declared(access.HEALTH)]

    @app.get("/health/live", tags=["operations"], dependencies=health)
    async def live() -> dict[str, str]:
        return {"status": "live", "service": runtime.service}

    @app.get("/health/ready", tags=["operations"], dependencies=health)
    async def ready() -> JSONResponse:
        checks = await runtime.readiness()
        down = {k: v for k, v in checks.items() if not str(v).startswith("up")}
        body: dict[str, Any] = {"status": "ready" if not down else "not ready", "service": runtime.service, "checks": checks}
        if down:
            body["down"] = sorted(down)
        return JSONResponse(body, status_code=200 if not down else 503)

    @app.get("/metrics", tags=["operations"], dependencies=[access.declared(access.metrics_policy(access_settings))])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    for r in routers:
        app.include_router(r)
    access.check_routes(app)
    return app
