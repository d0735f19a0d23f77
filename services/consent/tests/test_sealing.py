"""Issue 13 in the consent service: sealing to the recipient's keys (with rotation), intake's internal API,
erasure and withdrawal forwarding with acknowledgements, the overdue job, corrections and the listing API.
Against the real broker and database; intake's internal API is the stand-in of conftest.py (`FakeIntake`),
except in `test_the_gate_reads_from_the_real_intake_app`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from contracts import decode, new_event, topics
from contracts.events import ClientCorrected, ClientErased, ErasureAcknowledged, Identity, SealedContent, WithdrawalAcknowledged
from contracts.sealed import SealedError, generate_key, sign_ack, unseal
from contracts.vocab import DataCategory
from lotse_kit.calendar import add_working_days, end_of_day, local_date
from lotse_kit.clock import ManualClock
from lotse_kit.retry import TRANSIENT_ERRORS
from services.consent.adapters.intake import ClientErasedAtIntake, HttpIntakeDisclosures, IntakeUnavailable
from services.consent.domain.commands import RaiseOverdueAcknowledgements
from services.consent.domain.forwarding import forwarded_event_id
from services.consent.handlers import handle
from tests.fixtures import as_district, as_org, service_token
from tests.kafka_helpers import eventually, read_topic

from .conftest import (
    CARITAS,
    DIAKONIE,
    JOBCENTER,
    KI,
    PRIVATE_KEYS,
    FakeIntake,
    Service,
    StartService,
    disclosure_request,
    full_personal_data,
)

JC = as_org(JOBCENTER)


def _types(records: list[Any]) -> list[str]:
    return [decode(r.headers, r.value).type for r in records]


async def _disclose(svc: Service, client: uuid.UUID, to_org: str = CARITAS, categories: list[DataCategory] | None = None) -> Any:
    request = disclosure_request(client, to_org=to_org, categories=categories)
    await svc.produce(topics.DISCLOSURE_REQUESTS, request)
    await eventually(lambda: svc.pool.fetchval("SELECT outcome FROM disclosures WHERE request_id = $1", request.data.request_id))
    return request


async def _inbox(svc: Service, org: str, n: int, settle: float = 0.5) -> list[Any]:
    recs = await read_topic(svc.bootstrap_servers, svc.topic(topics.partner_inbox(org)), until=n, settle=settle)
    return [decode(r.headers, r.value) for r in recs]


def _opened(env: Any, org: str) -> SealedContent:
    return SealedContent.model_validate(unseal(env.data.sealed.jwe, [PRIVATE_KEYS[org]["enc"]]))


# ------------------------------------------------------------------ the gate
async def test_a_recipient_without_a_key_is_blocked_with_a_clear_reason(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client, recipients=[DIAKONIE])
    await _disclose(service, client, to_org=DIAKONIE)
    [rec] = await read_topic(service.bootstrap_servers, service.topic(topics.DISCLOSURES))
    blocked = decode(rec.headers, rec.value)
    assert blocked.type == "lotse.disclosure.blocked"
    assert blocked.data.reason.startswith(f"no-recipient-key: {DIAKONIE} has registered no active encryption key")
    assert service.intake.fetched() == []  # nothing was fetched for a recipient nothing can be sealed to
    assert await service.pool.fetchval("SELECT count(*) FROM outbox WHERE topic LIKE 'partner.%'") == 0


async def test_intake_unreachable_is_retried_until_it_answers(service: Service) -> None:
    service.intake.down = True
    client = uuid.uuid4()
    await service.grant(client)
    request = disclosure_request(client)
    await service.produce(topics.DISCLOSURE_REQUESTS, request)
    await eventually(lambda: len(service.intake.calls) >= 4)  # retried, more often than consumer_max_attempts (3)
    # Neither decided nor acknowledged (no processed event, nothing on the DLQ's way): the request waits.
    assert await service.pool.fetchval("SELECT count(*) FROM disclosures") == 0
    assert await service.pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1", request.id) == 0
    service.intake.down = False
    await eventually(lambda: service.pool.fetchval("SELECT outcome FROM disclosures WHERE request_id = $1", request.data.request_id))
    assert await service.pool.fetchval("SELECT outcome FROM disclosures") == "made"
    assert issubclass(IntakeUnavailable, TRANSIENT_ERRORS)


async def test_a_client_intake_erased_is_blocked(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client)
    service.intake.erased.add(client)
    await _disclose(service, client)
    [rec] = await read_topic(service.bootstrap_servers, service.topic(topics.DISCLOSURES))
    env = decode(rec.headers, rec.value)
    assert env.type == "lotse.disclosure.blocked" and env.data.reason.startswith("erased")


async def test_do_not_contact_travels_only_with_contact_data(service: Service) -> None:
    service.intake.do_not_contact = True
    client = uuid.uuid4()
    await service.grant(client, categories=["identity", "contact", "needs"])
    await _disclose(service, client, categories=[DataCategory.IDENTITY, DataCategory.CONTACT])
    await _disclose(service, client, categories=[DataCategory.NEEDS])
    first, second = await _inbox(service, CARITAS, 2)
    assert _opened(first, CARITAS).do_not_contact is True
    assert _opened(second, CARITAS).do_not_contact is False and _opened(second, CARITAS).personal_data.contact is None


# ------------------------------------------------------------------ keys and rotation
async def test_keys_are_registered_rotated_and_retired_through_the_api(service: Service) -> None:
    diakonie = as_org(DIAKONIE, "partner_system")
    first_private, first = generate_key("diakonie-2026-01", "enc")
    second_private, second = generate_key("diakonie-2026-02", "enc")
    path = f"/v1/organisations/{DIAKONIE}/keys"

    # A private key is refused and not stored.
    r = await service.http.post(path, json={"kid": "oops", "use": "enc", "jwk": first_private}, headers=diakonie)
    assert r.status_code == 422 and r.json()["type"] == "urn:lotse:problem:key-invalid" and first_private["d"] not in r.text
    r = await service.http.post(
        path, json={"kid": "bad", "use": "enc", "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}, headers=diakonie
    )
    assert r.status_code == 422
    assert await service.pool.fetchval("SELECT count(*) FROM org_keys") == 0
    # Another member cannot register for Diakonie.
    r = await service.http.post(path, json=first.model_dump(), headers=as_org(CARITAS, "partner_system"))
    assert r.status_code == 403 and r.json()["type"] == "urn:lotse:problem:other-organisation"

    assert (await service.http.post(path, json=first.model_dump(), headers=diakonie)).status_code == 201
    assert (await service.http.post(path, json=first.model_dump(), headers=diakonie)).status_code == 200  # the same key again
    clash = {**second.model_dump(), "kid": first.kid}
    assert (await service.http.post(path, json=clash, headers=diakonie)).status_code == 409

    client = uuid.uuid4()
    await service.grant(client, recipients=[DIAKONIE])
    await _disclose(service, client, to_org=DIAKONIE)
    service.clock.advance(seconds=1)
    # Rotation: a second key, both active; the newest seals.
    assert (await service.http.post(path, json=second.model_dump(), headers=as_org(DIAKONIE))).status_code == 201
    listed = (await service.http.get(path, headers=diakonie)).json()
    assert [(k["kid"], k["active"], k["source"]) for k in listed] == [(second.kid, True, "api"), (first.kid, True, "api")]
    await _disclose(service, client, to_org=DIAKONIE)
    # Retiring the newest: the older one seals again.
    r = await service.http.delete(f"{path}/{second.kid}", headers=diakonie)
    assert r.status_code == 200 and r.json()["active"] is False
    await _disclose(service, client, to_org=DIAKONIE)
    a, b, c = await _inbox(service, DIAKONIE, 3)
    assert [e.data.sealed.kid for e in (a, b, c)] == [first.kid, second.kid, first.kid]
    # The JWE header names the key; the partner opens each with the private key of that kid.
    keys = [first_private, second_private]
    assert all(SealedContent.model_validate(unseal(e.data.sealed.jwe, keys)).personal_data.identity for e in (a, b, c))
    with pytest.raises(SealedError):
        unseal(b.data.sealed.jwe, [first_private])
    assert (await service.http.delete(f"{path}/nope", headers=diakonie)).status_code == 404
    assert (await service.http.get(path, headers=as_org(CARITAS))).status_code == 403

    # A key of the network file can be retired too; with none left, Caritas gets nothing.
    r = await service.http.delete(f"/v1/organisations/{CARITAS}/keys/{CARITAS}-enc-1", headers=as_org(CARITAS))
    assert r.status_code == 200 and r.json()["source"] == "network-file" and r.json()["active"] is False
    other = uuid.uuid4()
    await service.grant(other)
    await _disclose(service, other, to_org=CARITAS)
    outcome = await service.pool.fetchval("SELECT reason FROM disclosures WHERE client_id = $1", other)
    assert outcome.startswith("no-recipient-key")


# ------------------------------------------------------------------ withdrawal, erasure, acknowledgements
def _ack(kind: type, env: Any, org: str, *, signer: str | None = None, claimed_org: str | None = None) -> Any:
    data = env.data
    signature = sign_ack(str(data.client_id), str(env.id), PRIVATE_KEYS[signer or org]["sig"])
    ack = kind(
        client_id=data.client_id,
        org=claimed_org or org,
        acknowledged_event_id=env.id,
        acknowledged_at=datetime.now(UTC),
        signature=signature,
    )
    return new_event(ack, source=f"/partners/{claimed_org or org}", acting_org=claimed_org or org)


async def _ack_row(svc: Service, event_id: uuid.UUID) -> Any:
    return await svc.pool.fetchrow("SELECT * FROM acknowledgements WHERE event_id = $1", event_id)


async def test_withdrawal_acknowledgements_are_verified_and_recorded(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client)
    await _disclose(service, client, to_org=CARITAS)
    await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=JC)
    _, withdrawn = await _inbox(service, CARITAS, 2)
    assert withdrawn.type == "lotse.consent.withdrawn"
    due = await _ack_row(service, withdrawn.id)
    assert due["org"] == CARITAS and due["kind"] == "withdrawal" and due["acknowledged_at"] is None
    assert due["collecting_org"] == JOBCENTER and str(due["consent_id"]) == consent["consent_id"]

    outbox = topics.partner_outbox(CARITAS)
    bad = [
        _ack(WithdrawalAcknowledged, withdrawn, CARITAS, signer=KI),  # signed with another organisation's key
        _ack(ErasureAcknowledged, withdrawn, CARITAS),  # the wrong kind
    ]
    unknown = new_event(withdrawn.data, source="/lotse/consent", event_id=uuid.uuid4())
    bad.append(_ack(WithdrawalAcknowledged, unknown, CARITAS))  # an event consent never forwarded
    await service.produce(outbox, *bad)
    # On KI's outbox, in Caritas' name: the outbox's owner is not the acknowledging organisation.
    await service.produce(topics.partner_outbox(KI), _ack(WithdrawalAcknowledged, withdrawn, CARITAS))
    dlq = await read_topic(service.bootstrap_servers, service.topic(outbox) + ".dlq", until=3)
    reasons = [dict(r.headers)["lotse_dlq_reason"].decode() for r in dlq]
    assert "does not verify" in reasons[0]
    assert "was a forwarded withdrawal, not a erasure" in reasons[1]
    assert "is no event consent forwarded to" in reasons[2]
    [ki_dlq] = await read_topic(service.bootstrap_servers, service.topic(topics.partner_outbox(KI)) + ".dlq")
    assert "arrived on the outbox of ki-paderborn" in dict(ki_dlq.headers)["lotse_dlq_reason"].decode()
    assert (await _ack_row(service, withdrawn.id))["acknowledged_at"] is None

    good = _ack(WithdrawalAcknowledged, withdrawn, CARITAS)
    await service.produce(outbox, good, _ack(WithdrawalAcknowledged, withdrawn, CARITAS))  # twice: once in effect
    await eventually(lambda: service.pool.fetchval("SELECT acknowledged_at FROM acknowledgements WHERE event_id = $1", withdrawn.id))
    await asyncio.sleep(0.5)  # the repeated acknowledgement is consumed too
    row = await _ack_row(service, withdrawn.id)
    assert row["ack_event_id"] == good.id and row["ack_kid"] == f"{CARITAS}-sig-1"
    listed = (await service.http.get(f"/v1/clients/{client}/disclosures", headers=JC)).json()
    assert [(a["org"], a["kind"], a["status"]) for a in listed["acknowledgements"]] == [(CARITAS, "withdrawal", "acknowledged")]


async def test_erasure_is_forwarded_acknowledged_and_erases_the_consent_free_text(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client, form="oral", form_reason="Telefonat mit Olena Kovalenko, Dolmetscherin zugeschaltet")
    await service.grant(client, recipients=[KI])
    await _disclose(service, client, to_org=CARITAS)
    await _disclose(service, client, to_org=KI)
    erased = ClientErased(client_id=client, requested_by_org=JOBCENTER, erased_at=datetime.now(UTC))
    erasure = new_event(erased, source="/lotse/intake", acting_org=JOBCENTER)
    await service.produce(topics.CLIENTS, erasure)
    # A second erasure (intake re-sent it as a new event) tells nobody again.
    await service.produce(topics.CLIENTS, new_event(erased, source="/lotse/intake", acting_org=JOBCENTER))
    caritas = await _inbox(service, CARITAS, 2, settle=1.5)
    ki = await _inbox(service, KI, 2, settle=0.5)
    assert [e.type for e in caritas] == [e.type for e in ki] == ["lotse.referral.sent", "lotse.client.erased"]
    rows = await service.pool.fetch("SELECT org, kind FROM acknowledgements WHERE client_id = $1 ORDER BY org", client)
    assert [(r["org"], r["kind"]) for r in rows] == [(CARITAS, "erasure"), (KI, "erasure")]
    # Consent's own records of the client keep no free text.
    reasons = await service.pool.fetch("SELECT form_reason, personal_data_erased_at FROM consents WHERE client_id = $1", client)
    assert all(r["form_reason"] is None and r["personal_data_erased_at"] is not None for r in reasons)
    dump = await service.pool.fetchval("SELECT string_agg(row_to_json(c)::text, ' ') FROM consents c")
    assert "Kovalenko" not in dump
    # Caritas acknowledges; KI does not (yet).
    await service.produce(topics.partner_outbox(CARITAS), _ack(ErasureAcknowledged, caritas[1], CARITAS))
    await eventually(lambda: service.pool.fetchval("SELECT acknowledged_at FROM acknowledgements WHERE event_id = $1", caritas[1].id))
    listed = (await service.http.get(f"/v1/clients/{client}/disclosures", headers=as_district("dpo", district_wide=True))).json()
    assert sorted((a["org"], a["status"]) for a in listed["acknowledgements"]) == [(CARITAS, "acknowledged"), (KI, "pending")]
    assert (caritas[1].id, ki[1].id) == (forwarded_event_id(erasure.id, CARITAS), forwarded_event_id(erasure.id, KI))


# ------------------------------------------------------------------ overdue, once, across a restart
async def test_an_overdue_acknowledgement_is_raised_once_after_the_working_days_across_a_restart(start_consent: StartService) -> None:
    # Thursday before Easter 2027 (25 March), noon in Paderborn: Good Friday and Easter Monday are NRW holidays.
    clock = ManualClock(datetime(2027, 3, 25, 11, 0, tzinfo=UTC))
    intake = FakeIntake()
    settings = {"ack_due_working_days": 3, "ack_overdue_interval_s": 0.2}
    async with start_consent(clock=clock, intake=intake, **settings) as svc:
        client = uuid.uuid4()
        consent = await svc.grant(client)
        await _disclose(svc, client, to_org=CARITAS)
        await svc.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=JC)
        _, withdrawn = await _inbox(svc, CARITAS, 2)
        due = (await _ack_row(svc, withdrawn.id))["due_at"]
        # 3 working days after Thu 25 March, skipping Good Friday (26), the weekend and Easter Monday (29):
        # Tue 30, Wed 31 March, Thu 1 April; due at the end of that day in Berlin (summer time since 28 March).
        assert add_working_days(local_date(clock.now()), 3).isoformat() == "2027-04-01"
        assert due == end_of_day(add_working_days(local_date(clock.now()), 3))
        clock.set(datetime(2027, 4, 1, 21, 0, tzinfo=UTC))  # 23:00 in Berlin on the due day: not yet
        await asyncio.sleep(1.0)
        assert await handle(RaiseOverdueAcknowledgements(limit=10), svc.deps) == 0
        assert (await _ack_row(svc, withdrawn.id))["overdue_raised_at"] is None
        clock.set(datetime(2027, 4, 1, 22, 30, tzinfo=UTC))  # 00:30 on 2 April in Berlin: overdue
        await eventually(lambda: svc.pool.fetchval("SELECT overdue_raised_at FROM acknowledgements WHERE event_id = $1", withdrawn.id))
    # Restarted, later still: nothing is raised again.
    clock.advance(days=3)
    async with start_consent(clock=clock, intake=intake, **settings) as svc:
        assert await handle(RaiseOverdueAcknowledgements(limit=10), svc.deps) == 0
        await asyncio.sleep(1.0)  # the worker ran too
        events = await read_topic(svc.bootstrap_servers, svc.topic(topics.CONSENTS), until=3, settle=1.5)
        overdue = [decode(r.headers, r.value) for r in events if decode(r.headers, r.value).type == "lotse.acknowledgement.overdue"]
        assert len(overdue) == 1
        o = overdue[0].data
        assert (o.org, o.kind, o.acknowledged_event_id, o.collecting_org) == (CARITAS, "withdrawal", withdrawn.id, JOBCENTER)
        assert o.due_at == due
        listed = (await svc.http.get(f"/v1/organisations/{CARITAS}/disclosures", headers=as_org(CARITAS))).json()
        assert [a["status"] for a in listed["acknowledgements"]] == ["overdue"]


# ------------------------------------------------------------------ corrections (Art. 19)
async def test_a_correction_reaches_exactly_the_organisations_that_received_the_category(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client, recipients=[CARITAS], categories=["identity", "contact"])
    ki_consent = await service.grant(client, recipients=[KI], categories=["identity", "needs"])
    await service.grant(client, recipients=[JOBCENTER], categories=["contact"])
    await _disclose(service, client, to_org=CARITAS, categories=[DataCategory.IDENTITY, DataCategory.CONTACT])
    await _disclose(service, client, to_org=KI, categories=[DataCategory.NEEDS])
    await _disclose(service, client, to_org=JOBCENTER, categories=[DataCategory.CONTACT])
    # KI's consent is withdrawn: KI no longer gets anything. Jobcenter received contact only.
    await service.http.post(f"/v1/consents/{ki_consent['consent_id']}/withdraw", headers=JC)
    service.intake.calls.clear()
    corrected_identity = Identity(given_name="Olena", family_name="Kovalenko-Schmidt")
    service.intake.data[client] = full_personal_data().model_copy(update={"identity": corrected_identity})
    corrected = ClientCorrected(
        client_id=client, categories=[DataCategory.IDENTITY, DataCategory.NEEDS], corrected_by_org=JOBCENTER, corrected_at=datetime.now(UTC)
    )
    await service.produce(topics.CLIENTS, new_event(corrected, source="/lotse/intake", acting_org=JOBCENTER))

    caritas = await _inbox(service, CARITAS, 2, settle=1.0)
    assert [e.type for e in caritas] == ["lotse.referral.sent", "lotse.client.corrected"]
    correction = caritas[1]
    assert correction.dataschema == "urn:lotse:schema:lotse.client.corrected.partner.v1"
    assert correction.data.categories == [DataCategory.IDENTITY]  # needs were corrected too, but Caritas never got them
    opened = _opened(correction, CARITAS)
    assert opened.personal_data.identity.family_name == "Kovalenko-Schmidt"
    assert opened.personal_data.needs is None and opened.personal_data.contact is None
    assert "Kovalenko" not in correction.data.sealed.jwe
    assert service.intake.calls == [(client, (DataCategory.IDENTITY,), None)]
    # Nobody else: KI's consent was withdrawn, the Jobcenter received neither category.
    assert _types(await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(KI)), until=3, settle=0.5)) == [
        "lotse.referral.sent",
        "lotse.consent.withdrawn",
    ]
    assert [e.type for e in await _inbox(service, JOBCENTER, 1)] == ["lotse.referral.sent"]
    # It is logged as a disclosure.
    made = await read_topic(service.bootstrap_servers, service.topic(topics.DISCLOSURES), until=4, settle=0.5)
    last = decode(made[-1].headers, made[-1].value)
    assert last.type == "lotse.disclosure.made" and last.data.recipient == CARITAS and last.data.categories == [DataCategory.IDENTITY]
    kinds = (await service.http.get(f"/v1/clients/{client}/disclosures", headers=JC)).json()["disclosures"]
    assert sorted((d["recipient"], d["kind"]) for d in kinds) == [
        (CARITAS, "correction"),
        (CARITAS, "referral"),
        (JOBCENTER, "referral"),
        (KI, "referral"),
    ]


# ------------------------------------------------------------------ the listing API
async def test_disclosure_records_by_client_and_by_organisation(service: Service) -> None:
    client = uuid.uuid4()
    mine = await service.grant(client)  # collected by the Jobcenter
    theirs = await service.grant(client, org=KI, recipients=[CARITAS])  # collected by KI
    await _disclose(service, client, to_org=CARITAS)
    rows = await service.pool.fetch("SELECT request_id, consent_id FROM disclosures WHERE client_id = $1", client)
    assert {str(r["consent_id"]) for r in rows} <= {mine["consent_id"], theirs["consent_id"]}

    by_jc = (await service.http.get(f"/v1/clients/{client}/disclosures", headers=JC)).json()
    by_auditor = (await service.http.get(f"/v1/clients/{client}/disclosures", headers=as_district("auditor"))).json()
    assert len(by_auditor["disclosures"]) == 1
    d = by_auditor["disclosures"][0]
    assert (d["recipient"], d["from_org"], d["kind"], d["categories"], d["consent_status"]) == (
        CARITAS,
        JOBCENTER,
        "referral",
        ["identity", "contact"],
        "active",
    )
    collected_by = JOBCENTER if d["consent_id"] == mine["consent_id"] else KI
    assert len(by_jc["disclosures"]) == (1 if collected_by == JOBCENTER else 0)
    # An unrelated member sees nothing, exactly as for a client that does not exist.
    assert (await service.http.get(f"/v1/clients/{client}/disclosures", headers=as_org(DIAKONIE))).json()["disclosures"] == []
    # Per organisation: Caritas sees what it received; another member may not look; the district's dpo may.
    own = (await service.http.get(f"/v1/organisations/{CARITAS}/disclosures", headers=as_org(CARITAS, "dpo"))).json()
    assert [x["request_id"] for x in own["disclosures"]] == [d["request_id"]]
    r = await service.http.get(f"/v1/organisations/{CARITAS}/disclosures", headers=as_org(DIAKONIE))
    assert r.status_code == 403 and r.json()["type"] == "urn:lotse:problem:other-organisation"
    dpo = as_district("dpo", district_wide=True)
    assert len((await service.http.get(f"/v1/organisations/{CARITAS}/disclosures", headers=dpo)).json()["disclosures"]) == 1
    assert (await service.http.get(f"/v1/clients/{client}/disclosures", headers=service_token("intake"))).status_code == 403


# ------------------------------------------------------------------ the HTTP adapter
async def test_the_intake_adapter_renews_its_token_once_and_fails_transiently() -> None:
    seen: list[tuple[str, str]] = []
    answers: dict[str, int] = {}

    class Tokens:
        current = "old"

        async def __call__(self) -> str:
            return self.current

        def invalidate(self) -> None:
            self.current = "new"

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["Authorization"], str(request.url)))
        if request.headers["Authorization"] == "Bearer old":
            return httpx.Response(401)
        status = answers.get(request.url.path.split("/")[4], 200)
        if status == 200:
            return httpx.Response(200, json={"personal_data": {"identity": {"given_name": "Olena", "family_name": "K"}}, "notes": None})
        return httpx.Response(status, json={"type": "urn:lotse:problem:x", "title": "x", "status": status})

    client_id, erased, broken = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    answers[str(erased)], answers[str(broken)] = 410, 503
    adapter = HttpIntakeDisclosures("http://intake.test", transport=httpx.MockTransport(respond), tokens=Tokens())
    content = await adapter.disclosure(client_id, [DataCategory.IDENTITY], uuid.UUID(int=7))
    assert content.personal_data.identity.given_name == "Olena"
    assert [a for a, _ in seen] == ["Bearer old", "Bearer new"]  # a 401: a new token, once
    assert seen[-1][1] == f"http://intake.test/internal/v1/clients/{client_id}/disclosure?category=identity&referral_id={uuid.UUID(int=7)}"
    with pytest.raises(ClientErasedAtIntake):
        await adapter.disclosure(erased, [DataCategory.IDENTITY])
    with pytest.raises(IntakeUnavailable):
        await adapter.disclosure(broken, [DataCategory.IDENTITY])

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    down = HttpIntakeDisclosures("http://intake.test", transport=httpx.MockTransport(unreachable), tokens=Tokens())
    with pytest.raises(TRANSIENT_ERRORS):
        await down.disclosure(client_id, [DataCategory.IDENTITY])
    await adapter.aclose()
    await down.aclose()
