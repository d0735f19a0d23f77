"""The HTTP side every service shares: lifespan, health, readiness, metrics, problem+json errors, access control.

Deny by default: the app is built only if every route declares exactly one access policy
(`lotse_kit.access.check_routes`); health is open, /metrics only for the allowed client networks
(`LOTSE_METRICS_ALLOWED_NETWORKS`, default loopback).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse

from . import access, metrics, problems
from .runtime import Runtime


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

    app = FastAPI(title=title or f"Lotse {runtime.service}", version=version, lifespan=lifespan)
    app.state.runtime = runtime
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
