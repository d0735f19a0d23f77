"""The infrastructure briefly away (PostgreSQL restarting, a connection terminated, a refused connect)
answers 503 problem+json with Retry-After, never 500: one handler in the kit (`lotse_kit.problems.install`).

The termination case runs against the real PostgreSQL (`pg_terminate_backend`, as a restart does to
every backend); the shared server itself is not restarted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi import APIRouter, Request

from lotse_kit import access
from lotse_kit.http import create_app
from lotse_kit.problems import PROBLEM_JSON
from lotse_kit.retry import TRANSIENT_ERRORS
from tests.kafka_helpers import eventually

TEST_POLICY = access.Open("unavailable-test", "a kit test route")

RAISED: list[BaseException] = [
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    asyncpg.PostgresConnectionError("connection failure"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    OSError(113, "No route to host"),
    TimeoutError(),
    KafkaConnectionError("no broker"),
    httpx.ConnectError("peer unreachable"),
]


def _client(app: Any) -> httpx.AsyncClient:
    # A 500 is re-raised by Starlette after it is sent; keep it as the response the caller would see.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://svc")


def _assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    assert int(resp.headers["retry-after"]) > 0
    body = resp.json()
    assert body["status"] == 503 and body["type"] == "urn:lotse:problem:infrastructure-unavailable"


@pytest.mark.parametrize("exc", RAISED, ids=lambda e: type(e).__name__)
async def test_a_transient_infrastructure_error_is_a_503_with_retry_after(make_runtime, exc, caplog):
    assert isinstance(exc, TRANSIENT_ERRORS)
    router = APIRouter()

    @router.post("/v1/kit-fails", dependencies=[access.declared(TEST_POLICY)])
    async def fails(request: Request) -> None:
        await request.body()
        raise exc

    app = create_app(make_runtime(), [router])
    with caplog.at_level(logging.WARNING, logger="lotse_kit.problems"):
        async with _client(app) as http:
            resp = await http.post("/v1/kit-fails", content=b'{"name": "Erika Mustermann"}')
    _assert_unavailable(resp)
    [line] = [r for r in caplog.records if r.name == "lotse_kit.problems"]
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert line.__dict__["error"] == type(exc).__name__
    assert "Mustermann" not in caplog.text


async def test_any_other_error_is_still_a_500(make_runtime):
    router = APIRouter()

    @router.get("/v1/kit-bug", dependencies=[access.declared(TEST_POLICY)])
    async def bug() -> None:
        raise RuntimeError("a bug, not an outage")

    async with _client(create_app(make_runtime(), [router])) as http:
        resp = await http.get("/v1/kit-bug")
    assert resp.status_code == 500


async def test_a_connection_terminated_mid_request_is_a_503(make_runtime, infra):
    pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
    assert pool is not None
    backend: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    router = APIRouter()

    @router.get("/v1/kit-slow-query", dependencies=[access.declared(TEST_POLICY)])
    async def slow_query() -> dict[str, int]:
        async with pool.acquire() as conn:
            backend.set_result(await conn.fetchval("SELECT pg_backend_pid()"))
            return {"slept": await conn.fetchval("SELECT 1 FROM pg_sleep(60)")}

    try:
        async with _client(create_app(make_runtime(), [router])) as http:
            request = asyncio.ensure_future(http.get("/v1/kit-slow-query"))
            pid = await asyncio.wait_for(backend, timeout=30)
            admin = await asyncpg.connect(infra.database_url)
            try:

                async def sleeping() -> bool:
                    q = await admin.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid)
                    return bool(q and "pg_sleep" in q)

                await eventually(sleeping, timeout=30)
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            resp = await asyncio.wait_for(request, timeout=30)
        _assert_unavailable(resp)
    finally:
        await pool.close()
