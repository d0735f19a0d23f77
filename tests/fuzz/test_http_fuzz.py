"""Schemathesis against every service's OpenAPI document (issue 11): bad input never breaks a service.

Every generated request, positive or negative, must get an answer below 500, and every 4xx must be an
RFC 9457 problem (`application/problem+json` with `type`, `title` and `status`).

How it runs:
- Each service is bootstrapped for real (its own topic namespace and database schema, the real Kafka
  broker and PostgreSQL) and served by uvicorn on a free loopback port in a background thread, one
  service per test class. Intake gets a real consent service next to it, so that a referral reaches
  the consent decision instead of failing with 503 for want of one.
- The OpenAPI documents are rendered at import from the same `bootstrap` (FastAPI renders them
  without starting anything), so pytest collects one test per operation, e.g.
  `TestIntake::test_operation[POST /v1/clients]`, with schemathesis' examples, coverage (boundary
  values) and fuzzing phases, each in positive and negative mode.
- Each service is seeded through its own API with a few resources (a client with open referrals and a
  deadline, consents, a webhook endpoint, audit entries and a signed tree head). Hooks on the schemas
  let Hypothesis decide per request whether to act as a member of the demo network (else the
  no token, refused with 401), whether to use seeded ids in the path (else the
  generated ones: 404) and how to mix the generated body with a seed body the business rules accept
  (`seed_bodies`), so that the handlers and the database are really reached with generated values.
- A fuzz dictionary puts values known to break things (control characters, dates at the end of the
  calendar, numbers past bigint) into string and integer fields now and then (`NASTY_STRINGS`).
- `test_stateful` chains operations along the links schemathesis infers from the documents (FastAPI
  emits no OpenAPI links; the inference matches response fields such as `client_id` or `consent_id`
  to path parameters): register a client -> refer it -> decline the referral, record a consent ->
  read its receipt -> withdraw it. Audit has no stateful test: its resources are log entries written
  from Kafka, and no response of its API names one as a resource, so there is nothing to chain; its
  per-operation tests use the seeded entries instead.

Bounded so that the module takes about a minute on two cores: `LOTSE_FUZZ_EXAMPLES` generated
requests per operation and phase (default 100) and `LOTSE_FUZZ_SCENARIOS` stateful scenarios per
service (default 15). The requests are the same on every run (derandomized), so a failure in CI
reproduces locally; `LOTSE_FUZZ_RANDOM=1` explores new ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky, FlakyStrategyDefinition
from hypothesis.stateful import run_state_machine_as_test

from contracts import encode, new_event, topics
from contracts.events import ClientRegistered
from lotse_kit.kafka import ensure_topics
from lotse_kit.network import OrgDirectory
from lotse_kit.problems import PROBLEM_JSON
from services.audit.bootstrap import bootstrap as audit_bootstrap
from services.audit.config import AuditSettings
from services.consent.bootstrap import bootstrap as consent_bootstrap
from services.consent.config import ConsentSettings
from services.intake.bootstrap import bootstrap as intake_bootstrap
from services.intake.config import IntakeSettings
from services.notifications.bootstrap import bootstrap as notifications_bootstrap
from services.notifications.config import NotificationsSettings
from tests.fixtures import as_district, as_org, service_token
from tests.infra import Infra, cleanup
from tests.kafka_helpers import produce_raw
from tests.peers import free_port

# Schemathesis' own strategies draw from `random`; that is theirs to change, not a finding about Lotse.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

REPO = Path(__file__).resolve().parents[2]
DEMO = OrgDirectory.from_file(REPO / "deploy" / "demo" / "network.yaml")
JOBCENTER = "jobcenter-kreis-paderborn"
CARITAS = "caritas-paderborn"
KI = "ki-kreis-paderborn"
assert {JOBCENTER, CARITAS, KI} <= set(DEMO.org_ids()), "the demo network changed: pick other member ids"

EXAMPLES_PER_OPERATION = int(os.environ.get("LOTSE_FUZZ_EXAMPLES", "100"))
STATEFUL_SCENARIOS = int(os.environ.get("LOTSE_FUZZ_SCENARIOS", "15"))
STATEFUL_STEPS = 6
DERANDOMIZE = os.environ.get("LOTSE_FUZZ_RANDOM", "") != "1"

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None,
    suppress_health_check=list(HealthCheck),
)
STATEFUL_SETTINGS = settings(
    FUZZ_SETTINGS,
    max_examples=STATEFUL_SCENARIOS,
    stateful_step_count=STATEFUL_STEPS,
    # No shrinking: a scenario replayed against a service whose state it changed draws differently (see run_stateful).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)

# Members who act in generated requests (mostly the jobcenter: the seeded resources are its own; Caritas
# receives the seeded referrals).
MEMBERS = [JOBCENTER, JOBCENTER, JOBCENTER, CARITAS, KI]

_SOON = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)
_INFORMED = {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True}


def seed_bodies(seeded: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """A request body the business rules accept, per operation (seeds, as for a mutation fuzzer): Hypothesis
    mostly sends the seed with one field replaced by the generated value or a fuzz dictionary value, so that
    the request gets past the rules and that one field - free text, a date - reaches the handler and the database."""
    client_id = (seeded.get("client_id") or ["00000000-0000-4000-8000-000000000000"])[0]
    return {
        "POST /v1/clients": {
            "given_name": "Olena",
            "family_name": "Kovalenko",
            "preferred_language": "uk",
            "needs": ["integration_course"],
            "residence_title": "aufenthg_104c",
            "residence_valid_from": _SOON.date().isoformat(),
            "education_qualifications": "Diplom (Kyjiw)",
        },
        "PATCH /v1/clients/{client_id}": {"residence_title": "aufenthg_104c", "residence_valid_from": _SOON.date().isoformat()},
        "POST /v1/clients/{client_id}/handover": {"to_org": KI, "reason": "Rechtskreiswechsel"},
        "POST /v1/clients/{client_id}/referrals": {
            "to_org": CARITAS,
            "service": "mbe",
            "categories": ["identity", "needs"],
            "reason": "Integrationskurs",
            "free_text": "Ukrainisch",
        },
        "POST /v1/clients/{client_id}/deadlines": {"kind": "chancen_aufenthalt_end", "valid_from": _SOON.date().isoformat()},
        "POST /v1/referrals/{referral_id}/accept": {"appointment_at": _SOON.isoformat()},
        "POST /v1/referrals/{referral_id}/decline": {"reason": "other", "reason_text": "keine Plätze"},
        "POST /v1/referrals/{referral_id}/complete": {"outcome": "Kurs begonnen"},
        "POST /v1/referrals/{referral_id}/revoke": {"reason": "Termin entfällt"},
        "POST /v1/deadlines/{deadline_id}/resolve": {"resolution": "Antrag gestellt"},
        "POST /v1/consents": {
            "client_id": client_id,
            "recipients": [CARITAS, KI],
            "purposes": ["referral"],
            "categories": ["identity", "needs"],
            "form": "oral",
            "form_reason": "Telefonat mit Dolmetscherin",
            "information": _INFORMED,
            "information_language": "uk",
            "valid_until": _SOON.isoformat(),
        },
        "POST /v1/webhook-endpoints": {"url": "https://partner.example/lotse/webhooks", "description": "Fallakte", "event_types": None},
    }


# ---------------------------------------------------------------- the OpenAPI documents, rendered at import
class _NoConsent:
    async def decide(self, *args: Any) -> Any:  # never called: the app below is never started
        raise AssertionError

    async def aclose(self) -> None:
        pass


# Built at import, only for their OpenAPI documents and never started: no broker is contacted, so the
# Kafka principal they would be is a placeholder.
_UNSTARTED: dict[str, Any] = {"kafka_username": "openapi-only", "kafka_password": "never-used"}


def _openapi(service: str) -> dict[str, Any]:
    builders: dict[str, Callable[[], Any]] = {
        "intake": lambda: intake_bootstrap(IntakeSettings(**_UNSTARTED), schema="openapi_only", directory=DEMO, consent=_NoConsent()),
        "consent": lambda: consent_bootstrap(ConsentSettings(**_UNSTARTED), schema="openapi_only", directory=DEMO),
        "notifications": lambda: notifications_bootstrap(NotificationsSettings(**_UNSTARTED), schema="openapi_only", directory=DEMO),
        "audit": lambda: audit_bootstrap(
            AuditSettings(**_UNSTARTED), schema="openapi_only", directory=DEMO, signing_key=Ed25519PrivateKey.generate()
        ),
    }
    return builders[service]().openapi()


# A fuzz dictionary: values known to break things. Schemathesis puts them in place of generated strings now
# and then (in positive mode only where the field's schema admits them, in negative mode anywhere), and
# `flatmap_body` mutates a seed body's field with the ones that fit its kind (`_nasty_for`).
NASTY_TEXT = ["Olena\x00", "\x00", "a\x07b", "\x1b[31m", "\x7f", "\x85"]  # NUL: PostgreSQL cannot store it
NASTY_DATES = ["9999-06-01", "9000-06-01", "9999-12-31", "0001-01-01"]  # 18 months after 9999-06-01 Python's dates have ended
NASTY_TIMES = ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"]  # past datetime.max / min once converted to UTC
NASTY_CURSORS = ["YWZ0ZXI6OTIyMzM3MjAzNjg1NDc3NTgwOA"]  # base64url("after:9223372036854775808"), an audit cursor
NASTY_STRINGS = [*NASTY_TEXT, *NASTY_DATES, *NASTY_TIMES, *NASTY_CURSORS]
EDGE_INTEGERS = [2**63 - 1, 2**63, 2**64, -(2**63) - 1, -1, 0]


def _type_of(schema: dict[str, Any]) -> str | None:
    types = [schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))]
    return next((t for t in types if t in ("string", "integer")), None)


def _fuzz_config(documents: list[dict[str, Any]]) -> Any:
    """Binds the dictionaries to every string and integer field: top-level body properties and query and path
    parameters (not headers: a NUL there is refused by the HTTP server before any service sees it)."""
    fields: dict[str, str] = {}
    for doc in documents:
        for model in doc.get("components", {}).get("schemas", {}).values():
            for name, prop in model.get("properties", {}).items():
                fields[f"body.{name}"] = _type_of(prop) or ""
        for operations in doc["paths"].values():
            for operation in operations.values():
                for param in operation.get("parameters", []):
                    if param["in"] in ("query", "path"):
                        fields[f"{param['in']}.{param['name']}"] = _type_of(param["schema"]) or ""
    dictionary = {"string": "nasty-strings", "integer": "edge-integers"}
    return schemathesis.Config.from_dict(
        {
            "dictionaries": {"nasty-strings": {"values": NASTY_STRINGS}, "edge-integers": {"values": EDGE_INTEGERS}},
            "parameters": {key: {"dictionary": dictionary[ty], "probability": 0.1} for key, ty in fields.items() if ty in dictionary},
        }
    )


_DOCUMENTS = {name: _openapi(name) for name in ("intake", "consent", "notifications", "audit")}
_CONFIG = _fuzz_config(list(_DOCUMENTS.values()))
SCHEMAS = {name: schemathesis.openapi.from_dict(doc, config=_CONFIG) for name, doc in _DOCUMENTS.items()}

_ABSENT = object()


def _nasty_for(value: Any) -> list[str]:
    if not isinstance(value, str):
        return []
    if re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        return NASTY_DATES
    if re.fullmatch(r"\d{4}-\d\d-\d\dT.*", value):
        return NASTY_TIMES
    return NASTY_TEXT


# What each running service was seeded with, by parameter name; filled by the fixtures below, read by the hooks.
SEEDED: dict[str, dict[str, list[Any]]] = {}


def _steer(service: str) -> None:
    """The hooks on a service's schema (see the module doc); Hypothesis draws every choice, so it also shrinks them."""
    schema = SCHEMAS[service]

    @schema.hook
    def flatmap_headers(context: Any, headers: dict[str, Any] | None) -> st.SearchStrategy[Any]:
        if " /internal/" in context.operation.label:
            # Intake's internal API answers the consent service's own token only: mostly that one, else no token.
            return st.sampled_from([True, True, True, False]).map(
                lambda gate: {**(headers or {}), **service_token("consent")} if gate else headers
            )
        # Mostly a member's token; one time in six no token (401).
        return st.sampled_from([*MEMBERS, None]).map(lambda org: headers if org is None else {**(headers or {}), **as_org(org)})

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
        seeded = SEEDED.get(service, {})
        # An operation may have ids of its own ("<label> <name>"), e.g. the client that handovers move around.
        label = context.operation.label
        options = {name: seeded.get(f"{label} {name}") or seeded[name] for name in path_parameters or {} if seeded.get(name)}
        if not options:
            return st.just(path_parameters)
        chosen = st.fixed_dictionaries({name: st.sampled_from(ids) for name, ids in options.items()})
        # Mostly seeded ids; one time in four the generated ones.
        seeded_ids = chosen.map(lambda ids: {**(path_parameters or {}), **ids})
        return st.one_of(seeded_ids, seeded_ids, seeded_ids, st.just(path_parameters))

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        seed = seed_bodies(SEEDED.get(service, {})).get(context.operation.label)
        if seed is None or not isinstance(body, dict):
            return st.just(body)

        def with_one_field_mutated(name: str) -> st.SearchStrategy[dict[str, Any]]:
            # The generated value (or its absence) or, for a string field of the seed, a dictionary value of its kind.
            mutants = [body.get(name, _ABSENT), *_nasty_for(seed.get(name))]
            return st.sampled_from(mutants).map(lambda value: {k: v for k, v in {**seed, name: value}.items() if v is not _ABSENT})

        mutated = st.sampled_from(sorted(set(seed) | set(body))).flatmap(with_one_field_mutated)
        # Mostly the seed with one field mutated; one time in four the generated body as it is.
        return st.one_of(mutated, mutated, mutated, st.just(body))


for _service in SCHEMAS:
    _steer(_service)


# ---------------------------------------------------------------- serving a real service
class Served:
    """A service app on a free loopback port, in a thread with its own event loop (lifespan included)."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        # log_config=None: uvicorn leaves the process's logging (the services' JSON logs, pytest's capture) alone.
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                self.thread.join(30)
                self.sock.close()
                raise RuntimeError(f"the service at {self.url} did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


@dataclass
class Target:
    """A running service under test and the ids of what was seeded in it, by parameter name."""

    url: str
    seeded: dict[str, list[Any]] = field(default_factory=dict)


def _seeded(service: str, url: str, **ids: list[Any]) -> Target:
    SEEDED[service] = ids
    return Target(url, ids)


def _isolated(infra: Infra) -> tuple[str, str]:
    """A fresh suffix and topic namespace, with the platform topics created in it; removed by `cleanup`."""
    unique = uuid.uuid4().hex[:10]
    namespace = f"t{unique}."
    specs = [topics.TopicSpec(namespace + t.name, t.partitions, t.config) for t in topics.platform_topics()]
    asyncio.run(ensure_topics(infra.kafka_bootstrap, specs))
    return unique, namespace


def _ok(r: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, f"seeding failed: {r.request.method} {r.request.url} -> {r.status_code} {r.text}"
    body: dict[str, Any] = r.json()
    return body


def _as(org: str) -> dict[str, str]:
    return as_org(org)


def _consent_body(client_id: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "recipients": [CARITAS, KI],
        "purposes": ["referral", "contact_for_notifications"],
        "categories": ["identity", "contact", "needs", "residence_status"],
        "form": "written",
        "information": {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True},
        "information_language": "uk",
    }


def _consent_app(namespace: str, unique: str) -> Any:
    return consent_bootstrap(ConsentSettings(topic_namespace=namespace, outbox_poll_interval_s=0.5), schema=f"fuzz_consent_{unique}")


@pytest.fixture(scope="class")
def consent_target(infra: Infra) -> Iterator[Target]:
    unique, namespace = _isolated(infra)
    try:
        with Served(_consent_app(namespace, unique)) as consent, httpx.Client(base_url=consent.url, timeout=30) as http:
            client_id = str(uuid.uuid4())
            granted = _ok(http.post("/v1/consents", json=_consent_body(client_id), headers=_as(JOBCENTER)), 201)
            withdrawn = _ok(http.post("/v1/consents", json=_consent_body(str(uuid.uuid4())), headers=_as(JOBCENTER)), 201)
            _ok(http.post(f"/v1/consents/{withdrawn['consent_id']}/withdraw", headers=_as(JOBCENTER)))
            yield _seeded("consent", consent.url, consent_id=[granted["consent_id"], withdrawn["consent_id"]], client_id=[client_id])
    finally:
        asyncio.run(cleanup(infra, [unique]))


@pytest.fixture(scope="class")
def intake_target(infra: Infra) -> Iterator[Target]:
    unique, namespace = _isolated(infra)
    try:
        with Served(_consent_app(namespace, unique)) as consent:
            settings_ = IntakeSettings(topic_namespace=namespace, consent_url=consent.url, outbox_poll_interval_s=0.5)
            app = intake_bootstrap(settings_, schema=f"fuzz_intake_{unique}", directory=DEMO)
            with Served(app) as intake, httpx.Client(base_url=intake.url, timeout=30) as http:
                body = {
                    "given_name": "Olena",
                    "family_name": "Kovalenko",
                    "preferred_language": "uk",
                    "needs": ["integration_course"],
                    "residence_title": "aufenthg_24",
                    "residence_valid_until": (_SOON + timedelta(days=300)).date().isoformat(),
                    "email": "olena@mail.example",
                }
                client_id = _ok(http.post("/v1/clients", json=body, headers=_as(JOBCENTER)), 201)["client_id"]
                _ok(httpx.post(f"{consent.url}/v1/consents", json=_consent_body(client_id), headers=_as(JOBCENTER)), 201)
                referral = {"to_org": CARITAS, "service": "mbe", "categories": ["identity", "needs"]}
                # Several open referrals: the first accept, decline or revoke that gets through closes one.
                referral_ids = [
                    _ok(http.post(f"/v1/clients/{client_id}/referrals", json=referral, headers=_as(JOBCENTER)), 201)["referral_id"]
                    for _ in range(4)
                ]
                deadline = {"kind": "integration_course_eligibility", "due_date": _SOON.date().isoformat()}
                due = _ok(http.post(f"/v1/clients/{client_id}/deadlines", json=deadline, headers=_as(JOBCENTER)), 201)
                # Handovers move their client to another organisation, which then no longer refers it: one of their own.
                moved = _ok(http.post("/v1/clients", json=body, headers=_as(JOBCENTER)), 201)["client_id"]
                # Erasure ends a client for every other operation: it erases clients of its own.
                erasable = [_ok(http.post("/v1/clients", json=body, headers=_as(JOBCENTER)), 201)["client_id"] for _ in range(2)]
                yield _seeded(
                    "intake",
                    intake.url,
                    client_id=[client_id],
                    referral_id=referral_ids,
                    deadline_id=[due["deadline_id"]],
                    **{"POST /v1/clients/{client_id}/handover client_id": [moved], "DELETE /v1/clients/{client_id} client_id": erasable},
                )
    finally:
        asyncio.run(cleanup(infra, [unique]))


@pytest.fixture(scope="class")
def notifications_target(infra: Infra) -> Iterator[Target]:
    unique, namespace = _isolated(infra)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: intake's contact API, the SMS gateway
    settings_ = NotificationsSettings(
        topic_namespace=namespace,
        intake_url=closed,
        sms_gateway_url=closed + "/sms",
        smtp_port=free_port(),
        webhook_allow_http=True,
        operator_orgs=[KI],
        outbox_poll_interval_s=0.5,
    )
    try:
        with Served(notifications_bootstrap(settings_, schema=f"fuzz_notif_{unique}")) as svc, httpx.Client(base_url=svc.url) as http:
            endpoint = {"url": "https://partner.example/lotse/webhooks", "description": "Fallakte"}
            endpoint_id = _ok(http.post("/v1/webhook-endpoints", json=endpoint, headers=_as(JOBCENTER)), 201)["id"]
            yield _seeded("notifications", svc.url, endpoint_id=[endpoint_id])
    finally:
        asyncio.run(cleanup(infra, [unique]))


@pytest.fixture(scope="class")
def audit_target(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    unique, namespace = _isolated(infra)
    settings_ = AuditSettings(
        topic_namespace=namespace,
        signing_key_file=tmp_path_factory.mktemp("audit") / "key.pem",
        kafka_metadata_max_age_ms=1000,
        ingest_batch_timeout_ms=50,
        tree_head_interval_s=3600,
        outbox_poll_interval_s=0.5,
    )
    try:
        with Served(audit_bootstrap(settings_, schema=f"fuzz_audit_{unique}")) as svc, httpx.Client(base_url=svc.url) as http:
            client_ids = [uuid.uuid4() for _ in range(3)]
            records = []
            for client_id in client_ids:
                data = ClientRegistered(
                    client_id=client_id,
                    registering_org=JOBCENTER,
                    responsible_org=JOBCENTER,
                    preferred_language="uk",
                    registered_at=datetime.now(UTC),
                )
                rec = encode(new_event(data, source="/lotse/intake", acting_org=JOBCENTER))
                records.append((rec.key, rec.value, rec.headers))
            asyncio.run(produce_raw(infra.kafka_bootstrap, namespace + topics.CLIENTS, records))
            deadline = time.monotonic() + 60
            while len(_ok(http.get("/v1/audit/entries", headers=as_district("auditor")))["items"]) < len(records):
                assert time.monotonic() < deadline, "the audit log did not ingest the seeded records"
                time.sleep(0.2)
            _ok(http.post("/v1/audit/tree-head", headers=as_district("operator")), 201)
            yield _seeded("audit", svc.url, index=[0, 1, 2], client_id=[str(c) for c in client_ids])
    finally:
        asyncio.run(cleanup(infra, [unique]))


# ---------------------------------------------------------------- what every answer must be
def check_answer(status: int, headers: Any, body: bytes, request: str) -> None:
    """No 5xx; every 4xx an RFC 9457 problem+json with type, title and status."""
    assert status < 500, f"{request}\n-> {status}: {body[:800]!r}"
    if 400 <= status < 500:
        content_type = headers.get("content-type") or ""
        if isinstance(content_type, list):  # schemathesis' Response keeps every value of a header
            content_type = content_type[0] if content_type else ""
        assert content_type.startswith(PROBLEM_JSON), f"{request}\n-> {status} with Content-Type {content_type!r}: {body[:300]!r}"
        problem = json.loads(body)
        missing = {"type", "title", "status"} - problem.keys()
        assert not missing, f"{request}\n-> {status}: a problem without {sorted(missing)}: {problem}"
        assert problem["status"] == status, f"{request}\n-> {status}, but the problem says {problem['status']}"


def _call(case: Any, target: Target) -> None:
    phase = case.meta.phase if case.meta else None
    if phase is not None and phase.name.value in ("coverage", "examples"):
        # These phases do not go through the hooks: act as a member.
        case.headers = {**(case.headers or {}), **as_org(JOBCENTER)}
    response = case.call(base_url=target.url, timeout=30)
    check_answer(response.status_code, response.headers, response.content, case.as_curl_command())


def run_stateful(schema: Any, target: Target) -> None:
    failures: list[str] = []
    checked: list[int] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            # Each step acts as the jobcenter, so that a chain gets past the request context to the next link.
            case.headers = {**(case.headers or {}), **as_org(JOBCENTER)}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": target.url, "timeout": 30}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            checked.append(response.status_code)
            try:
                check_answer(response.status_code, response.headers, response.content, case.as_curl_command())
            except AssertionError as exc:
                failures.append(str(exc))
                raise

    try:
        run_state_machine_as_test(Machine, settings=STATEFUL_SETTINGS)
    except FlakyStrategyDefinition:
        # The steps draw from earlier answers (schemathesis' bundles); once the live service's state has changed
        # them, Hypothesis may find the same choices drawing differently and stop exploring. That is no finding
        # about the service: what counts is that every answer so far passed the checks, and enough were checked.
        if failures:
            raise AssertionError("\n\n".join(dict.fromkeys(failures))) from None
        assert len(checked) >= STATEFUL_STEPS, f"exploration stopped after {len(checked)} calls"
    except Flaky as exc:
        # Hypothesis confirms a failure by running the scenario again; against a service whose state the
        # first run changed it draws differently and reports only that. The requests that failed are the finding.
        if failures:
            raise AssertionError("\n\n".join(dict.fromkeys(failures))) from exc
        raise


# ---------------------------------------------------------------- the tests: per operation and stateful, per service
class TestIntake:
    @SCHEMAS["intake"].parametrize()
    @FUZZ_SETTINGS
    def test_operation(self, case: Any, intake_target: Target) -> None:
        _call(case, intake_target)

    def test_stateful(self, intake_target: Target) -> None:
        run_stateful(SCHEMAS["intake"], intake_target)


class TestConsent:
    @SCHEMAS["consent"].parametrize()
    @FUZZ_SETTINGS
    def test_operation(self, case: Any, consent_target: Target) -> None:
        _call(case, consent_target)

    def test_stateful(self, consent_target: Target) -> None:
        run_stateful(SCHEMAS["consent"], consent_target)


class TestNotifications:
    @SCHEMAS["notifications"].parametrize()
    @FUZZ_SETTINGS
    def test_operation(self, case: Any, notifications_target: Target) -> None:
        _call(case, notifications_target)

    def test_stateful(self, notifications_target: Target) -> None:
        run_stateful(SCHEMAS["notifications"], notifications_target)


class TestAudit:
    @SCHEMAS["audit"].parametrize()
    @FUZZ_SETTINGS
    def test_operation(self, case: Any, audit_target: Target) -> None:
        _call(case, audit_target)

    # No test_stateful: see the module doc.
