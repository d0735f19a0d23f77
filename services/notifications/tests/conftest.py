"""Loopback HTTP peers (SMS gateway, webhook receivers; SMTP is the shared `smtp` fixture), a fake intake contact API (in process,
and a stand-in intake over HTTP for the real contacts adapter), and the service itself."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lotse_kit.context import ON_BEHALF_OF
from lotse_kit.network import OrgDirectory
from services.notifications.adapters.contacts import ClientContact, ContactsUnavailable, IntakeContacts, NoContact
from services.notifications.adapters.keys import signing_key_text
from services.notifications.bootstrap import bootstrap
from services.notifications.config import NotificationsSettings
from tests.fixtures import FAST_KIT_SETTINGS, RunningService, in_process, serving
from tests.kafka_helpers import eventually
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
        self.batches: list[list[tuple[str, str]]] = []  # the keys of each lookup_many (each also in `lookups`)
        self.batch_fails = False  # lookup_many raises (intake without the batch route): callers ask one by one

    def add(
        self, client_id: uuid.UUID, *, language: str, email: str | None = None, phone: str | None = None, languages: tuple[str, ...] = ()
    ) -> None:
        self.contacts[str(client_id)] = ClientContact(str(client_id), language, languages or (language,), email, phone)

    async def lookup(self, client_id: str, org: str) -> ClientContact | NoContact:
        self.lookups.append((client_id, org))
        if client_id in self.refused or client_id not in self.contacts:
            return NoContact("no consent to contact the client for notifications", ("contact",))
        return self.contacts[client_id]

    async def lookup_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ClientContact | NoContact | Exception]:
        self.batches.append(list(keys))
        if self.batch_fails:
            raise ContactsUnavailable("batch route unavailable (fake)")
        return {(c, o): await self.lookup(c, o) for c, o in keys}

    async def aclose(self) -> None:
        pass


# ---------------------------------------------------------------- intake's contact API over HTTP, as a stand-in
@dataclass
class IntakeStandIn:
    """Answers GET /v1/clients/{id}/contact (and per item POST /internal/v1/contacts) as intake does: the contact (200), a consent problem (409 consent-required),
    a do-not-contact problem (409 do-not-contact) for clients in `do_not_contact` or, in `do_not_contact_after`, once
    they have been looked up that many times (the flag set between recording and sending), and 404 for unknown clients."""

    base_url: str = ""
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    do_not_contact: set[str] = field(default_factory=set)
    do_not_contact_after: dict[str, int] = field(default_factory=dict)
    lookups: list[tuple[str, str | None]] = field(default_factory=list)  # every lookup, single or in a batch
    batch_requests: list[int] = field(default_factory=list)  # items per POST /internal/v1/contacts
    batch_route: bool = True

    def add(self, client_id: uuid.UUID, *, language: str, email: str | None = None, phone: str | None = None) -> None:
        self.contacts[str(client_id)] = {
            "client_id": str(client_id),
            "preferred_language": language,
            "languages": [language],
            "email": email,
            "phone": phone,
        }

    def adapter(self) -> IntakeContacts:
        async def token() -> str:
            return "stand-in-token"

        return IntakeContacts(self.base_url, 5.0, tokens=token)

    async def _contacts(self, request: Request) -> Response:
        """POST /internal/v1/contacts: each item answered as the single route answers it (status 404 for the whole
        request while `batch_route` is off, as an intake without the route does)."""
        if not self.batch_route:
            body = {"type": "urn:lotse:problem:not-found", "title": "Not Found", "status": 404}
            return JSONResponse(body, status_code=404, media_type="application/problem+json")
        items = (await request.json())["items"]
        self.batch_requests.append(len(items))
        out = []
        for item in items:
            r = self._answer(item["client_id"], item["on_behalf_of"])
            body = json.loads(r.body)
            out.append({"status": r.status_code, "contact" if r.status_code == 200 else "problem": body})
        return JSONResponse({"items": out})

    async def _contact(self, request: Request) -> Response:
        return self._answer(request.path_params["client_id"], request.headers.get(ON_BEHALF_OF))

    def _answer(self, client_id: str, org: str | None) -> Response:
        self.lookups.append((client_id, org))
        seen = sum(1 for c, _ in self.lookups if c == client_id)
        after = self.do_not_contact_after.get(client_id)
        problem = "application/problem+json"
        if client_id in self.do_not_contact or (after is not None and seen > after):
            body = {"type": "urn:lotse:problem:do-not-contact", "title": "Do not contact", "status": 409, "detail": "asked not to be"}
            return JSONResponse(body, status_code=409, media_type=problem)
        if client_id not in self.contacts:
            return JSONResponse(
                {"type": "urn:lotse:problem:not-found", "title": "Not found", "status": 404}, status_code=404, media_type=problem
            )
        if client_id in self.refused:
            body = {"type": "urn:lotse:problem:consent-required", "status": 409, "missing_categories": ["contact"]}
            return JSONResponse(body, status_code=409, media_type=problem)
        return JSONResponse(self.contacts[client_id])


@pytest.fixture
async def intake_standin() -> AsyncIterator[IntakeStandIn]:
    s = IntakeStandIn()
    app = Starlette(
        routes=[
            Route("/v1/clients/{client_id}/contact", s._contact, methods=["GET"]),
            Route("/internal/v1/contacts", s._contacts, methods=["POST"]),
        ]
    )
    async with serving(app, lifespan="off") as url:
        s.base_url = url
        yield s


# ---------------------------------------------------------------- the service
# Fixed keys for the tests (a restart within a test must open the secrets it sealed); never generated into .run/.
TEST_KEK = base64.b64encode(b"lotse-notifications-test-kek-32B").decode()
TEST_KEK_ID = "test-kek-1"
TEST_SIGNING_KEY = signing_key_text(Ed25519PrivateKey.from_private_bytes(b"lotse-notifications-test-ed25519"))


def fast_settings(namespace: str, **overrides: Any) -> NotificationsSettings:
    own: dict[str, Any] = dict(
        secret_kek=TEST_KEK,
        secret_kek_id=TEST_KEK_ID,
        webhook_signing_key=TEST_SIGNING_KEY,
        generate_keys=False,
        webhook_allowed_hosts=["127.0.0.1"],  # the loopback peers; tests of the SSRF rule start without it
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
    """`async with start_service(clock=None, resolver=None, contacts_adapter=None, **settings) as svc:` — the same schema each
    time, so a second start is a restart. `resolver` replaces DNS for the egress guard; `contacts_adapter` the in-process
    fake of intake's contact API (e.g. with `intake_standin.adapter()`, the real adapter over HTTP)."""

    @asynccontextmanager
    async def start(clock: Any = None, resolver: Any = None, contacts_adapter: Any = None, **overrides: Any) -> AsyncIterator[Service]:
        settings = fast_settings(
            topic_namespace,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,  # type: ignore[attr-defined]
            sms_gateway_url=peer.url("/sms"),
            **overrides,
        )
        extra = {"resolver": resolver} if resolver is not None else {}
        app = bootstrap(
            settings,
            schema=f"notif_{unique}",
            clock=clock,
            contacts=contacts_adapter or contacts,
            directory=OrgDirectory.from_file(network_file),
            **extra,
        )
        async with in_process(app) as client:
            yield Service(app, client, topic_namespace, kafka_bootstrap)

    return start


# ---------------------------------------------------------------- HTTPS peers with certificates made in the test
@dataclass
class Tls:
    """A certificate and its key as PEM files."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(tmp: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Tls:
    cert_path, key_path = tmp / f"{stem}.crt", tmp / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return Tls(cert_path, key_path)


def _certificate(
    subject: str, issuer: x509.Name, public_key: Any, signer: Any, *, ca: bool, ips: tuple[str, ...] = (), dns: tuple[str, ...] = ()
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    else:
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(d) for d in dns]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def make_ca(tmp: Path) -> tuple[Tls, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("Lotse test CA", _name("Lotse test CA"), key.public_key(), key, ca=True)
    return _write(tmp, "ca", key, cert), key, cert


def make_server_cert(tmp: Path, stem: str, *, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, ips: tuple[str, ...]) -> Tls:
    """Signed by `ca`, or self-signed when `ca` is None; valid for the given IP addresses only."""
    key = ec.generate_private_key(ec.SECP256R1())
    if ca is None:
        cert = _certificate(stem, _name(stem), key.public_key(), key, ca=False, ips=ips)
    else:
        ca_key, ca_cert = ca
        cert = _certificate(stem, ca_cert.subject, key.public_key(), ca_key, ca=False, ips=ips)
    return _write(tmp, stem, key, cert)


@asynccontextmanager
async def https_peer(tls: Tls) -> AsyncIterator[HttpPeer]:
    """An HttpPeer served over TLS with `tls` on a free loopback port; its base_url is https://127.0.0.1:<port>."""
    p = HttpPeer()
    app = Starlette(routes=[Route("/{path:path}", p._handle, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", lifespan="off", access_log=False, ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), timeout=60)
        if task.done():
            task.result()
        p.base_url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        yield p
    finally:
        server.should_exit = True
        await task
        sock.close()
