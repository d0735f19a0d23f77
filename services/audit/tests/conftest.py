"""Audit service fixtures: the service built through bootstrap against the real broker and database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts import Envelope, new_event, topics
from contracts.events import PARTNER_REFERRAL_V1
from lotse_kit.clock import ManualClock
from lotse_kit.kafka import ensure_topics
from lotse_kit.network import OrgDirectory, parse_network
from services.audit.bootstrap import bootstrap
from services.audit.config import AuditSettings
from services.audit.handlers import Deps
from tests.fixtures import FAST_KIT_SETTINGS, RunningService, as_district, in_process
from tests.kafka_helpers import eventually

PARTNER = "caritas-paderborn"
ORG = "jobcenter-paderborn"
AUDITOR = as_district("auditor")  # reads the whole log
OPERATOR = as_district("operator")  # signs tree heads (besides the audit service itself)
DPO = as_district("dpo", district_wide=True)  # the district's data-protection officer: Art. 15 reports of any client
# The time every test service's clock shows (tree heads and reports are dated with it).
CLOCK_START = datetime(2026, 3, 2, 9, 30, 15, 123000, tzinfo=UTC)

NETWORK = parse_network(f"""
version: 1
district: test
name: Test network
timezone: Europe/Berlin
organisations:
  - {{id: {ORG}, name: Jobcenter Paderborn, kind: jobcenter, languages: [de], contact_email: jc@example.org}}
  - {{id: {PARTNER}, name: Caritasverband Paderborn, kind: welfare_association, languages: [de], contact_email: c@example.org}}
""")
DIRECTORY = OrgDirectory.of(NETWORK)


def fast_settings(namespace: str, tmp_path: Path, **overrides: Any) -> AuditSettings:
    own: dict[str, Any] = dict(
        kafka_metadata_max_age_ms=1000,  # the ingest's pattern subscription sees new topics within a second
        ingest_batch_timeout_ms=50,
        ingest_retry_base_s=0.05,
        ingest_retry_max_s=0.5,
        tree_head_interval_s=3600,  # tests sign on demand
        tree_head_delay_ms=0,  # ... and no head after appends: a test that counts on what the latest head covers must not race one
        signing_key_file=tmp_path / "audit-key.pem",
    )
    return AuditSettings(**{**FAST_KIT_SETTINGS, "topic_namespace": namespace, **own, **overrides})


def audit_topics() -> list[topics.TopicSpec]:
    names = [
        topics.CLIENTS,
        topics.CONSENTS,
        topics.REFERRALS,
        topics.DISCLOSURES,
        topics.DISCLOSURE_REQUESTS,
        topics.partner_inbox(PARTNER),
        topics.partner_outbox(PARTNER),
        topics.dlq(topics.REFERRALS),
    ]
    return [topics.TopicSpec(n, partitions=2) for n in names]


@dataclass
class Audit(RunningService):
    settings: AuditSettings
    schema: str
    key: Ed25519PrivateKey
    clock: ManualClock

    @property
    def deps(self) -> Deps:
        return self.app.state.deps

    async def size(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM audit_log")

    async def wait_for_size(self, n: int, within_s: float = 40.0) -> None:
        async def reached() -> bool:
            return await self.size() >= n

        await eventually(reached, timeout=within_s)

    async def sign(self) -> dict[str, Any]:
        r = await self.http.post("/v1/audit/tree-head", headers=OPERATOR)
        assert r.status_code == 201, r.text
        return r.json()


@asynccontextmanager
async def running_audit(settings: AuditSettings, schema: str, key: Ed25519PrivateKey, bootstrap_servers: str) -> AsyncIterator[Audit]:
    clock = ManualClock(CLOCK_START)
    app = bootstrap(settings, schema=schema, clock=clock, signing_key=key, directory=DIRECTORY)
    async with in_process(app) as client:
        yield Audit(app, client, settings.topic_namespace, bootstrap_servers, settings, schema, key, clock)


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def audit(infra, kafka_bootstrap, topic_namespace, unique, tmp_path, signing_key) -> AsyncIterator[Audit]:
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic_namespace + t.name, t.partitions) for t in audit_topics()])
    settings = fast_settings(topic_namespace, tmp_path)
    async with running_audit(settings, f"audit_{unique}", signing_key, kafka_bootstrap) as a:
        yield a


def now() -> datetime:
    return datetime.now(UTC)


def new_client_id() -> uuid.UUID:
    return uuid.uuid4()


def partner_referral(client_id: uuid.UUID, consent_id: uuid.UUID, **personal: Any) -> Envelope[Any]:
    from contracts.events import Contact, Identity, PartnerReferral, PersonalData

    data = PartnerReferral(
        client_id=client_id,
        referral_id=uuid.uuid4(),
        from_org=ORG,
        to_org=PARTNER,
        service="migrationsberatung",
        consent_id=consent_id,
        categories=["identity", "contact"],
        personal_data=PersonalData(
            identity=Identity(
                given_name=personal.get("given_name", "Olena"),
                family_name=personal.get("family_name", "Kovalenko"),
                date_of_birth=personal.get("date_of_birth"),
            ),
            contact=Contact(email=personal.get("email", "olena.kovalenko@example.org"), phone=personal.get("phone", "+49 5251 123456")),
        ),
        free_text="Olena needs help with the Jobcenter letter",
        sent_at=now(),
    )
    # v1, with the personal data in clear: such records may still be on an inbox, and must not reach the log.
    return new_event(data, source="/lotse/consent", acting_org=ORG, spec=PARTNER_REFERRAL_V1)
