"""Clients and the closed referral loop against the real broker and database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

from contracts import new_event, topics
from contracts.events import DisclosureBlocked, DisclosureMade, ReferralAccepted, ReferralCompleted, SealedContent
from contracts.topics import dlq, partner_outbox
from contracts.vocab import DataCategory, Purpose
from lotse_kit.context import ON_BEHALF_OF
from services.intake.adapters.consent import HttpConsentDecisions
from tests.fixtures import produce_events, service_token
from tests.kafka_helpers import eventually, read_topic

from .conftest import CARITAS, JOBCENTER, KI, KIM, client_body, events, h, metric

REFERRALS = "lotse_intake_referrals_total"
PERSONAL = ("Olena", "Kovalenko", "1988-04-12", "olena.kovalenko", "5251 123456")


async def register(http, org: str = JOBCENTER, **over) -> str:
    resp = await http.post("/v1/clients", json=client_body(**over), headers=h(org))
    assert resp.status_code == 201, resp.text
    return resp.json()["client_id"]


async def refer(http, client_id: str, need: str = "interpreter") -> dict:
    """The Jobcenter refers the client for `need`, sharing identity only (consent must have been granted)."""
    resp = await http.post(f"/v1/clients/{client_id}/referrals", headers=h(JOBCENTER), json={"need": need, "categories": ["identity"]})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def referral_status(app, referral_id: str) -> str:
    return await app.state.runtime.db.pool.fetchval("SELECT status FROM referrals WHERE referral_id = $1", uuid.UUID(referral_id))


async def partner_answer(kafka_bootstrap: str, topic_namespace: str, org: str, data, source_org: str | None = None) -> None:
    await produce_events(kafka_bootstrap, topic_namespace + partner_outbox(org), new_event(data, source=f"/partners/{source_org or org}"))


async def test_full_referral_loop_with_a_partner_answering_on_its_outbox(make_intake, consent, kafka_bootstrap, topic_namespace):
    async with make_intake() as (app, http):
        counted = {o: await metric(http, REFERRALS, outcome=o) for o in ("sent", "accepted", "completed")}
        client_id = await register(http)
        cid = uuid.UUID(client_id)
        # Registration announces the client without personal data and registers the residence expiry deadline.
        [registered] = await events(kafka_bootstrap, topic_namespace + topics.CLIENTS)
        assert registered.type == "lotse.client.registered" and registered.subject == client_id
        assert registered.data.residence.valid_until == date(2027, 3, 4)
        raw = (await read_topic(kafka_bootstrap, topic_namespace + topics.CLIENTS))[0].value.decode()
        assert not any(p in raw for p in PERSONAL)

        consent.grant(cid, KI, Purpose.REFERRAL, [DataCategory.IDENTITY, DataCategory.CONTACT])
        # No to_org/service: the process plan for "interpreter" routes to the KI's interpreter pool, 3 working days.
        resp = await http.post(
            f"/v1/clients/{client_id}/referrals",
            headers=h(JOBCENTER),
            json={
                "need": "interpreter",
                "categories": ["identity", "contact"],
                "reason": "Termin beim Jobcenter",
                "free_text": "Ukrainisch",
            },
        )
        assert resp.status_code == 201, resp.text
        ref = resp.json()
        rid = ref["referral_id"]
        assert (ref["to_org"], ref["service"], ref["status"]) == (KI, "sprachmittlerpool", "sent")
        assert ref["answer_due"] == "2026-03-05"  # Monday 2 March + 3 working days
        assert consent.calls[-1] == (cid, KI, Purpose.REFERRAL, [DataCategory.IDENTITY, DataCategory.CONTACT])

        [sent] = await events(kafka_bootstrap, topic_namespace + topics.REFERRALS)
        assert sent.type == "lotse.referral.sent" and str(sent.data.referral_id) == rid and sent.acting_org == JOBCENTER
        # The disclosure request names ids, purpose, recipient and categories only (v2): no personal data, no notes.
        [disclosure] = await events(kafka_bootstrap, topic_namespace + topics.DISCLOSURE_REQUESTS)
        assert disclosure.dataschema == "urn:lotse:schema:lotse.disclosure.requested.v2"
        assert disclosure.data.categories == [DataCategory.IDENTITY, DataCategory.CONTACT]
        assert (str(disclosure.data.referral_id), disclosure.data.to_org, disclosure.data.purpose) == (rid, KI, Purpose.REFERRAL)
        raw = (await read_topic(kafka_bootstrap, topic_namespace + topics.DISCLOSURE_REQUESTS))[0].value.decode()
        assert not any(p in raw for p in (*PERSONAL, "Termin beim Jobcenter", "Ukrainisch")), raw
        # The consent gate fetches exactly the requested categories and the referral's notes from the internal API.
        resp = await http.get(
            f"/internal/v1/clients/{client_id}/disclosure",
            params=[("category", "identity"), ("category", "contact"), ("referral_id", rid)],
            headers=service_token("consent"),
        )
        assert resp.status_code == 200, resp.text
        content = SealedContent.model_validate(resp.json())
        pd = content.personal_data
        assert pd.identity.family_name == "Kovalenko" and pd.contact.email == "olena.kovalenko@mail.example"
        assert pd.residence_status is None and pd.needs is None and pd.health is None  # only consented categories
        assert content.notes.free_text == "Ukrainisch" and content.notes.reason == "Termin beim Jobcenter"

        # The KI's own system answers on partner.ki-kreis-paderborn.outbox.v1.
        now = datetime.now(UTC)
        await partner_answer(
            kafka_bootstrap,
            topic_namespace,
            KI,
            ReferralAccepted(
                client_id=cid, referral_id=uuid.UUID(rid), to_org=KI, accepted_at=now, appointment_at=now + timedelta(days=20)
            ),
        )
        await eventually(lambda: _is(app, rid, "accepted"))
        await partner_answer(
            kafka_bootstrap,
            topic_namespace,
            KI,
            ReferralCompleted(
                client_id=cid, referral_id=uuid.UUID(rid), to_org=KI, completed_at=now + timedelta(days=21), outcome="Dolmetscherin gebucht"
            ),
        )
        await eventually(lambda: _is(app, rid, "completed"))

        answers = await events(kafka_bootstrap, topic_namespace + topics.REFERRALS, until=3)
        assert [e.type for e in answers] == ["lotse.referral.sent", "lotse.referral.accepted", "lotse.referral.completed"]
        assert answers[1].data.from_org == JOBCENTER and answers[1].acting_org == KI and answers[1].source == "/lotse/intake"

        # The answer deadline was registered with the referral and resolved by the answer; the appointment deadline by completion.
        dl = await events(
            kafka_bootstrap, topic_namespace + topics.DEADLINES, until=lambda es: sum(e.type == "lotse.deadline.resolved" for e in es) >= 2
        )
        kinds = [(e.type, e.data.kind.value) for e in dl]
        assert ("lotse.deadline.registered", "residence_title_expiry") in kinds
        assert ("lotse.deadline.registered", "referral_answer_due") in kinds
        assert ("lotse.deadline.resolved", "referral_answer_due") in kinds
        assert ("lotse.deadline.resolved", "appointment") in kinds
        assert {o: await metric(http, REFERRALS, outcome=o) - n for o, n in counted.items()} == {"sent": 1, "accepted": 1, "completed": 1}

        # HTTP on a completed referral: an illegal transition.
        resp = await http.post(f"/v1/referrals/{rid}/decline", headers=h(KI), json={"reason": "no_capacity"})
        assert resp.status_code == 409 and resp.headers["content-type"] == "application/problem+json"


async def _is(app, rid: str, status: str) -> bool:
    return await referral_status(app, rid) == status


async def test_referral_without_consent_is_409_and_nothing_is_sent(make_intake, consent):
    async with make_intake() as (app, http):
        refused, sent = await metric(http, REFERRALS, outcome="refused_no_consent"), await metric(http, REFERRALS, outcome="sent")
        client_id = await register(http)
        consent.grant(client_id, CARITAS, Purpose.REFERRAL, [DataCategory.IDENTITY])
        resp = await http.post(
            f"/v1/clients/{client_id}/referrals",
            headers=h(JOBCENTER),
            json={"need": "integration_course", "categories": ["identity", "residence_status"]},
        )
        assert resp.status_code == 409
        body = resp.json()
        assert resp.headers["content-type"] == "application/problem+json"
        assert body["type"] == "urn:lotse:problem:consent-required"
        assert body["recipient"] == CARITAS and body["purpose"] == "referral" and body["missing_categories"] == ["residence_status"]
        assert "residence_status" in body["detail"]
        # No consent at all for another recipient.
        resp = await http.post(
            f"/v1/clients/{client_id}/referrals",
            headers=h(JOBCENTER),
            json={"to_org": KIM, "service": "case-management", "categories": ["identity"]},
        )
        assert resp.status_code == 409 and resp.json()["recipient"] == KIM
        pool = app.state.runtime.db.pool
        assert await pool.fetchval("SELECT count(*) FROM referrals") == 0
        assert (
            await pool.fetchval("SELECT count(*) FROM outbox WHERE event_type IN ('lotse.referral.sent', 'lotse.disclosure.requested')")
            == 0
        )
        assert await metric(http, REFERRALS, outcome="refused_no_consent") == refused + 2
        assert await metric(http, REFERRALS, outcome="sent") == sent


async def test_referral_while_the_consent_service_is_unreachable_is_503_with_retry_after_and_nothing_is_sent(make_intake):
    unreachable = HttpConsentDecisions("http://127.0.0.1:9", timeout_s=0.5)  # nothing listens on the discard port
    async with make_intake(consent=unreachable) as (app, http):
        client_id = await register(http)
        resp = await http.post(
            f"/v1/clients/{client_id}/referrals", headers=h(JOBCENTER), json={"need": "integration_course", "categories": ["identity"]}
        )
        assert resp.status_code == 503 and resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["Retry-After"] == "5"
        assert resp.json()["type"] == "urn:lotse:problem:consent-unavailable" and "Nothing was sent" in resp.json()["detail"]
        pool = app.state.runtime.db.pool
        assert await pool.fetchval("SELECT count(*) FROM referrals") == 0
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'lotse.disclosure.requested'") == 0


async def test_answers_from_the_wrong_organisation_are_refused(make_intake, consent, kafka_bootstrap, topic_namespace):
    async with make_intake() as (app, http):
        client_id = await register(http)
        cid = uuid.UUID(client_id)
        consent.grant(cid, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        rid = (await refer(http, client_id))["referral_id"]
        # HTTP: the sender cannot accept its own referral (403); for another member it does not exist (404).
        resp = await http.post(f"/v1/referrals/{rid}/accept", headers=h(JOBCENTER))
        assert resp.status_code == 403 and resp.json()["type"] == "urn:lotse:problem:forbidden", resp.text
        resp = await http.post(f"/v1/referrals/{rid}/accept", headers=h(CARITAS))
        assert resp.status_code == 404 and resp.json()["detail"] == f"no referral {rid}", resp.text
        resp = await http.post(f"/v1/referrals/{rid}/revoke", headers=h(KI))
        assert resp.status_code == 403
        # Kafka: Caritas answers on its own outbox in the KI's name, and again as itself: both dead-lettered.
        now = datetime.now(UTC)
        await partner_answer(
            kafka_bootstrap,
            topic_namespace,
            CARITAS,
            ReferralAccepted(client_id=cid, referral_id=uuid.UUID(rid), to_org=KI, accepted_at=now),
        )
        await partner_answer(
            kafka_bootstrap,
            topic_namespace,
            CARITAS,
            ReferralAccepted(client_id=cid, referral_id=uuid.UUID(rid), to_org=CARITAS, accepted_at=now),
        )
        # ... and on its own outbox, posing as the KI through a forged ce_source.
        await partner_answer(
            kafka_bootstrap,
            topic_namespace,
            CARITAS,
            ReferralAccepted(client_id=cid, referral_id=uuid.UUID(rid), to_org=KI, accepted_at=now),
            source_org=KI,
        )
        dead = await read_topic(kafka_bootstrap, dlq(topic_namespace + partner_outbox(CARITAS)), until=3)
        reasons = [dict(r.headers)["lotse_dlq_reason"].decode() for r in dead]
        assert [dict(r.headers)["lotse_dlq_error_kind"].decode() for r in dead] == ["rejected", "rejected", "rejected"]
        assert "cannot answer in the name of ki-kreis-paderborn" in reasons[0]
        assert "only the receiving organisation ki-kreis-paderborn" in reasons[1]
        assert "arrived on" in reasons[2] and "partner.caritas-paderborn.outbox.v1" in reasons[2]
        assert await referral_status(app, rid) == "sent"
        # A completion before acceptance is an illegal transition: dead-lettered too.
        await partner_answer(
            kafka_bootstrap, topic_namespace, KI, ReferralCompleted(client_id=cid, referral_id=uuid.UUID(rid), to_org=KI, completed_at=now)
        )
        dead = await read_topic(kafka_bootstrap, dlq(topic_namespace + partner_outbox(KI)))
        assert "cannot be completed" in dict(dead[0].headers)["lotse_dlq_reason"].decode()
        # The receiver declines over HTTP; "other" needs a text.
        resp = await http.post(f"/v1/referrals/{rid}/decline", headers=h(KI), json={"reason": "other"})
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "reason_text"
        resp = await http.post(f"/v1/referrals/{rid}/decline", headers=h(KI), json={"reason": "client_unreachable"})
        assert resp.status_code == 200 and resp.json()["status"] == "declined" and resp.json()["decline_reason"] == "client_unreachable"


async def test_blocked_disclosure_marks_the_referral_blocked(make_intake, consent, kafka_bootstrap, topic_namespace):
    async with make_intake() as (app, http):
        client_id = await register(http)
        cid = uuid.UUID(client_id)
        consent.grant(cid, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        ref = await refer(http, client_id)
        blocked = DisclosureBlocked(
            client_id=cid,
            request_id=uuid.uuid4(),
            referral_id=uuid.UUID(ref["referral_id"]),
            recipient=KI,
            purpose=Purpose.REFERRAL,
            categories=[DataCategory.IDENTITY],
            reason="consent withdrawn",
            blocked_at=datetime.now(UTC),
        )
        await produce_events(kafka_bootstrap, topic_namespace + topics.DISCLOSURES, new_event(blocked, source="/lotse/consent"))
        await eventually(lambda: _is(app, ref["referral_id"], "blocked"))
        row = await app.state.runtime.db.pool.fetchrow("SELECT status FROM deadlines WHERE referral_id = $1", uuid.UUID(ref["referral_id"]))
        assert row["status"] == "resolved"
        resp = await http.post(f"/v1/referrals/{ref['referral_id']}/accept", headers=h(KI))
        assert resp.status_code == 409


async def test_disclosure_made_is_recorded_on_the_referral_and_a_wrong_recipient_is_dead_lettered(
    make_intake, consent, kafka_bootstrap, topic_namespace
):
    async with make_intake() as (app, http):
        client_id = await register(http)
        cid = uuid.UUID(client_id)
        consent.grant(cid, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        ref = await refer(http, client_id)
        rid = uuid.UUID(ref["referral_id"])
        pool = app.state.runtime.db.pool

        def made(recipient: str, consent_id: uuid.UUID) -> DisclosureMade:
            return DisclosureMade(
                client_id=cid,
                request_id=uuid.uuid4(),
                referral_id=rid,
                recipient=recipient,
                purpose=Purpose.REFERRAL,
                categories=[DataCategory.IDENTITY],
                consent_id=consent_id,
                payload_sha256="a" * 64,
                disclosed_at=datetime.now(UTC),
            )

        # Naming another recipient than the referral's: dead-lettered, and the referral is left as it was.
        await produce_events(
            kafka_bootstrap, topic_namespace + topics.DISCLOSURES, new_event(made(CARITAS, uuid.uuid4()), source="/lotse/consent")
        )
        dead = await read_topic(kafka_bootstrap, dlq(topic_namespace + topics.DISCLOSURES))
        assert dict(dead[0].headers)["lotse_dlq_error_kind"].decode() == "rejected"
        assert f"goes to {KI}, not {CARITAS}" in dict(dead[0].headers)["lotse_dlq_reason"].decode()
        assert (await pool.fetchrow("SELECT disclosed_at FROM referrals WHERE referral_id = $1", rid))["disclosed_at"] is None
        # The right recipient: when and under which consent it was disclosed, status unchanged.
        consent_id = uuid.uuid4()
        await produce_events(
            kafka_bootstrap, topic_namespace + topics.DISCLOSURES, new_event(made(KI, consent_id), source="/lotse/consent")
        )

        async def recorded() -> bool:
            row = await pool.fetchrow("SELECT disclosed_at, consent_id, status FROM referrals WHERE referral_id = $1", rid)
            return row["disclosed_at"] is not None and row["consent_id"] == consent_id and row["status"] == "sent"

        await eventually(recorded)


async def test_validation_names_the_field(make_intake, consent):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        cases = [
            ({"to_org": "nobody-here", "service": "x", "categories": ["identity"]}, "to_org"),
            ({"to_org": KI, "service": "cooking", "categories": ["identity"]}, "service"),
            ({"need": "flying", "categories": ["identity"]}, "need"),
            ({"need": "housing", "categories": ["identity"]}, "to_org"),  # no process plan for housing
            ({"to_org": KI, "service": "sprachmittlerpool", "need": "job_placement", "categories": ["identity"]}, "need"),
            ({"need": "interpreter", "categories": ["health"]}, "categories"),  # nothing recorded
            ({"need": "interpreter", "categories": []}, "categories"),
            ({"to_org": JOBCENTER, "service": "markt-und-integration", "categories": ["identity"]}, "to_org"),  # itself
        ]
        for body, field in cases:
            resp = await http.post(f"/v1/clients/{client_id}/referrals", headers=h(JOBCENTER), json=body)
            assert resp.status_code == 422, (body, resp.text)
            assert resp.json()["errors"][0]["field"] == field, (body, resp.json())
        resp = await http.post("/v1/clients", headers=h(JOBCENTER), json=client_body(needs=["teleportation"]))
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "needs.0"
        resp = await http.post("/v1/clients", headers=h(JOBCENTER), json=client_body(shoe_size=44))
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "shoe_size"
        resp = await http.post(f"/v1/clients/{client_id}/handover", headers=h(JOBCENTER), json={"to_org": "unknown-org"})
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "to_org"
        resp = await http.post("/v1/clients", headers=h("not-a-member"), json=client_body())
        assert resp.status_code == 403
        resp = await http.post("/v1/clients", json=client_body())
        assert resp.status_code == 401  # no token: nobody acts
        assert consent.calls == []  # nothing invalid reached the consent service


async def test_handover_moves_open_referrals_and_deadlines(make_intake, consent, kafka_bootstrap, topic_namespace):
    async with make_intake() as (_app, http):
        client_id = await register(http, legal_regime="asylblg")
        consent.grant(client_id, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        rid = (await refer(http, client_id))["referral_id"]
        resp = await http.post(
            f"/v1/clients/{client_id}/handover",
            headers=h(JOBCENTER),
            json={"to_org": KIM, "to_regime": "sgb_ii", "reason": "Rechtskreiswechsel"},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["open_referral_ids"] == [rid] and len(resp.json()["open_deadline_ids"]) == 1  # residence expiry
        evs = await events(
            kafka_bootstrap, topic_namespace + topics.CLIENTS, until=lambda es: any(e.type == "lotse.case.handed_over" for e in es)
        )
        ho = next(e for e in evs if e.type == "lotse.case.handed_over")
        assert (ho.data.from_org, ho.data.to_org, ho.data.from_regime.value, ho.data.to_regime.value) == (
            JOBCENTER,
            KIM,
            "asylblg",
            "sgb_ii",
        )
        # The new organisation now works the case; the registering one still sees what it recorded, but no longer works it.
        assert (await http.get(f"/v1/clients/{client_id}", headers=h(JOBCENTER))).json()["view"] == "all"
        assert (await http.patch(f"/v1/clients/{client_id}", headers=h(JOBCENTER), json={"needs": []})).status_code == 403
        case = (await http.get(f"/v1/clients/{client_id}", headers=h(KIM))).json()
        assert case["responsible_org"] == KIM and case["referrals"][0]["from_org"] == KIM
        assert {d["kind"]: d["responsible_org"] for d in case["deadlines"]} == {"residence_title_expiry": KIM, "referral_answer_due": KI}
        # The referral moved with the case: the Jobcenter is no longer its party, so it does not exist for it.
        assert (await http.post(f"/v1/referrals/{rid}/revoke", headers=h(JOBCENTER))).status_code == 404
        assert (await http.post(f"/v1/referrals/{rid}/revoke", headers=h(KIM), json={"reason": "nicht mehr nötig"})).status_code == 200


async def test_worklists_and_overdue(make_intake, consent, clock):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        consent.grant(client_id, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        consent.grant(client_id, CARITAS, Purpose.REFERRAL, [DataCategory.IDENTITY])
        r1 = await refer(http, client_id)
        r2 = await refer(http, client_id, "integration_course")
        assert r2["answer_due"] == "2026-03-09"  # 5 working days
        await http.post(f"/v1/referrals/{r2['referral_id']}/accept", headers=h(CARITAS))

        def ids(resp) -> list[str]:
            assert resp.status_code == 200, resp.text
            return [i["referral_id"] for i in resp.json()["items"]]

        assert ids(await http.get("/v1/referrals", params={"view": "sent"}, headers=h(JOBCENTER))) == [r1["referral_id"], r2["referral_id"]]
        assert ids(await http.get("/v1/referrals", params={"view": "received"}, headers=h(KI))) == [r1["referral_id"]]
        assert ids(await http.get("/v1/referrals", params={"view": "received", "status": "accepted"}, headers=h(CARITAS))) == [
            r2["referral_id"]
        ]
        assert ids(await http.get("/v1/referrals", params={"view": "overdue"}, headers=h(JOBCENTER))) == []
        clock.advance(timedelta(days=4))  # Friday 6 March: the KI's answer (due Thursday) is overdue; the accepted one is not
        assert ids(await http.get("/v1/referrals", params={"view": "overdue"}, headers=h(JOBCENTER))) == [r1["referral_id"]]
        assert ids(await http.get("/v1/referrals", params={"view": "overdue"}, headers=h(KI))) == [r1["referral_id"]]
        assert (await http.get("/v1/referrals", params={"org": KI}, headers=h(JOBCENTER))).status_code == 403
        assert (await http.get("/v1/referrals", params={"status": "lost"}, headers=h(JOBCENTER))).status_code == 422


def notifications_for(org: str) -> dict[str, str]:
    """The notifications service's own token, asking on behalf of `org` (the only caller of the contact API)."""
    return service_token("notifications") | {ON_BEHALF_OF: org}


async def test_contact_endpoint_is_consent_gated(make_intake, consent):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        # Only the notifications service asks; an organisation's own caseworker is refused.
        resp = await http.get(f"/v1/clients/{client_id}/contact", headers=h(KI))
        assert resp.status_code == 403 and resp.json()["type"] == "urn:lotse:problem:role-required"
        resp = await http.get(f"/v1/clients/{client_id}/contact", headers=notifications_for(KI))
        assert resp.status_code == 409
        assert resp.json()["missing_categories"] == ["contact"] and resp.json()["purpose"] == "contact_for_notifications"
        consent.grant(client_id, KI, Purpose.CONTACT_FOR_NOTIFICATIONS, [DataCategory.CONTACT])
        resp = await http.get(f"/v1/clients/{client_id}/contact", headers=notifications_for(KI))
        assert resp.status_code == 200
        assert resp.json() == {
            "client_id": client_id,
            "preferred_language": "uk",
            "languages": ["uk", "ru", "de"],
            "email": "olena.kovalenko@mail.example",
            "phone": "+49 5251 123456",
        }
        # Consent for the KI does not open the contact to Caritas.
        assert (await http.get(f"/v1/clients/{client_id}/contact", headers=notifications_for(CARITAS))).status_code == 409
        assert (await http.get(f"/v1/clients/{uuid.uuid4()}/contact", headers=notifications_for(KI))).status_code == 404
        # The organisation asked for must be a member; the audit service's token may not ask at all.
        assert (await http.get(f"/v1/clients/{client_id}/contact", headers=notifications_for("not-a-member"))).status_code == 403
        audit = service_token("audit") | {ON_BEHALF_OF: KI}
        assert (await http.get(f"/v1/clients/{client_id}/contact", headers=audit)).status_code == 403


async def test_update_client_and_residence_title_change(make_intake, kafka_bootstrap, topic_namespace):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        resp = await http.patch(
            f"/v1/clients/{client_id}",
            headers=h(JOBCENTER),
            json={
                "needs": ["job_placement"],
                "residence_title": "aufenthg_104c",
                "residence_valid_from": "2026-03-01",
                "email": "neu@mail.example",
            },
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["changed"] == ["email", "needs", "residence_title", "residence_valid_until"]
        evs = await events(kafka_bootstrap, topic_namespace + topics.CLIENTS, until=2)
        upd = evs[1]
        assert upd.type == "lotse.client.updated" and upd.data.residence_valid_until == date(2027, 8, 31)
        assert "neu@mail.example" not in json.dumps(upd.data.model_dump(mode="json"))
        case = (await http.get(f"/v1/clients/{client_id}", headers=h(JOBCENTER))).json()
        by_kind = {d["kind"]: d for d in case["deadlines"]}
        assert by_kind["residence_title_expiry"]["status"] == "resolved"
        chancen = by_kind["chancen_aufenthalt_end"]
        assert chancen["status"] == "open" and chancen["last_day"] == "2027-08-31" and "§25b" in chancen["legal_note"]
        assert case["email"] == "neu@mail.example"
        # The KI does not see the client at all: for it, the client does not exist.
        assert (await http.patch(f"/v1/clients/{client_id}", headers=h(KI), json={"needs": []})).status_code == 404
        assert (
            await http.patch(
                f"/v1/clients/{client_id}",
                headers=h(JOBCENTER),
                json={"residence_title": "aufenthg_104c", "residence_valid_from": "2026-03-01", "residence_valid_until": "2027-09-01"},
            )
        ).json()["errors"][0]["field"] == "residence_valid_until"


async def test_personal_data_is_never_logged(make_intake, consent, caplog, kafka_bootstrap, topic_namespace):
    import logging

    from lotse_kit.logging import JsonFormatter, configure

    # The service's own logging set-up at its most verbose level, with pytest's capture attached.
    root = logging.getLogger()
    saved = (
        root.level,
        list(root.handlers),
        {n: logging.getLogger(n).level for n in ("aiokafka", "faststream", "uvicorn.access", "kafka")},
    )
    configure("intake", "DEBUG")
    root.addHandler(caplog.handler)
    try:
        await _personal_data_flow(make_intake, consent, kafka_bootstrap, topic_namespace)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for n, lvl in saved[2].items():
            logging.getLogger(n).setLevel(lvl)
    lines = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "referral sent" in lines and "event processed" in lines and "client erased" in lines  # the flow did log
    for secret in (*PERSONAL, "Diplom", "Diabetes", "olena.neu", "999999", "Xenia", "not-an-email", "Dolmetscherin für"):
        assert secret not in lines, secret


async def _personal_data_flow(make_intake, consent, kafka_bootstrap, topic_namespace) -> None:
    async with make_intake() as (app, http):
        client_id = await register(http, education_qualifications="Diplom-Ingenieurin (Kyjiw)", health="Diabetes Typ 1")
        cid = uuid.UUID(client_id)
        consent.grant(
            cid,
            KI,
            Purpose.REFERRAL,
            [DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.HEALTH, DataCategory.EDUCATION_QUALIFICATIONS],
        )
        resp = await http.post(
            f"/v1/clients/{client_id}/referrals",
            headers=h(JOBCENTER),
            json={
                "need": "interpreter",
                "categories": ["identity", "contact", "health", "education_qualifications"],
                "free_text": "Bitte Dolmetscherin für Olena Kovalenko",
            },
        )
        assert resp.status_code == 201
        await http.patch(
            f"/v1/clients/{client_id}", headers=h(JOBCENTER), json={"email": "olena.neu@mail.example", "phone": "+49 5251 999999"}
        )
        await http.post(
            f"/v1/clients/{client_id}/referrals",
            headers=h(JOBCENTER),
            json={"to_org": CARITAS, "service": "mbe", "categories": ["identity"]},
        )
        await http.post("/v1/clients", headers=h(JOBCENTER), json=client_body(given_name="Xenia", email="not-an-email"))
        await partner_answer(
            kafka_bootstrap,
            topic_namespace,
            KI,
            ReferralAccepted(client_id=cid, referral_id=uuid.UUID(resp.json()["referral_id"]), to_org=KI, accepted_at=datetime.now(UTC)),
        )
        await eventually(lambda: _is(app, resp.json()["referral_id"], "accepted"))
        await events(kafka_bootstrap, topic_namespace + topics.DISCLOSURE_REQUESTS)  # the relay has published the request
        # Issue 13: the consent gate's fetch, a correction of names, do_not_contact and the erasure log nothing personal either.
        fetched = await http.get(
            f"/internal/v1/clients/{client_id}/disclosure",
            params=[("category", "identity"), ("category", "health"), ("referral_id", resp.json()["referral_id"])],
            headers=service_token("consent"),
        )
        assert fetched.status_code == 200 and "Diabetes" in fetched.text
        corrected = await http.patch(f"/v1/clients/{client_id}", headers=h(JOBCENTER), json={"given_name": "Xenia", "do_not_contact": True})
        assert corrected.status_code == 200, corrected.text
        assert (await http.delete(f"/v1/clients/{client_id}", headers=h(JOBCENTER))).status_code == 200
        assert (await http.get(f"/v1/clients/{client_id}", headers=h(JOBCENTER))).status_code == 410


async def test_a_receiving_organisation_sees_only_the_consented_categories(make_intake, consent):
    async with make_intake() as (_app, http):
        client_id = await register(http, health="needs ground-floor rooms")
        # Before any referral the KI does not see the client at all; Caritas never does.
        for org in (KI, CARITAS):
            resp = await http.get(f"/v1/clients/{client_id}", headers=h(org))
            assert resp.status_code == 404 and resp.json()["detail"] == f"no client {client_id}"
        consent.grant(client_id, KI, Purpose.REFERRAL, [DataCategory.IDENTITY, DataCategory.NEEDS])
        rid = (await refer(http, client_id))["referral_id"]
        consent.calls.clear()

        case = (await http.get(f"/v1/clients/{client_id}", headers=h(KI))).json()
        assert case["view"] == "consented" and case["categories"] == ["identity", "needs"]
        assert (case["given_name"], case["family_name"], case["needs"]) == ("Olena", "Kovalenko", ["interpreter", "integration_course"])
        for hidden in ("email", "phone", "health", "residence_title", "preferred_language", "languages", "education_qualifications"):
            assert hidden not in case, hidden
        assert [r["referral_id"] for r in case["referrals"]] == [rid] and "free_text" not in case["referrals"][0]
        assert {d["responsible_org"] for d in case["deadlines"]} == {KI}  # its answer deadline, not the Jobcenter's
        # The consent service was asked, for the receiver and for referrals, about every category.
        assert consent.calls == [(uuid.UUID(client_id), KI, Purpose.REFERRAL, list(DataCategory))]

        # The registering organisation sees everything it recorded.
        full = (await http.get(f"/v1/clients/{client_id}", headers=h(JOBCENTER))).json()
        assert full["view"] == "all" and full["health"] == "needs ground-floor rooms" and full["email"]

        # Consent withdrawn: the receiver still sees that the case exists (its referral), but no personal data.
        consent.grants.clear()
        case = (await http.get(f"/v1/clients/{client_id}", headers=h(KI))).json()
        assert case["categories"] == [] and "given_name" not in case and "needs" not in case
        # A receiver may not change the case (it sees it, so 403, not 404).
        assert (await http.patch(f"/v1/clients/{client_id}", headers=h(KI), json={"needs": []})).status_code == 403


async def test_a_declined_referral_gives_its_receiver_nothing(make_intake, consent):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        consent.grant(client_id, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        rid = (await refer(http, client_id))["referral_id"]
        assert (await http.get(f"/v1/clients/{client_id}", headers=h(KI))).status_code == 200
        resp = await http.post(f"/v1/referrals/{rid}/decline", headers=h(KI), json={"reason": "no_capacity"})
        assert resp.status_code == 200, resp.text
        assert (await http.get(f"/v1/clients/{client_id}", headers=h(KI))).status_code == 404
        # Its own referral stays readable to it.
        assert (await http.get(f"/v1/referrals/{rid}", headers=h(KI))).status_code == 200
