"""Loopback HTTP peers (SMS gateway, webhook receivers; SMTP is the shared `smtp` fixture), a fake intake contact API, and the service itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lotse_kit.network import OrgDirectory
from services.notifications.adapters.contacts import ClientContact, NoContact
from services.notifications.bootstrap import bootstrap
from services.notifications.config import NotificationsSettings
from tests.fixtures import FAST_KIT_SETTINGS, RunningService, in_process, serving
from tests.peers import MailSink

JOBCENTER = "jobcenter-paderborn"
CARITAS = "caritas-paderborn"
AWO = "awo-paderborn"
OPERATOR = "ki-paderborn"

NETWORK_YAML = f"""
version: 1
district: Kreis Paderborn
name: Integrationsnetzwerk Kreis Paderborn (test)
timezone: Europe/Berlin
organisations:
  - id: {JOBCENTER}
    name: Jobcenter Kreis Paderborn
    kind: jobcenter
    languages: [de]
    contact_email: team-integration@jobcenter.lotse-demo.de
    services:
      - id: job-placement
        name: Arbeitsvermittlung
        needs: [job_placement]
  - id: {CARITAS}
    name: Caritasverband Paderborn
    kind: welfare_association
    languages: [de, en]
    contact_email: migrationsdienst@caritas.lotse-demo.de
    services:
      - id: migration-counselling
        name: Migrationsberatung für Erwachsene
        needs: [residence_law_counselling]
  - id: {AWO}
    name: AWO Paderborn
    kind: welfare_association
    languages: [de, tr]
    contact_email: jmd@awo.lotse-demo.de
    services: []
  - id: {OPERATOR}
    name: Kommunales Integrationszentrum Paderborn
    kind: kommunales_integrationszentrum
    languages: [de]
    contact_email: ki@kreis.lotse-demo.de
    services: []
"""


# ---------------------------------------------------------------- HTTP peers (SMS gateway, webhook receivers)
@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpPeer:
    """Records every request; answers from a per-path script of (status, headers, json) and then the default."""

    base_url: str = ""
    requests: list[Seen] = field(default_factory=list)
    scripts: dict[str, list[tuple[int, dict[str, str], Any]]] = field(default_factory=dict)
    default: tuple[int, dict[str, str], Any] = (200, {}, {"status": "ok"})

    def url(self, path: str) -> str:
        return self.base_url + path

    def script(self, path: str, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.scripts[path] = list(answers)

    def at(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(Seen(request.url.path, {k.lower(): v for k, v in request.headers.items()}, body))
        queue = self.scripts.get(request.url.path)
        status, headers, payload = queue.pop(0) if queue else self.default
        if payload is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(payload, status_code=status, headers=headers)


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    p = HttpPeer()
    app = Starlette(routes=[Route("/{path:path}", p._handle, methods=["POST", "GET", "PUT"])])
    async with serving(app, lifespan="off") as url:
        p.base_url = url
        yield p


# ---------------------------------------------------------------- intake's contact API, faked
class FakeContacts:
    def __init__(self) -> None:
        self.contacts: dict[str, ClientContact] = {}
        self.refused: set[str] = set()
        self.lookups: list[tuple[str, str]] = []

    def add(
        self, client_id: uuid.UUID, *, language: str, email: str | None = None, phone: str | None = None, languages: tuple[str, ...] = ()
    ) -> None:
        self.contacts[str(client_id)] = ClientContact(str(client_id), language, languages or (language,), email, phone)

    async def lookup(self, client_id: str, org: str) -> ClientContact | NoContact:
        self.lookups.append((client_id, org))
        if client_id in self.refused or client_id not in self.contacts:
            return NoContact("no consent to contact the client for notifications", ("contact",))
        return self.contacts[client_id]

    async def aclose(self) -> None:
        pass


# ---------------------------------------------------------------- the service
def fast_settings(namespace: str, **overrides: Any) -> NotificationsSettings:
    own: dict[str, Any] = dict(
        consumer_retry_max_s=0.5,  # deviates from FAST_KIT_SETTINGS (0.2)
        retry_schedule_s=[0.3, 0.3, 0.3],
        retry_jitter=0.0,
        worker_poll_interval_s=0.1,
        sending_lease_s=10.0,
        webhook_allow_http=True,
        webhook_timeout_s=5.0,
        smtp_timeout_s=5.0,
        operator_orgs=[OPERATOR],
    )
    return NotificationsSettings(**{**FAST_KIT_SETTINGS, "topic_namespace": namespace, **own, **overrides})


class Service(RunningService):
    async def rows(self, where: str = "true", *args: Any) -> list[asyncpg.Record]:
        return await self.pool.fetch(f"SELECT * FROM notifications WHERE {where} ORDER BY created_at, id", *args)


@pytest.fixture
def network_file(tmp_path: Path) -> Path:
    p = tmp_path / "network.yaml"
    p.write_text(NETWORK_YAML, encoding="utf-8")
    return p


@pytest.fixture
def contacts() -> FakeContacts:
    return FakeContacts()


@pytest.fixture
def start_service(
    infra: Any,
    unique: str,
    topic_namespace: str,
    kafka_bootstrap: str,
    network_file: Path,
    contacts: FakeContacts,
    smtp: MailSink,
    peer: HttpPeer,
) -> Callable[..., Any]:
    """`async with start_service(clock=None, **settings) as svc:` — the same schema each time, so a second start is a restart."""

    @asynccontextmanager
    async def start(clock: Any = None, **overrides: Any) -> AsyncIterator[Service]:
        settings = fast_settings(
            topic_namespace,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,  # type: ignore[attr-defined]
            sms_gateway_url=peer.url("/sms"),
            **overrides,
        )
        app = bootstrap(settings, schema=f"notif_{unique}", clock=clock, contacts=contacts, directory=OrgDirectory.from_file(network_file))
        async with in_process(app) as client:
            yield Service(app, client, topic_namespace, kafka_bootstrap)

    return start
