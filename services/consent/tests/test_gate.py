"""Grant → decision → disclosure gate → partner inbox, against the real broker and database."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts import decode, encode, new_event, topics
from contracts.events import DeadlineApproaching, ReferralAccepted, SealedContent
from contracts.sealed import SealedError, unseal
from contracts.vocab import DataCategory, DeadlineKind
from services.consent.adapters.decision_cache import DecisionCache
from services.consent.domain.commands import WithdrawConsent
from services.consent.handlers import EVENT_HANDLERS, handle
from services.consent.views import check_decision
from tests.fixtures import as_org
from tests.kafka_helpers import eventually, read_topic

from .conftest import CARITAS, DIAKONIE, JOBCENTER, KI, PRIVATE_KEYS, Service, disclosure_request

JC = as_org(JOBCENTER)  # the collecting organisation of the consents these tests grant


def _types(records) -> list[str]:
    return [decode(r.headers, r.value).type for r in records]


async def _outcomes(svc: Service, client_id: uuid.UUID) -> list[str]:
    rows = await svc.deps.db.pool.fetch("SELECT outcome FROM disclosures WHERE client_id = $1 ORDER BY decided_at", client_id)
    return [r["outcome"] for r in rows]


async def test_grant_decide_disclose_delivers_exactly_the_consented_categories(service: Service, caplog) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client, categories=["identity", "contact", "needs"])

    decision = await service.decision(client, CARITAS, "referral", ["identity", "contact"])
    assert decision == {"allowed": True, "consent_id": consent["consent_id"], "reason": decision["reason"], "missing_categories": []}
    assert decision["reason"].startswith("granted")

    # The request names only ids and categories; intake (wrongly) returns every category it has, health included.
    service.intake.leaky = True
    request = disclosure_request(client, to_org=CARITAS, categories=[DataCategory.IDENTITY, DataCategory.CONTACT])
    assert "Kovalenko" not in encode(request).value.decode()  # nothing personal on the disclosure-request topic
    caplog.set_level(logging.DEBUG)
    await service.produce(topics.DISCLOSURE_REQUESTS, request)

    [rec] = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(CARITAS)))
    env = decode(rec.headers, rec.value)
    assert env.type == "lotse.referral.sent"
    assert env.dataschema == "urn:lotse:schema:lotse.referral.sent.partner.v2"
    assert rec.key == str(client).encode()
    assert env.data.categories == [DataCategory.IDENTITY, DataCategory.CONTACT]
    assert str(env.data.consent_id) == consent["consent_id"]
    # The gate fetched exactly the consented categories, with the referral's notes (once: in its batch's prepare).
    assert service.intake.fetched() == [(client, (DataCategory.IDENTITY, DataCategory.CONTACT), request.data.referral_id)]
    # On the wire: ciphertext only, sealed to Caritas' registered key, named in the JWE header.
    for clear in ("Kovalenko", "Olena", "olena@example.org", "Diabetes", "Sprachkurs"):
        assert clear not in rec.value.decode()
    assert env.data.sealed.kid == f"{CARITAS}-enc-1"
    # Caritas opens it with its private key: exactly identity and contact, and the notes.
    opened = SealedContent.model_validate(unseal(env.data.sealed.jwe, [PRIVATE_KEYS[CARITAS]["enc"]]))
    assert opened.personal_data.categories() == [DataCategory.IDENTITY, DataCategory.CONTACT]
    assert opened.personal_data.identity.family_name == "Kovalenko"
    assert opened.personal_data.health is None and opened.personal_data.needs is None
    assert opened.notes.reason == "Sprachkurs gesucht"
    # Another organisation's key cannot open it, not even under Caritas' key id.
    with pytest.raises(SealedError):
        unseal(env.data.sealed.jwe, [PRIVATE_KEYS[KI]["enc"]])
    with pytest.raises(SealedError):
        unseal(env.data.sealed.jwe, [PRIVATE_KEYS[KI]["enc"] | {"kid": f"{CARITAS}-enc-1"}])

    made = await read_topic(service.bootstrap_servers, service.topic(topics.DISCLOSURES))
    [made_env] = [decode(r.headers, r.value) for r in made]
    assert made_env.type == "lotse.disclosure.made"
    assert made_env.data.payload_sha256 == hashlib.sha256(rec.value).hexdigest()
    assert made_env.data.recipient == CARITAS
    assert made_env.data.categories == [DataCategory.IDENTITY, DataCategory.CONTACT]
    assert "Kovalenko" not in made[0].value.decode()  # no personal data on the internal topic

    granted = await read_topic(service.bootstrap_servers, service.topic(topics.CONSENTS))
    assert _types(granted) == ["lotse.consent.granted"]

    # The consent now shows where data went.
    r = await service.http.get(f"/v1/clients/{client}/consents", headers=JC)
    assert [c["disclosed_to"] for c in r.json()] == [[CARITAS]]
    # Nothing personal was logged, and nothing personal is stored by the consent service.
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "disclosure made" in logged
    for clear in ("Kovalenko", "Olena", "olena@example.org", "Diabetes", "Sprachkurs"):
        assert clear not in logged
    dump = await service.deps.db.pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM (SELECT row_to_json(d)::text AS t FROM disclosures d "
        "UNION ALL SELECT row_to_json(c)::text FROM consents c) x"
    )
    assert "Kovalenko" not in dump and "Olena" not in dump


async def test_missing_category_blocks_and_names_it(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client, categories=["identity", "contact"])
    d = await service.decision(client, CARITAS, "referral", ["identity", "health"])
    assert d["allowed"] is False and d["missing_categories"] == ["health"] and "health" in d["reason"]

    await service.produce(topics.DISCLOSURE_REQUESTS, disclosure_request(client, categories=[DataCategory.IDENTITY, DataCategory.HEALTH]))
    [rec] = await read_topic(service.bootstrap_servers, service.topic(topics.DISCLOSURES))
    env = decode(rec.headers, rec.value)
    assert env.type == "lotse.disclosure.blocked"
    assert env.data.missing_categories == [DataCategory.HEALTH]
    assert await _outcomes(service, client) == ["blocked"]


async def test_withdrawal_after_intakes_check_blocks_the_disclosure(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client)
    # Intake checks: allowed.
    assert (await service.decision(client, CARITAS, "referral", ["identity"]))["allowed"] is True
    # The client withdraws before the gate sees the request.
    r = await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=as_org(KI))
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
    d = await service.decision(client, CARITAS, "referral", ["identity"])
    assert d["allowed"] is False and d["reason"].startswith("withdrawn") and d["consent_id"] == consent["consent_id"]

    await service.produce(topics.DISCLOSURE_REQUESTS, disclosure_request(client, to_org=CARITAS))
    [rec] = await read_topic(service.bootstrap_servers, service.topic(topics.DISCLOSURES))
    env = decode(rec.headers, rec.value)
    assert env.type == "lotse.disclosure.blocked"
    assert env.data.reason.startswith("withdrawn")
    assert await _outcomes(service, client) == ["blocked"]
    # Nothing was written for the partner (its topics were never even needed).
    assert await service.deps.db.pool.fetchval("SELECT count(*) FROM outbox WHERE topic LIKE 'partner.%'") == 0
    assert not service.deps.partner_topics.ready(CARITAS)


async def test_withdrawal_is_forwarded_to_partners_that_received_data(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client, recipients=[CARITAS, KI])
    await service.produce(topics.DISCLOSURE_REQUESTS, disclosure_request(client, to_org=CARITAS))
    await eventually(lambda: _outcomes(service, client))

    r = await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=as_org(JOBCENTER))
    assert r.json()["disclosed_to"] == [CARITAS]
    # Withdrawing again changes nothing and emits nothing.
    again = await service.http.post(f"/v1/consents/{consent['consent_id']}/withdraw", headers=as_org(JOBCENTER))
    assert again.status_code == 200 and again.json()["withdrawn_at"] == r.json()["withdrawn_at"]

    inbox = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(CARITAS)), until=2, settle=1.0)
    assert _types(inbox) == ["lotse.referral.sent", "lotse.consent.withdrawn"]
    withdrawn = decode(inbox[1].headers, inbox[1].value)
    assert withdrawn.data.disclosed_to == [CARITAS] and withdrawn.source == "/lotse/consent"
    consents = await read_topic(service.bootstrap_servers, service.topic(topics.CONSENTS), until=2, settle=0.5)
    assert _types(consents) == ["lotse.consent.granted", "lotse.consent.withdrawn"]
    # KI never received data, so it is not told.
    assert await service.deps.db.pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topics.partner_inbox(KI)) == 0
    assert not service.deps.partner_topics.ready(KI)


async def test_redelivered_and_resent_requests_reach_the_partner_once(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client)
    request = disclosure_request(client)
    # The same record twice (a redelivery after a crash before the offset commit) ...
    await service.produce(topics.DISCLOSURE_REQUESTS, request)
    await service.produce(topics.DISCLOSURE_REQUESTS, request)
    # ... and the same request re-sent by intake as a new event.
    resent = disclosure_request(client, request_id=request.data.request_id)
    await service.produce(topics.DISCLOSURE_REQUESTS, resent)

    async def all_three_consumed() -> bool:
        n = await service.deps.db.pool.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = ANY($1::uuid[])", [request.id, resent.id]
        )
        return n == 2

    await eventually(all_three_consumed)
    inbox = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(CARITAS)), until=2, timeout=5, settle=1.0)
    assert len(inbox) == 1
    made = await read_topic(service.bootstrap_servers, service.topic(topics.DISCLOSURES), until=2, timeout=3)
    assert _types(made) == ["lotse.disclosure.made"]


async def test_partners_get_answers_deadlines_but_not_others_events(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client, recipients=[CARITAS, DIAKONIE])
    request = disclosure_request(client, to_org=CARITAS)
    await service.produce(topics.DISCLOSURE_REQUESTS, request)
    await eventually(lambda: _outcomes(service, client))

    now = datetime.now(UTC)
    answer = ReferralAccepted(client_id=client, referral_id=request.data.referral_id, to_org=CARITAS, from_org=JOBCENTER, accepted_at=now)
    await service.produce(topics.REFERRALS, new_event(answer, source="/lotse/intake", acting_org=CARITAS))
    deadline = DeadlineApproaching(
        client_id=client,
        deadline_id=uuid.uuid4(),
        kind=DeadlineKind.RESIDENCE_TITLE_EXPIRY,
        due_at=now + timedelta(days=14),
        responsible_org=JOBCENTER,
        lead_time_days=14,
        days_left=14,
    )
    deadline_env = new_event(deadline, source="/lotse/intake", acting_org=JOBCENTER)
    await service.produce(topics.DEADLINES, deadline_env)

    # The sender gets the answer to its referral; the partner serving the client gets the deadline.
    [to_sender] = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(JOBCENTER)))
    assert decode(to_sender.headers, to_sender.value).type == "lotse.referral.accepted"
    inbox = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(CARITAS)), until=2, settle=1.0)
    assert _types(inbox) == ["lotse.referral.sent", "lotse.deadline.approaching"]
    forwarded = decode(inbox[1].headers, inbox[1].value)
    assert forwarded.data == deadline and forwarded.id != deadline_env.id
    # Diakonie is a named recipient but never received data: it does not serve the client.
    assert await service.deps.db.pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topics.partner_inbox(DIAKONIE)) == 0
    assert not service.deps.partner_topics.ready(DIAKONIE)


async def test_withdrawal_on_one_replica_is_seen_by_anothers_cache_at_once(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client)
    other_replica = replace(service.deps, cache=DecisionCache(100), reader=None)
    args = dict(client_id=client, recipient=CARITAS, purpose="referral", categories=[DataCategory.IDENTITY])
    assert (await check_decision(other_replica, **args)).allowed
    assert (await check_decision(other_replica, **args)).allowed
    assert other_replica.cache is not None and other_replica.cache.hits == 1  # the second answer came from the cache

    await handle(WithdrawConsent(uuid.UUID(consent["consent_id"]), by_org=JOBCENTER), service.deps)
    after = await check_decision(other_replica, **args)
    assert not after.allowed and after.reason.startswith("withdrawn")


async def test_withdrawal_waits_for_a_disclosure_in_progress_and_names_its_recipient(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client)
    request = disclosure_request(client, to_org=CARITAS)
    async with service.deps.db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        gate = EVENT_HANDLERS["lotse.disclosure.requested"]
        await gate(request, conn, service.deps)  # the gate decided "allowed" and holds its locks
        withdrawal = asyncio.create_task(handle(WithdrawConsent(uuid.UUID(consent["consent_id"]), by_org=KI), service.deps))
        await asyncio.sleep(0.5)
        assert not withdrawal.done(), "a withdrawal must wait for the disclosure that is being committed"
        await tx.commit()
    withdrawn = await withdrawal
    # It committed after the disclosure, so it knows the partner received data and tells it.
    assert withdrawn.disclosed_to == (CARITAS,)
    inbox = await read_topic(service.bootstrap_servers, service.topic(topics.partner_inbox(CARITAS)), until=2)
    assert _types(inbox) == ["lotse.referral.sent", "lotse.consent.withdrawn"]
