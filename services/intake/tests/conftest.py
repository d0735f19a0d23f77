from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import decode
from contracts.vocab import DataCategory, Purpose
from lotse_kit.clock import ManualClock
from lotse_kit.network import OrgDirectory, load_network
from services.intake.adapters.consent import Decision, Question
from services.intake.bootstrap import bootstrap
from services.intake.config import IntakeSettings
from tests.fixtures import FAST_KIT_SETTINGS, as_org, in_process
from tests.kafka_helpers import read_topic

HERE = Path(__file__).parent
# The KEK every test instance of intake wraps its data keys with (instances sharing a schema must share it).
TEST_KEK = base64.b64encode(b"lotse-intake-test-kek-32-bytes!!").decode()
TEST_KEK_ID = "test-kek-1"
BERLIN = ZoneInfo("Europe/Berlin")
JOBCENTER = "jobcenter-kreis-paderborn"
KI = "ki-kreis-paderborn"
CARITAS = "caritas-paderborn"
KIM = "kim-kreis-paderborn"


class FakeConsent:
    """Consent decisions from an in-memory table: (client, recipient, purpose) -> consented categories."""

    def __init__(self) -> None:
        self.grants: dict[tuple[uuid.UUID, str, Purpose], set[DataCategory]] = {}
        self.calls: list[tuple[uuid.UUID, str, Purpose, list[DataCategory]]] = []
        self.batches: list[int] = []
        self.closed = False

    def grant(self, client_id: uuid.UUID | str, recipient: str, purpose: Purpose, categories: Iterable[DataCategory]) -> None:
        self.grants[(uuid.UUID(str(client_id)), recipient, purpose)] = set(categories)

    async def decide(self, client_id, recipient, purpose, categories) -> Decision:
        categories = list(categories)
        self.calls.append((client_id, recipient, purpose, categories))
        granted = self.grants.get((client_id, recipient, purpose))
        if granted is None:
            return Decision(False, None, "no consent for this recipient and purpose", categories)
        missing = [c for c in categories if c not in granted]
        if missing:
            return Decision(False, None, "consent does not cover every category", missing)
        return Decision(True, uuid.uuid5(uuid.NAMESPACE_URL, f"{client_id}/{recipient}"), "consent valid", [])

    async def decide_many(self, questions: Sequence[Question]) -> list[Decision]:
        """`decide` per question; `batches` counts the calls (one per intake batch request)."""
        self.batches.append(len(questions))
        return [await self.decide(q.client_id, q.recipient, q.purpose, q.categories) for q in questions]

    async def aclose(self) -> None:
        self.closed = True


def fast_settings(namespace: str, **overrides: Any) -> IntakeSettings:
    # Intake's own: two consumer attempts instead of three, the deadline scan every 0.2 s.
    # The test KEK, never a generated key file.
    own = {"consumer_max_attempts": 2, "deadline_scan_interval_s": 0.2, "kek": TEST_KEK, "kek_id": TEST_KEK_ID, "generate_keys": False}
    return IntakeSettings(**{**FAST_KIT_SETTINGS, "topic_namespace": namespace, **own, **overrides})


@pytest.fixture(scope="session")
def directory() -> OrgDirectory:
    return OrgDirectory.of(load_network(HERE / "network.yaml"))


@pytest.fixture
def clock() -> ManualClock:
    # A Monday morning in Paderborn.
    return ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN))


@pytest.fixture
def consent() -> FakeConsent:
    return FakeConsent()


@pytest.fixture
def make_intake(infra, unique, topic_namespace, directory, clock, consent) -> Callable[..., Any]:
    """Starts an intake instance (app + HTTP client); several instances with the same suffix share one schema (replicas)."""

    @asynccontextmanager
    async def make(suffix: str = "", **overrides: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
        fake = overrides.pop("consent", consent)
        org_directory = overrides.pop("directory", directory)  # None: read settings.network_file, as in production
        app = bootstrap(
            fast_settings(topic_namespace, **overrides),
            schema=f"intake_{unique}{suffix}",
            clock=clock,
            directory=org_directory,
            consent=fake,
        )
        async with in_process(app) as http:
            yield app, http

    return make


def h(org: str) -> dict[str, str]:
    return as_org(org)


def client_body(**over: Any) -> dict[str, Any]:
    body = {
        "given_name": "Olena",
        "family_name": "Kovalenko",
        "date_of_birth": "1988-04-12",
        "email": "olena.kovalenko@mail.example",
        "phone": "+49 5251 123456",
        "preferred_language": "uk",
        "languages": ["uk", "ru", "de"],
        "needs": ["interpreter", "integration_course"],
        "residence_title": "aufenthg_24",
        "residence_valid_until": "2027-03-04",
    }
    body.update(over)
    return body


async def events(
    bootstrap_servers: str, topic: str, *, until: Callable[[list], bool] | int = 1, settle: float = 0.0, timeout_s: float = 30.0
) -> list:
    """Decoded envelopes on a physical topic; `until` sees decoded envelopes too."""
    want = until if callable(until) else (lambda envs: len(envs) >= until)
    records = await read_topic(
        bootstrap_servers, topic, until=lambda rs: want([decode(r.headers, r.value) for r in rs]), settle=settle, timeout=timeout_s
    )
    return [decode(r.headers, r.value) for r in records]


async def metric(http: httpx.AsyncClient, sample: str, **labels: str) -> float:
    """A sample's value on the service's /metrics (0 when it has not been counted yet)."""
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0
