"""Builds the consent service against the real broker and database, isolated per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest

from contracts import new_event, topics
from contracts.events import Contact, DisclosureRequested, Identity, PersonalData, ResidenceStatus
from contracts.vocab import DataCategory, Need, Purpose, ResidenceTitle
from lotse_kit.clock import ManualClock
from lotse_kit.kafka import ensure_topics
from lotse_kit.network import OrgDirectory, parse_network
from services.consent.bootstrap import bootstrap
from services.consent.config import ConsentSettings
from services.consent.handlers import Deps
from tests.fixtures import FAST_KIT_SETTINGS, RunningService, as_org, in_process, service_token

JOBCENTER = "jobcenter-paderborn"
CARITAS = "caritas-paderborn"
DIAKONIE = "diakonie-paderborn-hoexter"
KI = "ki-paderborn"

NETWORK = f"""
version: 1
district: test
name: Consent test network
organisations:
  - {{id: {JOBCENTER}, name: Jobcenter Kreis Paderborn, kind: jobcenter, languages: [de], contact_email: jc@test.example}}
  - {{id: {CARITAS}, name: Caritasverband Paderborn, kind: welfare_association, languages: [de], contact_email: c@test.example}}
  - {{id: {DIAKONIE}, name: Diakonie Paderborn-Höxter, kind: welfare_association, languages: [de], contact_email: d@test.example}}
  - {{id: {KI}, name: Kommunales Integrationszentrum Kreis Paderborn, kind: kommunales_integrationszentrum, languages: [de],
      contact_email: ki@test.example}}
"""

DIRECTORY = OrgDirectory.of(parse_network(NETWORK, "consent-tests"))


@dataclass
class Service(RunningService):
    clock: ManualClock

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
        personal_data=full_personal_data(),
        requested_at=datetime.now(UTC),
    )
    return new_event(data, source="/lotse/intake", acting_org=JOBCENTER, event_id=event_id)


def fast_settings(namespace: str, **overrides: Any) -> ConsentSettings:
    return ConsentSettings(**{**FAST_KIT_SETTINGS, "topic_namespace": namespace, "expiry_interval_s": 0.3, **overrides})


@pytest.fixture
async def service(infra: Any, kafka_bootstrap: str, topic_namespace: str, unique: str) -> AsyncIterator[Service]:
    # The platform topics this service consumes; in a deployment `lotse topics ensure` creates them.
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic_namespace + t.name, 1, t.config) for t in topics.platform_topics()])
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    app = bootstrap(settings=fast_settings(topic_namespace), schema=f"consent_{unique}", clock=clock, directory=DIRECTORY)
    async with in_process(app) as client:
        yield Service(app, client, topic_namespace, kafka_bootstrap, clock)
