"""Issue 13 in the notifications service, against the real Kafka and PostgreSQL: clients who asked not to be contacted,
overdue acknowledgements told to the data-protection contacts, and erasure (GDPR Art. 17)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from contracts import decode, new_event
from contracts.events import AcknowledgementOverdue, ClientErased, DeadlineApproaching, ReferralSent
from contracts.topics import CLIENTS, CONSENTS, DEADLINES, NOTIFICATIONS, REFERRALS
from contracts.vocab import DeadlineKind
from lotse_kit.clock import ManualClock
from lotse_kit.network import OrgDirectory
from services.intake.adapters.consent import Decision
from services.intake.bootstrap import bootstrap as intake_bootstrap
from services.intake.config import IntakeSettings
from services.notifications.adapters.contacts import IntakeContacts
from services.notifications.domain.model import CLIENT_ERASED, DO_NOT_CONTACT
from tests.fixtures import FAST_KIT_SETTINGS, as_org, service_token, serving
from tests.kafka_helpers import eventually, read_topic

from .conftest import AWO, CARITAS, JOBCENTER
from .test_delivery import all_final, approaching, missed

TEAM = "team-integration@jobcenter.lotse-demo.de"


async def failures(kafka_bootstrap: str, topic: str, until: int) -> list[Any]:
    records = await read_topic(kafka_bootstrap, topic, until=until, timeout=30, settle=0.5)
    events = [decode(r.headers, r.value) for r in records]
    return [e for e in events if e.type == "lotse.notification.failed"]


# ---------------------------------------------------------------- do not contact
async def test_a_client_who_asked_not_to_be_contacted_gets_nothing_and_organisations_still_do(
    start_service, intake_standin, smtp, peer, kafka_bootstrap, topic_namespace
):
    """Through the real contacts adapter, against a stand-in intake answering problem+json do-not-contact."""
    before, between, reachable = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for cid, name in ((before, "before"), (between, "between"), (reachable, "reachable")):
        intake_standin.add(cid, language="uk", email=f"{name}@client.test", phone=f"+49151000000{len(name)}")
    intake_standin.do_not_contact.add(str(before))  # asked before the trigger: nothing is even recorded for sending
    intake_standin.do_not_contact_after[str(between)] = 1  # asked after the notification was recorded, before it was sent
    peer.script("/sms", *[(200, {}, {"status": "accepted"})] * 3)
    async with start_service(contacts_adapter=intake_standin.adapter()) as svc:
        events = {cid: approaching(cid) for cid in (before, between, reachable)}
        await svc.produce(DEADLINES, *events.values())
        await eventually(lambda: all_final(svc, events[before].id, 2), timeout=60)
        await eventually(lambda: all_final(svc, events[between].id, 3), timeout=60)
        await eventually(lambda: all_final(svc, events[reachable].id, 3), timeout=60)

        # Recorded once, final, with the reason; no attempt, no retry.
        [refused] = await svc.rows("trigger_event_id = $1 AND recipient_kind = 'client'", events[before].id)
        assert (refused["status"], refused["reason"], refused["attempts"]) == ("permanent-failure", DO_NOT_CONTACT, 0)
        # Recorded on both channels while the client could be contacted; each ends at its first attempt.
        late = await svc.rows("trigger_event_id = $1 AND recipient_kind = 'client'", events[between].id)
        assert sorted((r["channel"], r["status"], r["reason"], r["attempts"]) for r in late) == [
            ("email", "permanent-failure", DO_NOT_CONTACT, 1),
            ("sms", "permanent-failure", DO_NOT_CONTACT, 1),
        ]
        await asyncio.sleep(1.5)  # the retry schedule is 0.3 s: a retry would have happened by now
        assert [r["attempts"] for r in await svc.rows("trigger_event_id = $1 AND recipient_kind = 'client'", events[between].id)] == [1, 1]
        attempts = await svc.pool.fetch(
            "SELECT outcome, reason FROM delivery_attempts WHERE notification_id = ANY($1::uuid[])", [r["id"] for r in late]
        )
        assert [tuple(a) for a in attempts] == [("permanent", DO_NOT_CONTACT)] * 2

        # No message on any channel to either client; the reachable client and every caseworker team get theirs.
        assert smtp.to("before@client.test") == [] and smtp.to("between@client.test") == []
        assert len(smtp.to("reachable@client.test")) == 1 and len(smtp.to(TEAM)) == 3
        assert [json.loads(s.body)["to"] for s in peer.at("/sms")] == ["+491510000009"]  # the reachable client's only

        # Visible to the caseworkers, and announced.
        r = await svc.http.get("/v1/notifications", params={"status": "permanent-failure"}, headers=as_org(JOBCENTER))
        assert {(n["client_id"], n["reason"]) for n in r.json()["items"]} == {(str(before), DO_NOT_CONTACT), (str(between), DO_NOT_CONTACT)}
        failed = await failures(kafka_bootstrap, topic_namespace + NOTIFICATIONS, until=8)
        assert sorted((str(e.data.client_id), e.data.status.value, e.data.reason) for e in failed) == sorted(
            [(str(before), "permanent-failure", DO_NOT_CONTACT)] + [(str(between), "permanent-failure", DO_NOT_CONTACT)] * 2
        )


# ---------------------------------------------------------------- overdue acknowledgements
def overdue(client_id: uuid.UUID, org: str, collecting_org: str | None, kind: str = "erasure") -> Any:
    data = AcknowledgementOverdue(
        client_id=client_id,
        org=org,
        kind=kind,
        acknowledged_event_id=uuid.uuid4(),
        collecting_org=collecting_org,
        forwarded_at=datetime(2031, 3, 3, 9, 0, tzinfo=UTC),
        due_at=datetime(2031, 3, 10, 9, 0, tzinfo=UTC),
    )
    return new_event(data, source="/lotse/consent", acting_org=collecting_org or org)


async def test_an_overdue_acknowledgement_reaches_both_data_protection_contacts_once_each_in_their_language(
    start_service, network_file, smtp, peer, unique
):
    # Caritas has a data-protection address of its own and works in German; AWO has none (its team's address
    # is used) and the network file lists Turkish first.
    text = network_file.read_text()
    text = text.replace(
        "contact_email: migrationsdienst@caritas.lotse-demo.de",
        "contact_email: migrationsdienst@caritas.lotse-demo.de\n    dpo_email: datenschutz@caritas.lotse-demo.de",
    )
    network_file.write_text(text.replace("languages: [de, tr]", "languages: [tr, de]"))
    client = uuid.uuid4()
    async with start_service() as svc:
        await register_hook(svc, CARITAS, peer)
        env = overdue(client, org=CARITAS, collecting_org=AWO)
        await svc.produce(CONSENTS, env, times=2)  # delivered twice: still one message each
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        await eventually(lambda: len(smtp.to("datenschutz@caritas.lotse-demo.de")) == 1 and len(smtp.to("jmd@awo.lotse-demo.de")) == 1)

        [late] = smtp.to("datenschutz@caritas.lotse-demo.de")
        assert late["Content-Language"] == "de" and late["Subject"] == f"Löschung nicht bestätigt: Klient-ID {str(client)[:8]}"
        body = late.get_body(preferencelist=("plain",)).get_content()
        assert "Ihre Organisation hat" in body and str(env.data.acknowledged_event_id) in body and "Art. 17 DSGVO" in body
        [collecting] = smtp.to("jmd@awo.lotse-demo.de")
        assert collecting["Content-Language"] == "tr" and "Caritasverband Paderborn" in collecting.get_body(("plain",)).get_content()
        assert smtp.to("migrationsdienst@caritas.lotse-demo.de") == []  # the team's address is not the data-protection contact's
        assert peer.at("/hooks/caritas") == []  # e-mail to a person, not an event for the partner's system

        rows = await svc.rows("trigger_event_id = $1", env.id)
        assert sorted((r["recipient_key"], r["recipient_kind"], r["status"], r["language"]) for r in rows) == [
            (f"dpo:{AWO}", "organisation", "delivered", "tr"),
            (f"dpo:{CARITAS}", "organisation", "delivered", "de"),
        ]
        # Both organisations' staff see both messages in the status API.
        for org in (CARITAS, AWO):
            r = await svc.http.get("/v1/notifications", params={"trigger_event_id": str(env.id)}, headers=as_org(org))
            assert len(r.json()["items"]) == 2

        # When the recipient collected the data itself, or nobody is named as collecting it: one message.
        own = overdue(client, org=CARITAS, collecting_org=CARITAS, kind="withdrawal")
        alone = overdue(client, org=AWO, collecting_org=None, kind="withdrawal")
        await svc.produce(CONSENTS, own, alone)
        await eventually(lambda: all_final(svc, own.id, 1), timeout=60)
        await eventually(lambda: all_final(svc, alone.id, 1), timeout=60)
        await eventually(lambda: len(smtp.to("datenschutz@caritas.lotse-demo.de")) == 2 and len(smtp.to("jmd@awo.lotse-demo.de")) == 2)
        assert smtp.to("datenschutz@caritas.lotse-demo.de")[1]["Subject"].startswith("Widerruf einer Einwilligung nicht bestätigt")

    # Across a restart, a redelivery of the first event sends nothing again.
    async with start_service() as svc:
        await svc.produce(CONSENTS, env)
        await asyncio.sleep(2)
        assert len(await svc.rows("trigger_event_id = $1", env.id)) == 2
    assert len(smtp.to("datenschutz@caritas.lotse-demo.de")) == 2 and len(smtp.to("jmd@awo.lotse-demo.de")) == 2


async def register_hook(svc: Any, org: str, peer: Any) -> None:
    r = await svc.http.post("/v1/webhook-endpoints", json={"url": peer.url("/hooks/caritas")}, headers=as_org(org))
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- erasure
EMAIL, PHONE = "olena.erased@client.test", "+4915100000042"


def referral_sent(client_id: uuid.UUID) -> Any:
    data = ReferralSent(
        client_id=client_id,
        referral_id=uuid.uuid4(),
        from_org=JOBCENTER,
        to_org=CARITAS,
        service="migration-counselling",
        answer_due=date(2031, 6, 2),
        sent_at=datetime.now(UTC),
    )
    return new_event(data, source="/lotse/intake", acting_org=JOBCENTER)


async def scan(admin_db: Any, schema: str) -> dict[str, list[str]]:
    """Every row of every table of the service's schema, as JSON text (bytea as hex): table -> rows."""
    tables = [
        r["table_name"]
        for r in await admin_db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'", schema
        )
    ]
    return {t: [r["j"] for r in await admin_db.fetch(f'SELECT row_to_json(t)::text AS j FROM {schema}."{t}" t')] for t in tables}


async def test_after_an_erasure_no_table_holds_anything_readable_about_the_client(
    start_service, contacts, smtp, peer, admin_db, unique, kafka_bootstrap, topic_namespace
):
    schema = f"notif_{unique}"
    olena, other = uuid.uuid4(), uuid.uuid4()
    contacts.add(olena, language="uk", email=EMAIL, phone=PHONE)
    contacts.add(other, language="de", email="other@client.test")
    # The SMS gateway is busy for an hour: Olena's SMS are still waiting for their retry when she is erased.
    peer.script("/sms", (503, {"Retry-After": "3600"}, None), (503, {"Retry-After": "3600"}, None))
    clock = ManualClock(datetime.now(UTC))
    async with start_service(clock=clock) as svc:
        deadline, referral = approaching(olena), referral_sent(olena)
        others = new_event(  # another client, another deadline: none of what the scan looks for
            DeadlineApproaching(
                client_id=other,
                deadline_id=uuid.uuid4(),
                kind=DeadlineKind.INTEGRATION_COURSE_ELIGIBILITY,
                due_at=datetime(2032, 1, 15, 10, 0, tzinfo=UTC),
                responsible_org=JOBCENTER,
                lead_time_days=14,
                days_left=7,
            ),
            source="/lotse/intake",
            acting_org=JOBCENTER,
        )
        await svc.produce(DEADLINES, deadline, others)
        await svc.produce(REFERRALS, referral)
        await eventually(lambda: len(smtp.to(EMAIL)) == 2 and len(peer.at("/sms")) == 2 and len(smtp.to(TEAM)) == 3, timeout=60)
        await eventually(lambda: _settled(svc, olena, waiting=2), timeout=60)
        tables = await scan(admin_db, schema)
        assert any("2031-05-20" in row for row in tables["notifications"])  # the trigger's data was there to send from
        assert any(str(referral.data.referral_id) in row for row in tables["referrals"])
        rows_before = await svc.rows("client_id = $1", olena)

        erased = new_event(ClientErased(client_id=olena, requested_by_org=JOBCENTER, erased_at=clock.now()), source="/lotse/intake")
        await svc.produce(CLIENTS, erased, times=2)
        await eventually(lambda: _settled(svc, olena, waiting=0), timeout=60)

        # Her SMS waiting for a retry are ended, and never sent, not even when their time comes.
        rows = await svc.rows("client_id = $1", olena)
        sms = [r for r in rows if r["channel"] == "sms"]
        assert [(r["status"], r["reason"], r["attempts"]) for r in sms] == [("permanent-failure", CLIENT_ERASED, 1)] * 2
        clock.advance(timedelta(hours=2))
        await asyncio.sleep(1.5)
        assert len(peer.at("/sms")) == 2

        # A trigger that arrives after the erasure: nothing for her (intake is not even asked), the caseworkers still get theirs.
        asked = len(contacts.lookups)
        late = missed(olena)
        await svc.produce(DEADLINES, late)
        await eventually(lambda: all_final(svc, late.id, 2), timeout=60)
        assert len(contacts.lookups) == asked and len(smtp.to(EMAIL)) == 2 and len(smtp.to(TEAM)) == 4
        assert {(r["recipient_kind"], r["status"], r["reason"]) for r in await svc.rows("trigger_event_id = $1", late.id)} == {
            ("client", "permanent-failure", CLIENT_ERASED),
            ("organisation", "delivered", "accepted by the SMTP relay"),
        }

        # The scan: nothing readable about her in any table. Not her address or phone number (never stored), nor what
        # the triggers said about her (the deadline's date and kind, the referral's service and answer date).
        tables = await scan(admin_db, schema)
        assert {"notifications", "delivery_attempts", "referrals", "erased_clients", "outbox"} <= set(tables)
        readable = [EMAIL, PHONE, PHONE.removeprefix("+"), "2031-05-20", "2031-06-02", "residence_title_expiry", "appointment",
                    "migration-counselling", str(referral.data.referral_id)]  # fmt: skip
        found = {(t, needle) for t, rows_ in tables.items() for row in rows_ for needle in readable if needle in row}
        assert found == set()
        # The other client's rows are untouched.
        assert all(r["payload"] not in ("{}", {}) for r in await svc.rows("client_id = $1", other))

        # What stays: the pseudonymous delivery facts, every row and every attempt.
        rows = await svc.rows("client_id = $1", olena)
        assert {r["id"] for r in rows} >= {r["id"] for r in rows_before}
        by_id = {r["id"]: r for r in rows}
        for before in rows_before:
            after = by_id[before["id"]]
            for column in ("trigger_event_id", "trigger_type", "recipient_kind", "recipient_org", "channel", "language", "created_at"):
                assert after[column] == before[column]
        assert {r["trigger_type"] for r in rows} == {"lotse.deadline.approaching", "lotse.referral.sent", "lotse.deadline.missed"}
        assert await svc.pool.fetchval("SELECT count(*) FROM delivery_attempts WHERE notification_id = ANY($1::uuid[])", list(by_id)) == 7

        # The ended notifications are announced like every other failure.
        failed = await failures(kafka_bootstrap, topic_namespace + NOTIFICATIONS, until=12)
        assert sorted((e.data.channel.value, e.data.reason) for e in failed if e.data.client_id == olena) == [
            ("email", CLIENT_ERASED),
            ("sms", CLIENT_ERASED),
            ("sms", CLIENT_ERASED),
        ]


async def _settled(svc: Any, client_id: uuid.UUID, *, waiting: int) -> bool:
    """Every notification about the client is final except `waiting` SMS still due for a retry."""
    rows = await svc.rows("client_id = $1", client_id)
    pending = [r for r in rows if r["status"] in ("created", "sending")]
    return len(rows) == 6 and len(pending) == waiting and all(r["channel"] == "sms" for r in pending)


# ---------------------------------------------------------------- do not contact, with the real intake
class Consents:
    """Intake's consent decisions: the client consented that these organisations may contact them."""

    def __init__(self, *orgs: str) -> None:
        self.orgs = set(orgs)

    async def decide(self, client_id: Any, recipient: str, purpose: Any, categories: Any) -> Decision:
        if recipient in self.orgs:
            return Decision(True, uuid.uuid5(uuid.NAMESPACE_URL, f"{client_id}/{recipient}"), "consent valid", [])
        return Decision(False, None, "no consent for this recipient and purpose", list(categories))

    async def aclose(self) -> None:
        pass


async def test_the_do_not_contact_flag_set_in_intake_stops_every_message_to_the_client(
    start_service, network_file, smtp, peer, unique, topic_namespace
):
    """Intake from services.intake.bootstrap, over HTTP, with the notifications service's own token: the responsible
    organisation sets `do_not_contact`; the next trigger reaches the caseworkers and nothing reaches the client."""
    intake_settings = IntakeSettings(
        **FAST_KIT_SETTINGS,
        topic_namespace=topic_namespace,
        kek=base64.b64encode(b"notifications-test-intake-kek-32").decode(),
        kek_id="test-intake-kek",
        generate_keys=False,
    )
    intake = intake_bootstrap(
        intake_settings, schema=f"intake_{unique}", directory=OrgDirectory.from_file(network_file), consent=Consents(JOBCENTER)
    )

    async def token() -> str:
        return service_token("notifications")["Authorization"].removeprefix("Bearer ")

    peer.script("/sms", *[(200, {}, {"status": "accepted"})] * 3)
    async with serving(intake) as intake_url:
        body = {
            "given_name": "Olena",
            "family_name": "Kovalenko",
            "date_of_birth": "1988-04-12",
            "email": "olena.k@mail.example",
            "phone": "+4915100000077",
            "preferred_language": "uk",
            "languages": ["uk", "de"],
            "needs": ["integration_course"],
        }
        async with (
            httpx.AsyncClient(base_url=intake_url, timeout=10) as http,
            start_service(contacts_adapter=IntakeContacts(intake_url, 5.0, tokens=token)) as svc,
        ):
            resp = await http.post("/v1/clients", json=body, headers=as_org(JOBCENTER))
            assert resp.status_code == 201, resp.text
            client = uuid.UUID(resp.json()["client_id"])

            first = approaching(client)  # may be contacted: e-mail and SMS in Ukrainian
            await svc.produce(DEADLINES, first)
            await eventually(lambda: all_final(svc, first.id, 3), timeout=60)
            assert len(smtp.to("olena.k@mail.example")) == 1 and len(peer.at("/sms")) == 1

            resp = await http.patch(f"/v1/clients/{client}", json={"do_not_contact": True}, headers=as_org(JOBCENTER))
            assert resp.status_code == 200, resp.text
            second = approaching(client)
            await svc.produce(DEADLINES, second)
            await eventually(lambda: all_final(svc, second.id, 2), timeout=60)
            rows = await svc.rows("trigger_event_id = $1", second.id)
            assert sorted((r["recipient_kind"], r["status"], r["reason"]) for r in rows) == [
                ("client", "permanent-failure", DO_NOT_CONTACT),
                ("organisation", "delivered", "accepted by the SMTP relay"),
            ]
            assert len(smtp.to("olena.k@mail.example")) == 1 and len(peer.at("/sms")) == 1  # nothing more to her
            assert len(smtp.to(TEAM)) == 2  # the caseworkers got both
