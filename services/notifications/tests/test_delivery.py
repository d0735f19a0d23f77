"""End to end against the real Kafka and PostgreSQL, with loopback SMTP, SMS gateway and webhook receivers."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from babel.dates import format_date
from standardwebhooks import Webhook

from contracts import decode, new_event
from contracts.events import CaseHandedOver, ConsentWithdrawn, DeadlineApproaching, DeadlineMissed
from contracts.topics import CLIENTS, CONSENTS, DEADLINES, NOTIFICATIONS
from contracts.vocab import DeadlineKind
from lotse_kit.clock import ManualClock
from tests.fixtures import as_org
from tests.kafka_helpers import eventually, read_topic

from .conftest import AWO, CARITAS, JOBCENTER, OPERATOR

CYRILLIC = re.compile(r"[\u0400-\u04FF]")
ARABIC = re.compile(r"[\u0600-\u06FF]")
DUE = datetime(2031, 5, 20, 10, 0, tzinfo=UTC)


def approaching(client_id: uuid.UUID, org: str = JOBCENTER, days_left: int = 7) -> Any:
    data = DeadlineApproaching(
        client_id=client_id,
        deadline_id=uuid.uuid4(),
        kind=DeadlineKind.RESIDENCE_TITLE_EXPIRY,
        due_at=DUE,
        responsible_org=org,
        lead_time_days=14,
        days_left=days_left,
    )
    return new_event(data, source="/lotse/intake", acting_org=org)


def missed(client_id: uuid.UUID, org: str = JOBCENTER) -> Any:
    data = DeadlineMissed(
        client_id=client_id, deadline_id=uuid.uuid4(), kind=DeadlineKind.APPOINTMENT, due_at=DUE, responsible_org=org, missed_at=DUE
    )
    return new_event(data, source="/lotse/intake", acting_org=org)


def handed_over(to_org: str, client_id: uuid.UUID | None = None) -> Any:
    data = CaseHandedOver(client_id=client_id or uuid.uuid4(), from_org=JOBCENTER, to_org=to_org, handed_over_at=datetime.now(UTC))
    return new_event(data, source="/lotse/intake", acting_org=JOBCENTER)


def html_part(msg: Any) -> str:
    return msg.get_body(preferencelist=("html",)).get_content()


def text_part(msg: Any) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


async def statuses(svc: Any, trigger_id: uuid.UUID) -> dict[tuple[str, str], str]:
    rows = await svc.rows("trigger_event_id = $1", trigger_id)
    return {(r["recipient_key"].split(":")[0], r["channel"]): r["status"] for r in rows}


async def all_final(svc: Any, trigger_id: uuid.UUID, n: int) -> bool:
    rows = await svc.rows("trigger_event_id = $1", trigger_id)
    return len(rows) == n and all(r["status"] not in ("created", "sending") for r in rows)


async def register(svc: Any, org: str, path: str, peer: Any, **body: Any) -> dict[str, Any]:
    r = await svc.http.post("/v1/webhook-endpoints", json={"url": peer.url(path), **body}, headers=as_org(org))
    assert r.status_code == 201, r.text
    return r.json()


async def test_deadline_reaches_clients_in_ukrainian_and_arabic_and_the_caseworkers(
    start_service, contacts, smtp, peer, kafka_bootstrap, topic_namespace
):
    olena, amira, nobody = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    contacts.add(olena, language="uk", email="olena@client.test", phone="+4915100000001")
    contacts.add(amira, language="ar", email="amira@client.test")
    # `nobody` gave no consent to be contacted: intake's contact API refuses.
    peer.script("/sms", (200, {}, {"status": "accepted", "id": "gw-4711"}))  # the gateway's answer maps to delivered
    async with start_service() as svc:
        events = [approaching(olena), approaching(amira), approaching(nobody)]
        for env in events:
            await svc.produce(DEADLINES, env)
        await eventually(
            lambda: (
                len(smtp.to("olena@client.test")) == 1
                and len(smtp.to("amira@client.test")) == 1
                and len(smtp.to("team-integration@jobcenter.lotse-demo.de")) == 3
                and len(peer.at("/sms")) == 1
            ),
            timeout=60,
        )

        [uk] = smtp.to("olena@client.test")
        assert uk["Content-Language"] == "uk"
        assert CYRILLIC.search(uk["Subject"])
        assert format_date(date(2031, 5, 20), format="long", locale="uk") in uk["Subject"]
        assert '<html lang="uk" dir="ltr">' in html_part(uk)
        assert "Jobcenter Kreis Paderborn" in text_part(uk)

        [ar] = smtp.to("amira@client.test")
        assert ar["Content-Language"] == "ar"
        assert ARABIC.search(ar["Subject"])
        assert format_date(date(2031, 5, 20), format="long", locale="ar") in ar["Subject"]
        html = html_part(ar)
        assert '<html lang="ar" dir="rtl">' in html and '<body dir="rtl"' in html
        assert ARABIC.search(text_part(ar))

        # The caseworkers' team gets German (the organisation's language), naming only the pseudonym.
        team = smtp.to("team-integration@jobcenter.lotse-demo.de")
        assert all(m["Content-Language"] == "de" for m in team)
        assert {str(olena)[:8], str(amira)[:8], str(nobody)[:8]} == {re.search(r"Klient-ID (\w+)", m["Subject"]).group(1) for m in team}

        # SMS through the gateway, in Ukrainian, with our reference.
        [sms] = peer.at("/sms")
        body = json.loads(sms.body)
        assert body["to"] == "+4915100000001" and body["language"] == "uk" and CYRILLIC.search(body["text"])
        await eventually(lambda: all_final(svc, events[0].id, 3))
        [sms_row] = await svc.rows("trigger_event_id = $1 AND channel = 'sms'", events[0].id)
        assert sms_row["status"] == "delivered" and sms_row["provider_ref"] == "gw-4711" and body["reference"] == str(sms_row["id"])

        # Every outcome is visible in the status API, and announced on the notifications topic.
        await eventually(lambda: all_final(svc, events[2].id, 2))
        assert await statuses(svc, events[2].id) == {("client", "email"): "permanent-failure", ("org", "email"): "delivered"}
        r = await svc.http.get("/v1/notifications", params={"client_id": str(olena)}, headers=as_org(JOBCENTER))
        assert r.status_code == 200
        got = {(n["recipient_kind"], n["channel"], n["language"], n["status"]) for n in r.json()["items"]}
        assert got == {
            ("client", "email", "uk", "delivered"),
            ("client", "sms", "uk", "delivered"),
            ("organisation", "email", "de", "delivered"),
        }
        failed = await svc.http.get("/v1/notifications", params={"status": "permanent-failure"}, headers=as_org(JOBCENTER))
        assert [n["client_id"] for n in failed.json()["items"]] == [str(nobody)]
        assert "consent" in failed.json()["items"][0]["reason"]
        # Organisations not concerned see nothing; the operator sees all.
        other = await svc.http.get("/v1/notifications", params={"client_id": str(olena)}, headers=as_org(AWO))
        assert other.json()["items"] == []
        operator = await svc.http.get("/v1/notifications", headers=as_org(OPERATOR))
        assert len(operator.json()["items"]) == 7  # olena: e-mail, SMS, team; amira: e-mail, team; nobody: refused, team

        records = await read_topic(kafka_bootstrap, topic_namespace + NOTIFICATIONS, until=7, timeout=30, settle=0.5)
        kinds = sorted(decode(r.headers, r.value).type for r in records)
        assert kinds == ["lotse.notification.delivered"] * 6 + ["lotse.notification.failed"]


async def test_webhook_failing_twice_then_succeeding_is_delivered_once(start_service, peer, kafka_bootstrap, topic_namespace):
    async with start_service() as svc:
        ep = await register(svc, CARITAS, "/hooks/caritas", peer, event_types=["lotse.case.handed_over"])
        peer.script("/hooks/caritas", (503, {"Retry-After": "1"}, None), (500, {}, None), (204, {}, None))
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)

        tries = peer.at("/hooks/caritas")
        assert len(tries) == 3
        assert len({t.headers["webhook-id"] for t in tries}) == 1  # one message, retried: the partner can deduplicate
        for t in tries:  # a partner verifying with the standardwebhooks package accepts every request
            payload = Webhook(ep["secret"]).verify(t.body, t.headers)
            assert payload["type"] == "lotse.case.handed_over"
            assert payload["data"]["client_id"] == str(env.data.client_id) and payload["data"]["to_org"] == CARITAS
        [row] = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", env.id)
        assert row["status"] == "delivered" and row["attempts"] == 3
        attempts = await svc.pool.fetch("SELECT * FROM delivery_attempts WHERE notification_id = $1 ORDER BY attempt", row["id"])
        assert [(a["outcome"], a["status_code"]) for a in attempts] == [("retry", 503), ("retry", 500), ("delivered", 204)]
        assert attempts[0]["retry_after_s"] == 1.0
        assert attempts[1]["started_at"] - attempts[0]["started_at"] >= timedelta(seconds=1)  # Retry-After outranks the 0.3 s schedule

        detail = await svc.http.get(f"/v1/notifications/{row['id']}", headers=as_org(CARITAS))
        assert [a["outcome"] for a in detail.json()["attempts_log"]] == ["retry", "retry", "delivered"]
        records = await read_topic(kafka_bootstrap, topic_namespace + NOTIFICATIONS, until=2, timeout=30, settle=0.5)
        delivered = [decode(r.headers, r.value) for r in records]
        mine = [e for e in delivered if e.data.notification_id == row["id"]]
        assert len(mine) == 1 and mine[0].type == "lotse.notification.delivered" and mine[0].data.attempts == 3


async def test_gone_endpoint_is_disabled_and_gets_nothing_more(start_service, peer):
    async with start_service() as svc:
        ep = await register(svc, AWO, "/hooks/awo", peer)
        peer.script("/hooks/awo", (410, {}, None))
        first = handed_over(AWO)
        await svc.produce(CLIENTS, first)
        await eventually(lambda: all_final(svc, first.id, 2), timeout=60)
        assert await statuses(svc, first.id) == {("endpoint", "webhook"): "permanent-failure", ("org", "email"): "delivered"}
        r = await svc.http.get(f"/v1/webhook-endpoints/{ep['id']}", headers=as_org(AWO))
        assert r.json()["status"] == "disabled" and "410" in r.json()["disabled_reason"]

        second = handed_over(AWO)
        await svc.produce(CLIENTS, second)
        await eventually(lambda: all_final(svc, second.id, 1), timeout=60)  # the e-mail only
        assert len(peer.at("/hooks/awo")) == 1

        # Re-enabled by the organisation, it receives again.
        assert (await svc.http.post(f"/v1/webhook-endpoints/{ep['id']}/enable", headers=as_org(AWO))).json()["status"] == "active"
        third = handed_over(AWO)
        await svc.produce(CLIENTS, third)
        await eventually(lambda: all_final(svc, third.id, 2), timeout=60)
        assert await statuses(svc, third.id) == {("endpoint", "webhook"): "delivered", ("org", "email"): "delivered"}


async def test_redelivered_event_sends_nothing_new(start_service, contacts, smtp):
    client = uuid.uuid4()
    contacts.add(client, language="tr", email="deniz@client.test")
    async with start_service() as svc:
        env = missed(client)
        await svc.produce(DEADLINES, env, times=3)  # Kafka redelivers the same record
        marker = approaching(client)  # same key, same partition: processed after the duplicates
        await svc.produce(DEADLINES, marker)
        await eventually(lambda: all_final(svc, marker.id, 2), timeout=60)
        await eventually(lambda: all_final(svc, env.id, 2), timeout=30)
        assert len(smtp.to("deniz@client.test")) == 2  # one per event
        assert sum(1 for m in smtp.to("deniz@client.test") if "Süre doldu" in m["Subject"]) == 1

        # Even when the inbox forgets the event (a replay, a new consumer group), the unique key holds.
        await svc.pool.execute("DELETE FROM processed_events WHERE event_id = $1", env.id)
        await svc.produce(DEADLINES, env)
        second_marker = approaching(client, days_left=1)
        await svc.produce(DEADLINES, second_marker)
        await eventually(lambda: all_final(svc, second_marker.id, 2), timeout=60)
        assert len(await svc.rows("trigger_event_id = $1", env.id)) == 2
        assert sum(1 for m in smtp.to("deniz@client.test") if "Süre doldu" in m["Subject"]) == 1


async def test_secret_rotation_signs_with_both_secrets(start_service, peer):
    async with start_service() as svc:
        ep = await register(svc, CARITAS, "/hooks/rotating", peer)
        rotated = await svc.http.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=as_org(CARITAS))
        assert rotated.status_code == 200
        new_secret = rotated.json()["secret"]
        assert new_secret != ep["secret"] and new_secret.startswith("whsec_")
        listed = await svc.http.get("/v1/webhook-endpoints", headers=as_org(CARITAS))
        assert "secret" not in json.dumps(listed.json()).replace("previous_secret_expires_at", "")  # shown once only

        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: len(peer.at("/hooks/rotating")) == 1, timeout=60)
        [req] = peer.at("/hooks/rotating")
        versions = [sig.split(",")[0] for sig in req.headers["webhook-signature"].split(" ")]
        assert versions == ["v1", "v1", "v1a"]  # both secrets (HMAC), and the service's Ed25519 key
        assert Webhook(ep["secret"]).verify(req.body, req.headers)["data"]["to_org"] == CARITAS  # partner not yet switched
        assert Webhook(new_secret).verify(req.body, req.headers)["data"]["to_org"] == CARITAS  # partner already switched

        # Another organisation can neither see nor rotate it.
        assert (await svc.http.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=as_org(AWO))).status_code == 404


async def test_endpoint_registration_is_validated(start_service, peer):
    async with start_service(webhook_allow_http=False) as svc:
        r = await svc.http.post("/v1/webhook-endpoints", json={"url": peer.url("/x")}, headers=as_org(CARITAS))
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
        r = await svc.http.post(
            "/v1/webhook-endpoints",
            json={"url": "https://p.test/x", "event_types": ["lotse.client.registered"]},
            headers=as_org(CARITAS),
        )
        assert r.status_code == 422 and "event_types" in r.text
        r = await svc.http.post("/v1/webhook-endpoints", json={"url": "https://p.test/x"}, headers=as_org("not-a-member"))
        assert r.status_code == 403
        r = await svc.http.post("/v1/webhook-endpoints", json={"url": "https://p.test/x"})
        assert r.status_code == 401  # no token: nobody acts


async def test_notification_survives_a_restart_mid_retry(start_service, peer):
    async with start_service(retry_schedule_s=[1.0, 1.0]) as svc:
        await register(svc, CARITAS, "/hooks/restart", peer)
        peer.script("/hooks/restart", (503, {}, None))
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)

        async def first_attempt_failed() -> bool:
            rows = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", env.id)
            return bool(rows) and rows[0]["attempts"] == 1 and rows[0]["status"] == "sending" and rows[0]["reason"] == "HTTP 503"

        await eventually(first_attempt_failed, timeout=60)
    # The service is down; the partner recovers meanwhile. A new instance picks the retry up from the database.
    async with start_service(retry_schedule_s=[1.0, 1.0]) as svc:
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        [row] = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", env.id)
        assert row["status"] == "delivered" and row["attempts"] == 2
        assert len(peer.at("/hooks/restart")) == 2


async def test_consent_withdrawal_reaches_every_recipient_organisation(start_service, smtp, peer):
    async with start_service() as svc:
        await register(svc, CARITAS, "/hooks/withdrawn", peer, event_types=["lotse.consent.withdrawn"])
        data = ConsentWithdrawn(
            client_id=uuid.uuid4(), consent_id=uuid.uuid4(), withdrawn_at=datetime.now(UTC), disclosed_to=[CARITAS, AWO]
        )
        env = new_event(data, source="/lotse/consent", acting_org=JOBCENTER)
        await svc.produce(CONSENTS, env)
        await eventually(lambda: all_final(svc, env.id, 3), timeout=60)
        assert await statuses(svc, env.id) == {("org", "email"): "delivered", ("endpoint", "webhook"): "delivered"}
        assert len(smtp.to("migrationsdienst@caritas.lotse-demo.de")) == 1 and len(smtp.to("jmd@awo.lotse-demo.de")) == 1
        # AWO lists Turkish after German: caseworker mail is German.
        assert smtp.to("jmd@awo.lotse-demo.de")[0]["Content-Language"] == "de"


async def test_refused_mailbox_is_a_permanent_failure(start_service, contacts, smtp):
    client = uuid.uuid4()
    contacts.add(client, language="fa", email="gone@client.test")
    smtp.refuse.add("gone@client.test")
    async with start_service() as svc:
        env = missed(client)
        await svc.produce(DEADLINES, env)
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        [row] = await svc.rows("trigger_event_id = $1 AND recipient_kind = 'client'", env.id)
        assert row["status"] == "permanent-failure" and row["attempts"] == 1 and "550" in row["reason"]
        assert "gone@" not in row["reason"]  # the peer's text (which may echo the address) is not stored


async def test_rate_limit_holds_back_what_exceeds_the_bucket(start_service, smtp):
    limits = {"email": {"rate_per_s": 0.0001, "burst": 2}, "sms": {"rate_per_s": 1, "burst": 1}, "webhook": {"rate_per_s": 1, "burst": 1}}
    async with start_service(rate_limits=limits) as svc:
        events = [handed_over(CARITAS) for _ in range(4)]
        for env in events:
            await svc.produce(CLIENTS, env)

        async def counts() -> tuple[int, int]:
            rows = await svc.rows("trigger_event_id = ANY($1::uuid[])", [e.id for e in events])
            return len(rows), sum(r["status"] == "delivered" for r in rows)

        await eventually(lambda: _eq(counts(), (4, 2)), timeout=60)
        rows = await svc.rows("trigger_event_id = ANY($1::uuid[]) AND status <> 'delivered'", [e.id for e in events])
        assert [(r["status"], r["attempts"]) for r in rows] == [("created", 0), ("created", 0)]
        assert len(smtp.to("migrationsdienst@caritas.lotse-demo.de")) == 2


async def _eq(coro: Any, expected: Any) -> bool:
    return (await coro) == expected


async def test_two_replicas_send_each_notification_once(start_service, peer):
    async with start_service() as one, start_service() as two:
        await register(one, CARITAS, "/hooks/replicas", peer)
        events = [handed_over(CARITAS) for _ in range(12)]
        for env in events:
            await one.produce(CLIENTS, env)

        async def done() -> bool:
            rows = await one.rows("trigger_event_id = ANY($1::uuid[])", [e.id for e in events])
            return len(rows) == 24 and all(r["status"] == "delivered" for r in rows)

        await eventually(done, timeout=90)
        ids = [r.headers["webhook-id"] for r in peer.at("/hooks/replicas")]
        assert len(ids) == 12 and len(set(ids)) == 12
        assert one.app.state.deps is not two.app.state.deps


async def test_a_claim_whose_sender_died_is_taken_over_after_the_lease(start_service, peer, admin_db, unique):
    from services.notifications.adapters.repository import claim_due
    from services.notifications.domain.model import Channel

    async with start_service(retry_schedule_s=[2.0, 0.5, 0.5]) as svc:
        await register(svc, CARITAS, "/hooks/lease", peer)
        peer.script("/hooks/lease", (503, {}, None))
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: _eq(svc.pool.fetchval("SELECT count(*) FROM delivery_attempts WHERE outcome = 'retry'"), 1), timeout=60)
    # Another replica claims the due retry and dies before sending: nothing records an outcome.
    await admin_db.execute(f"SET search_path = notif_{unique}")
    claimed = await eventually(lambda: claim_due(admin_db, Channel.WEBHOOK, 10, lease_s=1.0, now=datetime.now(UTC)), timeout=30)
    assert [r["attempts"] for r in claimed] == [2]
    async with start_service(retry_schedule_s=[0.5, 0.5, 0.5]) as svc:
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        [row] = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", env.id)
        assert row["status"] == "delivered" and row["attempts"] == 3
        attempts = await svc.pool.fetch(
            "SELECT attempt, outcome FROM delivery_attempts WHERE notification_id = $1 ORDER BY attempt", row["id"]
        )
        assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "retry"), (3, "delivered")]
        assert len(peer.at("/hooks/lease")) == 2


async def test_the_injected_clock_decides_when_a_retry_is_due_and_stamps_the_outcome(start_service, peer, kafka_bootstrap, topic_namespace):
    clock = ManualClock(datetime(2031, 1, 6, 8, 0, tzinfo=UTC))
    async with start_service(clock=clock, retry_schedule_s=[0.3]) as svc:
        await register(svc, CARITAS, "/hooks/clock", peer)
        peer.script("/hooks/clock", (503, {}, None))
        env = handed_over(CARITAS)
        await svc.produce(CLIENTS, env)
        await eventually(lambda: _eq(svc.pool.fetchval("SELECT count(*) FROM delivery_attempts WHERE outcome = 'retry'"), 1), timeout=60)
        [row] = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", env.id)
        assert row["status"] == "sending" and row["next_attempt_at"] == clock.now() + timedelta(seconds=0.3)  # no jitter in the tests

        await asyncio.sleep(1.5)  # the service's time stands still: the retry is not due, whatever the wall clock says
        assert len(peer.at("/hooks/clock")) == 1
        clock.advance(seconds=1)
        await eventually(lambda: all_final(svc, env.id, 2), timeout=60)
        [row] = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", env.id)
        assert row["status"] == "delivered" and row["completed_at"] == clock.now()
        records = await read_topic(kafka_bootstrap, topic_namespace + NOTIFICATIONS, until=2, timeout=30, settle=0.5)
        mine = [e for e in (decode(r.headers, r.value) for r in records) if e.data.notification_id == row["id"]]
        assert [(e.type, e.data.delivered_at, e.time) for e in mine] == [("lotse.notification.delivered", clock.now(), clock.now())]
        assert peer.at("/hooks/clock")[-1].headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
