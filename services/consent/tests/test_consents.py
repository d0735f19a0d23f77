"""Consent records over HTTP: §67b SGB X, validity, listing, expiry and erasure."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts import decode, new_event, topics
from contracts.events import ClientErased
from lotse_kit.network import NetworkConfigError
from services.consent.bootstrap import bootstrap
from services.consent.config import ConsentSettings
from services.consent.domain.commands import ExpireDueConsents
from services.consent.handlers import handle
from tests.fixtures import as_org
from tests.kafka_helpers import eventually, read_topic

from .conftest import CARITAS, JOBCENTER, KI, Service, consent_body, disclosure_request

JC = as_org(JOBCENTER)  # the collecting organisation of the consents these tests grant


async def _post(svc: Service, body: dict, org: str = JOBCENTER):
    return await svc.http.post("/v1/consents", json=body, headers=as_org(org))


async def test_67b_requires_all_three_pieces_of_information(service: Service) -> None:
    for missing in ("purpose", "consequences_of_refusal", "right_to_withdraw"):
        info = {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True, missing: False}
        r = await _post(service, consent_body(uuid.uuid4(), information=info))
        assert r.status_code == 422, r.text
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["errors"][0]["field"] == "information" and missing in body["detail"] and "67b" in body["detail"]
    # Leaving a confirmation out altogether is a validation error naming the field.
    r = await _post(service, consent_body(uuid.uuid4(), information={"purpose": True, "right_to_withdraw": True}))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "information.consequences_of_refusal"
    # Nothing was recorded and nothing announced.
    assert await service.deps.db.pool.fetchval("SELECT count(*) FROM consents") == 0
    assert await service.deps.db.pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_oral_consent_needs_a_documented_reason(service: Service) -> None:
    r = await _post(service, consent_body(uuid.uuid4(), form="oral"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "form_reason"
    r = await _post(service, consent_body(uuid.uuid4(), form="oral", form_reason="   "))
    assert r.status_code == 422
    r = await _post(service, consent_body(uuid.uuid4(), form="oral", form_reason="Consultation by telephone; written form not possible"))
    assert r.status_code == 201 and r.json()["form"] == "oral"


async def test_legal_basis_validity_and_collecting_org(service: Service) -> None:
    plain = await service.grant(categories=["identity"])
    assert plain["legal_basis"] == ["GDPR Art. 6(1)(a)", "§67b SGB X"]
    assert datetime.fromisoformat(plain["valid_until"]) == service.clock.now() + timedelta(days=365)
    health = await service.grant(categories=["identity", "health"])
    assert "GDPR Art. 9(2)(a)" in health["legal_basis"]

    too_long = (service.clock.now() + timedelta(days=731)).isoformat()
    r = await _post(service, consent_body(uuid.uuid4(), valid_until=too_long))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "valid_until"
    r = await _post(service, consent_body(uuid.uuid4(), valid_until=(service.clock.now() - timedelta(days=1)).isoformat()))
    assert r.status_code == 422
    r = await _post(service, consent_body(uuid.uuid4(), recipients=["no-such-org"]))
    assert r.status_code == 422 and "no-such-org" in r.json()["detail"]
    assert r.json()["type"] == "urn:lotse:problem:consent-invalid" and r.json()["errors"][0]["field"] == "recipients"
    r = await _post(service, consent_body(uuid.uuid4(), collecting_org=CARITAS), org=JOBCENTER)
    assert r.status_code == 403 and r.json()["type"] == "urn:lotse:problem:not-collecting-org"
    r = await service.http.post("/v1/consents", json=consent_body(uuid.uuid4()))
    assert r.status_code == 401  # no token: nobody acts


async def test_client_consents_newest_first_with_status(service: Service) -> None:
    client = uuid.uuid4()
    first = await service.grant(client, recipients=[CARITAS])
    service.clock.advance(minutes=5)
    second = await service.grant(client, recipients=[KI])
    await service.http.post(f"/v1/consents/{first['consent_id']}/withdraw", headers=as_org(JOBCENTER))
    r = await service.http.get(f"/v1/clients/{client}/consents", headers=JC)
    assert [(c["consent_id"], c["status"]) for c in r.json()] == [(second["consent_id"], "active"), (first["consent_id"], "withdrawn")]
    assert (await service.http.get(f"/v1/clients/{uuid.uuid4()}/consents", headers=JC)).json() == []
    missing = await service.http.post(f"/v1/consents/{uuid.uuid4()}/withdraw", headers=as_org(JOBCENTER))
    assert missing.status_code == 404 and missing.json()["type"] == "urn:lotse:problem:consent-not-found"


async def test_expiry_is_emitted_once_and_takes_effect_before_the_job_runs(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client, valid_until=(service.clock.now() + timedelta(hours=1)).isoformat())
    await service.produce(topics.DISCLOSURE_REQUESTS, disclosure_request(client, to_org=CARITAS))
    await eventually(lambda: service.deps.db.pool.fetchval("SELECT count(*) FROM disclosures"))

    # Three replicas run the job at once; the service's own worker (same clock) is a fourth. One event in all.
    service.clock.advance(hours=2)
    d = await service.decision(client, CARITAS, "referral", ["identity"])
    assert d["allowed"] is False and d["reason"].startswith("expired")  # even before any job ran
    expire = ExpireDueConsents(limit=service.deps.expiry_batch_size)
    results = await asyncio.gather(handle(expire, service.deps), handle(expire, service.deps), handle(expire, service.deps))
    assert sum(results) <= 1
    await eventually(lambda: service.deps.db.pool.fetchval("SELECT status = 'expired' FROM consents"))
    assert await handle(expire, service.deps) == 0

    events = await read_topic(service.bootstrap_servers, service.topic(topics.CONSENTS), until=2, settle=1.5)
    expired = [decode(r.headers, r.value) for r in events if decode(r.headers, r.value).type == "lotse.consent.expired"]
    assert len(expired) == 1
    assert str(expired[0].data.consent_id) == consent["consent_id"]
    assert expired[0].data.disclosed_to == [CARITAS]
    assert expired[0].data.expired_at == datetime.fromisoformat(consent["valid_until"])
    inbox = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(CARITAS)), until=2, settle=0.5)
    assert [decode(r.headers, r.value).type for r in inbox] == ["lotse.referral.sent", "lotse.consent.expired"]
    r = await service.http.get(f"/v1/consents/{consent['consent_id']}", headers=JC)
    assert r.json()["status"] == "expired"
    w = await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=as_org(JOBCENTER))
    assert w.status_code == 409 and w.json()["type"] == "urn:lotse:problem:consent-expired"


async def test_erasure_blocks_every_later_decision_and_tells_recipients(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client)
    await service.produce(topics.DISCLOSURE_REQUESTS, disclosure_request(client, to_org=CARITAS))
    await eventually(lambda: service.deps.db.pool.fetchval("SELECT count(*) FROM disclosures"))

    erased = ClientErased(client_id=client, requested_by_org=JOBCENTER, erased_at=datetime.now(UTC))
    await service.produce(topics.CLIENTS, new_event(erased, source="/lotse/intake", acting_org=JOBCENTER))
    inbox = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(CARITAS)), until=2)
    assert [decode(r.headers, r.value).type for r in inbox] == ["lotse.referral.sent", "lotse.client.erased"]
    d = await service.decision(client, CARITAS, "referral", ["identity"])
    assert d["allowed"] is False and d["reason"].startswith("erased")


def test_bootstrap_refuses_unknown_adapters_and_a_missing_network_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown adapters \['clok'\]"):
        bootstrap(ConsentSettings(), clok=None)
    with pytest.raises(NetworkConfigError, match="cannot read"):
        bootstrap(ConsentSettings(network_file=tmp_path / "missing.yaml"))
