"""Builds the consent service against the real broker and database, isolated per test."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest

from contracts import new_event, topics
from contracts.events import Contact, DisclosureRequested, Identity, PersonalData, ReferralNotes, ResidenceStatus, SealedContent
from contracts.sealed import generate_key
from contracts.vocab import DataCategory, Need, Purpose, ResidenceTitle
from lotse_kit.clock import ManualClock
from lotse_kit.kafka import ensure_topics
from lotse_kit.network import OrgDirectory, parse_network
from services.consent.adapters.intake import ERASED, ClientErasedAtIntake, DisclosureQuery, Fetched, IntakeUnavailable
from services.consent.bootstrap import bootstrap
from services.consent.config import ConsentSettings
from services.consent.handlers import Deps
from tests.fixtures import FAST_KIT_SETTINGS, RunningService, as_org, in_process, service_token

JOBCENTER = "jobcenter-paderborn"
CARITAS = "caritas-paderborn"
DIAKONIE = "diakonie-paderborn-hoexter"
KI = "ki-paderborn"

# The partners' key pairs, made for this test run: the public halves are registered in the network file below,
# the private halves stay here, so tests open what arrives on an inbox as the partner would. Diakonie has none:
# nothing can be sealed to it until it registers a key through the API.
PRIVATE_KEYS: dict[str, dict[str, dict[str, Any]]] = {}
PUBLIC_KEYS: dict[str, list[dict[str, Any]]] = {}
for _org in (JOBCENTER, CARITAS, KI):
    for _use in ("enc", "sig"):
        _private, _public = generate_key(f"{_org}-{_use}-1", _use)  # type: ignore[arg-type]
        PRIVATE_KEYS.setdefault(_org, {})[_use] = _private
        PUBLIC_KEYS.setdefault(_org, []).append(_public.model_dump())


def _keys(org: str) -> str:
    return f", keys: {json.dumps(PUBLIC_KEYS[org])}" if org in PUBLIC_KEYS else ""


NETWORK = f"""
version: 1
district: test
name: Consent test network
organisations:
  - {{id: {JOBCENTER}, name: Jobcenter Kreis Paderborn, kind: jobcenter, languages: [de], contact_email: jc@test.example{_keys(JOBCENTER)}}}
  - {{id: {CARITAS}, name: Caritasverband Paderborn, kind: welfare_association, languages: [de], contact_email: c@test.example{_keys(CARITAS)}}}
  - {{id: {DIAKONIE}, name: Diakonie Paderborn-Höxter, kind: welfare_association, languages: [de], contact_email: d@test.example}}
  - {{id: {KI}, name: Kommunales Integrationszentrum Kreis Paderborn, kind: kommunales_integrationszentrum, languages: [de],
      contact_email: ki@test.example{_keys(KI)}}}
"""

DIRECTORY = OrgDirectory.of(parse_network(NETWORK, "consent-tests"))


@dataclass
class FakeIntake:
    """A stand-in for intake's internal disclosure API (passed through `bootstrap(intake=...)`): every client
    has `full_personal_data()` unless given other data; `down` answers like an unreachable intake, `erased`
    clients like an erased one (410), `leaky` returns every category (a bug the gate must not pass on)."""

    data: dict[uuid.UUID, PersonalData] = field(default_factory=dict)
    erased: set[uuid.UUID] = field(default_factory=set)
    down: bool = False
    leaky: bool = False
    do_not_contact: bool = False
    calls: list[tuple[uuid.UUID, tuple[DataCategory, ...], uuid.UUID | None]] = field(default_factory=list)
    batches: list[list[DisclosureQuery]] = field(default_factory=list)  # one entry per batch request
    batch_down: bool = False  # only the batch request fails (as an intake without the batch route would)

    async def disclosure(
        self, client_id: uuid.UUID, categories: Iterable[DataCategory], referral_id: uuid.UUID | None = None
    ) -> SealedContent:
        cats = tuple(categories)
        self.calls.append((client_id, cats, referral_id))
        if self.down:
            raise IntakeUnavailable("intake not reachable: ConnectError")
        if client_id in self.erased:
            raise ClientErasedAtIntake(f"client {client_id} was erased")
        return self._content(client_id, cats, referral_id)

    def _content(self, client_id: uuid.UUID, cats: tuple[DataCategory, ...], referral_id: uuid.UUID | None) -> SealedContent:
        personal = self.data.get(client_id, full_personal_data())
        notes = ReferralNotes(reason="Sprachkurs gesucht", free_text="Olena spricht etwas Deutsch.") if referral_id else None
        return SealedContent(
            personal_data=personal if self.leaky else personal.restricted_to(set(cats)), notes=notes, do_not_contact=self.do_not_contact
        )

    def fetched(self) -> list[tuple[uuid.UUID, tuple[DataCategory, ...], uuid.UUID | None]]:
        """Everything asked of intake, one at a time or in batches (batches first: the gate's prepare runs first)."""
        return [(q.client_id, q.categories, q.referral_id) for b in self.batches for q in b] + self.calls

    async def disclosures(self, queries: Sequence[DisclosureQuery]) -> list[Fetched]:
        self.batches.append(list(queries))
        if self.down or self.batch_down:
            raise IntakeUnavailable("intake not reachable: ConnectError")
        return [ERASED if q.client_id in self.erased else self._content(q.client_id, q.categories, q.referral_id) for q in queries]

    async def aclose(self) -> None:
        pass


@dataclass
class Service(RunningService):
    clock: ManualClock
    intake: FakeIntake = field(default_factory=FakeIntake)

    @property
    def deps(self) -> Deps:
        return self.app.state.deps

    async def grant(self, client_id: uuid.UUID | None = None, *, org: str = JOBCENTER, **overrides: Any) -> dict[str, Any]:
        body = consent_body(client_id or uuid.uuid4(), **overrides)
        r = await self.http.post("/v1/consents", json=body, headers=as_org(org))
        assert r.status_code == 201, r.text
        return r.json()

    async def decision(self, client_id: Any, recipient: str, purpose: str, categories: list[str]) -> dict[str, Any]:
        params = [("client_id", str(client_id)), ("recipient", recipient), ("purpose", purpose)] + [("category", c) for c in categories]
        r = await self.http.get("/v1/decisions", params=params, headers=service_token("intake"))  # services only
        assert r.status_code == 200, r.text
        return r.json()


def consent_body(client_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_id": str(client_id),
        "recipients": [CARITAS, KI],
        "purposes": ["referral", "case_coordination"],
        "categories": ["identity", "contact", "needs"],
        "form": "written",
        "information": {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True},
        "information_language": "uk",
        "interpreter_used": True,
    }
    body.update(overrides)
    return body


def full_personal_data() -> PersonalData:
    return PersonalData(
        identity=Identity(given_name="Olena", family_name="Kovalenko", date_of_birth=date(1988, 4, 2)),
        contact=Contact(email="olena@example.org", phone="+49 5251 000000", preferred_language="uk", languages=["uk", "ru"]),
        residence_status=ResidenceStatus(title=ResidenceTitle.TEMPORARY_PROTECTION_24, valid_until=date(2027, 3, 4)),
        needs=[Need.LANGUAGE_COURSE, Need.CHILDCARE],
        education_qualifications="Diploma in accounting (Kyiv)",
        health="Diabetes type 1",
    )


def disclosure_request(
    client_id: uuid.UUID,
    *,
    to_org: str = CARITAS,
    categories: list[DataCategory] | None = None,
    request_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
) -> Any:
    data = DisclosureRequested(
        client_id=client_id,
        request_id=request_id or uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org=JOBCENTER,
        to_org=to_org,
        purpose=Purpose.REFERRAL,
        service="migrationsberatung",
        need=Need.LANGUAGE_COURSE,
        categories=categories if categories is not None else [DataCategory.IDENTITY, DataCategory.CONTACT],
        requested_at=datetime.now(UTC),
    )
    return new_event(data, source="/lotse/intake", acting_org=JOBCENTER, event_id=event_id)


def fast_settings(namespace: str, **overrides: Any) -> ConsentSettings:
    return ConsentSettings(**{**FAST_KIT_SETTINGS, "topic_namespace": namespace, "expiry_interval_s": 0.3, **overrides})


StartService = Callable[..., AbstractAsyncContextManager[Service]]


def _starter(kafka_bootstrap: str, topic_namespace: str, unique: str) -> StartService:
    @asynccontextmanager
    async def start(
        clock: ManualClock | None = None, intake: Any = None, directory: OrgDirectory = DIRECTORY, **overrides: Any
    ) -> AsyncIterator[Service]:
        # The platform topics this service consumes; in a deployment `lotse admin provision` creates them.
        specs = [topics.TopicSpec(topic_namespace + t.name, 1, t.config) for t in topics.platform_topics()]
        await ensure_topics(kafka_bootstrap, specs)
        clock = clock or ManualClock(datetime.now(UTC).replace(microsecond=0))
        intake = intake if intake is not None else FakeIntake()
        app = bootstrap(
            settings=fast_settings(topic_namespace, **overrides),
            schema=f"consent_{unique}",
            clock=clock,
            directory=directory,
            intake=intake,
        )
        async with in_process(app) as client:
            yield Service(app, client, topic_namespace, kafka_bootstrap, clock, intake)

    return start


@pytest.fixture
def start_consent(infra: Any, kafka_bootstrap: str, topic_namespace: str, unique: str) -> StartService:
    """Starts the consent service on the test's schema and namespace; called again, it is the same service
    restarted (same database, same topics). Keyword arguments override settings."""
    return _starter(kafka_bootstrap, topic_namespace, unique)


@pytest.fixture
async def service(infra: Any, kafka_bootstrap: str, topic_namespace: str, unique: str) -> AsyncIterator[Service]:
    async with _starter(kafka_bootstrap, topic_namespace, unique)() as svc:
        yield svc
