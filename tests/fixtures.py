"""The shared pytest fixtures (real Kafka and PostgreSQL) and the plumbing every service's tests use alike."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

from contracts import Envelope, encode
from lotse_kit.i18n import Catalogue
from lotse_kit.runtime import Runtime
from tests.infra import Infra, provide
from tests.kafka_helpers import eventually, produce_raw
from tests.peers import MailSink, free_port

# The kit's timings for tests: the outbox relays and consumers retry within a second instead of half a minute.
# Every service's tests and the end-to-end test start from these; a deviation is spelled out where it is made.
FAST_KIT_SETTINGS: dict[str, Any] = {
    "outbox_poll_interval_s": 0.2,
    "outbox_retry_base_s": 0.2,
    "outbox_retry_max_s": 1.0,
    "consumer_retry_base_s": 0.05,
    "consumer_retry_max_s": 0.2,
    "consumer_max_attempts": 3,
}


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    i = provide()
    _INFRA.append(i)
    # Services built inside tests read their settings from the environment.
    os.environ["LOTSE_KAFKA_BOOTSTRAP"] = i.kafka_bootstrap
    os.environ["LOTSE_DATABASE_URL"] = i.database_url
    yield i
    i.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Infra) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def database_url(infra: Infra) -> str:
    return infra.database_url


_UNIQUES: set[str] = set()
_INFRA: list[Infra] = []


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, schema and group names, so tests never share state.

    Everything named with it (schemas, roles, topics) is removed when the session ends.
    """
    u = uuid.uuid4().hex[:10]
    _UNIQUES.add(u)
    return u


@pytest.fixture(scope="session", autouse=True)
def _remove_test_leftovers() -> Iterator[None]:
    yield
    if _UNIQUES and _INFRA:
        import asyncio

        from tests.infra import cleanup

        asyncio.run(cleanup(_INFRA[0], sorted(_UNIQUES)))


@pytest.fixture
async def admin_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def topic_namespace(unique: str) -> str:
    """A fresh topic namespace: services built with it read and write only this test's topics."""
    return f"t{unique}."


# ---------------------------------------------------------------- plumbing shared by the services' tests
@dataclass
class RunningService:
    """A service built through its `bootstrap` and started in this process, as a test holds it.

    Each service's conftest subclasses it with what its tests need besides (a clock, helpers).
    """

    app: Any
    http: httpx.AsyncClient  # calls the app in process
    namespace: str  # the test's topic namespace
    bootstrap_servers: str

    def topic(self, logical: str) -> str:
        return self.namespace + logical

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def deps(self) -> Any:
        return self.app.state.deps

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.db.pool

    async def produce(self, logical_topic: str, *envs: Envelope[Any], times: int = 1) -> None:
        """Writes envelopes to one of the service's topics as another service would."""
        await produce_events(self.bootstrap_servers, self.topic(logical_topic), *envs, times=times)


@asynccontextmanager
async def in_process(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Runs a service app's lifespan (broker, pool, consumers, workers) and gives an HTTP client that calls it in process."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


@asynccontextmanager
async def serving(app: Any, *, lifespan: Literal["on", "off"] = "on", port: int = 0) -> AsyncIterator[str]:
    """Serves an ASGI app with uvicorn on loopback, for peers that must be reached over real HTTP; yields its base URL.

    `port` 0 takes a free one; a port reserved with `free_port()` lets two services know each other's URL
    before either runs (the consent gate calls intake, intake calls the consent service)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan=lifespan, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), timeout=60)
        if task.done():
            task.result()  # a server that failed to start raises here
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def produce_events(bootstrap: str, topic: str, *envs: Envelope[Any], times: int = 1) -> None:
    """Writes envelopes to a physical topic as a producer would (each `times` times, for redelivery tests)."""
    records = [(rec.key, rec.value, rec.headers) for rec in map(encode, envs)]
    await produce_raw(bootstrap, topic, records * times)


@pytest.fixture
def smtp() -> Iterator[MailSink]:
    """An SMTP server on loopback that keeps what it receives; its port is `smtp.port`."""
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.port = port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


def message_ids(catalog: Catalog) -> set[tuple[str | None, str]]:
    """(context, id) of every message, to compare what extraction finds with the committed template."""
    return {(m.context, str(m.id)) for m in catalog if m.id}


def committed_template(locale_dir: Path) -> Catalog:
    """The template (`messages.pot`) committed next to a service's catalogues."""
    with (locale_dir / "messages.pot").open("rb") as f:
        return read_po(f)


def catalogue_with(locale_dir: Path, tmp_path: Path, language: str, edit: Callable[[Catalog], object]) -> Catalogue:
    """A copy of a service's catalogues in which `edit` changed one language's .po (to prove a check fails)."""
    copy = tmp_path / "locale"
    shutil.copytree(locale_dir, copy)
    path = Catalogue(copy).po_path(language)
    with path.open("rb") as f:
        po = read_po(f, locale=language)
    edit(po)
    with path.open("wb") as f:
        write_po(f, po)
    return Catalogue(copy)


# ---------------------------------------------------------------- identity
class LocalIssuer:
    """An OIDC issuer for the tests, on a real loopback port: discovery, JWKS and a client-credentials token
    endpoint, all backed by a `LocalSigner`. The services find it through LOTSE_OIDC_* like any issuer, so
    every service a test builds (in process, under uvicorn or as a subprocess) verifies its tokens."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        port = free_port()
        from lotse_kit.auth import LocalSigner

        self.signer = LocalSigner(issuer=f"http://127.0.0.1:{port}/realms/test")
        signer = self.signer
        token_url = signer.issuer + "/protocol/openid-connect/token"

        class Handler(http.server.BaseHTTPRequestHandler):
            def _json(self, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                url = f"http://127.0.0.1:{port}{self.path}"
                if url == signer.issuer + "/.well-known/openid-configuration":
                    self._json({"issuer": signer.issuer, "jwks_uri": signer.jwks_url, "token_endpoint": token_url})
                elif url == signer.jwks_url:
                    self._json(signer.jwks())
                else:
                    self.send_error(404)

            def do_POST(self) -> None:
                import base64

                client = base64.b64decode(self.headers.get("Authorization", "Basic ").split(" ", 1)[1] or b"").decode().split(":")[0]
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                service = client.removeprefix("lotse-")
                self._json({"access_token": signer.token(subject=f"service-account-{client}", service=service), "expires_in": 300})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {
            "LOTSE_OIDC_ISSUER": self.signer.issuer,
            "LOTSE_OIDC_CLIENT_ID": "lotse-notifications",
            "LOTSE_OIDC_CLIENT_SECRET": "test-only",
        }


_ISSUER: list[LocalIssuer] = []


def local_issuer() -> LocalIssuer:
    if not _ISSUER:
        _ISSUER.append(LocalIssuer())
        os.environ.update(_ISSUER[0].env())
    return _ISSUER[0]


# Test callers' tokens live for an hour: several modules make theirs at import, and the whole suite runs
# longer than an access token's usual five minutes. Expiry itself is tested with tokens made for it.
TEST_TOKEN_LIFETIME_S = 3600


def as_org(org: str, role: str = "caseworker", *, subject: str | None = None, **claims: Any) -> dict[str, str]:
    """Request headers of a caller acting for `org` with `role`, signed by the tests' issuer."""
    claims.setdefault("lifetime_s", TEST_TOKEN_LIFETIME_S)
    token = local_issuer().signer.token(subject=subject or f"{role}@{org}", org=org, roles=[role], **claims)
    return {"Authorization": f"Bearer {token}"}


def as_district(role: str, *, subject: str | None = None, **claims: Any) -> dict[str, str]:
    """Request headers of a district-level caller (no organisation): an `auditor`, an `operator`, or a
    `dpo` (pass `district_wide=True` for the district's dpo, as the realm's dpo.district)."""
    claims.setdefault("lifetime_s", TEST_TOKEN_LIFETIME_S)
    token = local_issuer().signer.token(subject=subject or role, roles=[role], **claims)
    return {"Authorization": f"Bearer {token}"}


def service_token(service: str) -> dict[str, str]:
    """Request headers with a service's own token (client credentials: the `service` claim, no roles)."""
    token = local_issuer().signer.token(subject=f"service-account-lotse-{service}", service=service, lifetime_s=TEST_TOKEN_LIFETIME_S)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session", autouse=True)
def _oidc_issuer() -> Iterator[LocalIssuer]:
    """Every test session has the issuer, before any service is built (LOTSE_OIDC_* are read at first use)."""
    yield local_issuer()
