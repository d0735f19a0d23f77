"""Per batch instead of per event: contacts fetched once per consumer batch (`prepare_triggers`), e-mails of a claimed
batch over one SMTP connection, the batch's outcomes written in one transaction. Against the real PostgreSQL, with a
loopback SMTP sink that counts its connections."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from contracts import new_event
from contracts.events import ClientErased, ReferralAccepted, ReferralSent
from lotse_kit import consumer
from lotse_kit.clock import ManualClock
from services.notifications.adapters import repository as repo
from services.notifications.adapters.contacts import ClientContact, NoContact
from services.notifications.adapters.senders import Email, SmtpSender
from services.notifications.adapters.templates import Rendered
from services.notifications.domain.model import Channel
from services.notifications.handlers import prepare_triggers, record_notifications, send_batch
from services.notifications.handlers.triggers import PreparedTriggers
from tests.peers import MailSink, free_port

from .conftest import AWO, CARITAS, JOBCENTER, FakeContacts
from .test_delivery import approaching, handed_over

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)  # rows recorded "due" then: the service's own worker (at T0) leaves them to the test


class CountingSink(MailSink):
    """The mail sink, counting SMTP connections (one EHLO each); drops the connection, without keeping the message,
    at the first DATA for an address in `drop_once`."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0
        self.drop_once: set[str] = set()

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        dropped = self.drop_once.intersection(envelope.rcpt_tos)
        if dropped:
            self.drop_once -= dropped
            server.transport.close()  # the relay goes away before it answers: the client cannot know
            return "421 4.3.0 gone"
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp() -> Iterator[CountingSink]:
    """Replaces the shared sink for this module: `start_service` sends here."""
    sink = CountingSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.port = port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


def _email(to: str, n: int) -> Email:
    return Email(to=to, rendered=Rendered("de", f"Text {n}\n", subject=f"Betreff {n}"), message_id=str(uuid.uuid4()))


# ---------------------------------------------------------------- the SMTP sender
async def test_a_batch_goes_over_one_connection_and_the_next_batch_reuses_it(smtp: CountingSink) -> None:
    sender = SmtpSender(host="127.0.0.1", port=smtp.port, mail_from="Lotse <no-reply@lotse.invalid>")  # type: ignore[attr-defined]
    try:
        outcomes = await sender.send_many([_email(f"c{i}@client.test", i) for i in range(10)])
        assert [o.kind.value for o in outcomes] == ["delivered"] * 10
        assert await sender.send(to="c10@client.test", rendered=_email("x", 10).rendered, message_id="m-10")
        assert len(smtp.messages) == 11 and {m["To"] for m in smtp.messages} == {f"c{i}@client.test" for i in range(11)}
        assert smtp.connections == 1 and sender.connections == 1
        assert smtp.messages[0]["From"] == "Lotse <no-reply@lotse.invalid>" and smtp.messages[0]["Auto-Submitted"] == "auto-generated"
    finally:
        await sender.aclose()


async def test_a_connection_lost_mid_batch_fails_only_that_message_and_the_rest_goes_over_a_new_one(smtp: CountingSink) -> None:
    sender = SmtpSender(host="127.0.0.1", port=smtp.port, mail_from="no-reply@lotse.invalid")  # type: ignore[attr-defined]
    smtp.drop_once.add("c2@client.test")
    try:
        outcomes = await sender.send_many([_email(f"c{i}@client.test", i) for i in range(5)])
    finally:
        await sender.aclose()
    assert [o.kind.value for o in outcomes] == ["delivered", "delivered", "retry", "delivered", "delivered"]
    assert "SMTP relay unreachable" in outcomes[2].reason or "SMTP error" in outcomes[2].reason
    assert sorted(m["To"] for m in smtp.messages) == ["c0@client.test", "c1@client.test", "c3@client.test", "c4@client.test"]
    assert smtp.connections == 2  # reconnected once, not once per message


# ---------------------------------------------------------------- the delivery worker's batch
async def _record_due_later(svc: Any, contacts: FakeContacts, n: int, *, phone_for_first: bool = False) -> list[uuid.UUID]:
    """n client e-mails and n caseworker e-mails recorded through the handler, due at LATER (the worker's clock is at T0,
    so it leaves them to the test)."""
    clients = [uuid.uuid4() for _ in range(n)]
    for i, c in enumerate(clients):
        contacts.add(c, language="de", email=f"client{i}@client.test", phone="+4915100000001" if phone_for_first and i == 0 else None)
    async with svc.pool.acquire() as conn, conn.transaction():
        for c in clients:
            await record_notifications(approaching(c), conn, svc.app.state.deps)
        await conn.execute("UPDATE notifications SET next_attempt_at = $1 WHERE client_id = ANY($2)", LATER, clients)
    return clients


async def test_a_claimed_batch_is_sent_over_one_connection_and_recorded_in_one_transaction(start_service, contacts, smtp) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        await _record_due_later(svc, contacts, 6)
        smtp.drop_once.add("client3@client.test")
        connections_before = smtp.connections
        rows = await repo.claim_due(svc.pool, Channel.EMAIL, 50, 60.0, LATER)
        assert len(rows) == 12  # 6 clients, 6 caseworker e-mails
        statuses = await send_batch(rows, svc.app.state.deps)
        assert sorted(s.value for s in statuses) == ["delivered"] * 11 + ["sending"]  # the dropped one waits for its retry
        assert smtp.connections - connections_before <= 2  # 12 messages: one connection, one more after the drop
        ids = [r["id"] for r in rows]
        # Every attempt of the batch, and every new status, committed by one transaction.
        assert await svc.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM delivery_attempts WHERE notification_id = ANY($1)", ids) == 1
        assert await svc.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM notifications WHERE id = ANY($1)", ids) == 1
        [retry] = await svc.rows("status = 'sending'")
        assert retry["reason"].startswith("SMTP") and retry["attempts"] == 1

        # The retry is due after the schedule (0.3 s of the service's clock); sent once, nothing else again.
        again = await repo.claim_due(svc.pool, Channel.EMAIL, 50, 60.0, LATER + timedelta(minutes=1))
        assert [r["id"] for r in again] == [retry["id"]]
        assert [s.value for s in await send_batch(again, svc.app.state.deps)] == ["delivered"]
        assert [len(smtp.to(f"client{i}@client.test")) for i in range(6)] == [1] * 6
        assert len(smtp.to("team-integration@jobcenter.lotse-demo.de")) == 6
        attempts = await svc.pool.fetch(
            "SELECT attempt, outcome FROM delivery_attempts WHERE notification_id = $1 ORDER BY attempt", retry["id"]
        )
        assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "retry"), (2, "delivered")]


async def test_the_batch_asks_intake_once_per_client_and_keeps_the_consent_check_at_sending(start_service, contacts, smtp, peer) -> None:
    peer.default = (200, {}, {"status": "accepted"})
    async with start_service(clock=ManualClock(T0)) as svc:
        deps = svc.app.state.deps
        [olena, deniz] = await _record_due_later(svc, contacts, 2, phone_for_first=True)
        contacts.refused.add(str(deniz))  # consent withdrawn between recording and sending: ends without sending
        contacts.lookups.clear()
        emails = await repo.claim_due(svc.pool, Channel.EMAIL, 50, 60.0, LATER)
        smses = await repo.claim_due(svc.pool, Channel.SMS, 50, 60.0, LATER)
        assert len(emails) == 4 and len(smses) == 1
        await send_batch(emails, deps)
        assert sorted(contacts.lookups) == sorted([(str(olena), JOBCENTER), (str(deniz), JOBCENTER)])  # once each
        await send_batch(smses, deps)
        assert len(smtp.to("client0@client.test")) == 1 and len(peer.at("/sms")) == 1
        assert smtp.to("client1@client.test") == []
        [deniz_row] = await svc.rows("client_id = $1 AND recipient_kind = 'client'", deniz)
        assert deniz_row["status"] == "permanent-failure" and "consent" in deniz_row["reason"]


# ---------------------------------------------------------------- the consumer's batch: prepare_triggers
class SlowContacts(FakeContacts):
    """Counts how many lookups are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def lookup(self, client_id: str, org: str) -> ClientContact | NoContact:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            return await super().lookup(client_id, org)
        finally:
            self.in_flight -= 1


async def test_prepare_fetches_the_batch_contacts_in_one_request_not_for_erased_clients_and_falls_back_bounded(start_service) -> None:
    contacts = SlowContacts()
    async with start_service(contacts_adapter=contacts, intake_concurrency=3) as svc:
        deps = svc.app.state.deps
        many = [uuid.uuid4() for _ in range(8)]
        erased_before, erased_in_batch, referred = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await svc.pool.execute("INSERT INTO erased_clients (client_id, erased_at) VALUES ($1, now())", erased_before)
        referral_id = uuid.uuid4()
        now = datetime.now(UTC)
        sent = ReferralSent(client_id=referred, referral_id=referral_id, from_org=JOBCENTER, to_org=CARITAS, service="x", sent_at=now)
        # The answer lacks from_org: prepare takes it from the referral sent earlier in the same batch.
        accepted = ReferralAccepted(client_id=referred, referral_id=referral_id, to_org=CARITAS, accepted_at=now)
        erased = ClientErased(client_id=erased_in_batch, requested_by_org=JOBCENTER, erased_at=now)
        # An answer without from_org to a referral remembered from an earlier batch: from the referrals table.
        remembered, earlier_referral = uuid.uuid4(), uuid.uuid4()
        await repo.remember_referral(svc.pool, earlier_referral, AWO, CARITAS, "x", remembered)
        late_answer = ReferralAccepted(client_id=remembered, referral_id=earlier_referral, to_org=CARITAS, accepted_at=now)
        envs = [
            *(approaching(c) for c in many),
            approaching(many[0]),  # the same client and organisation twice: asked once
            approaching(erased_before),
            new_event(erased, source="/lotse/intake", acting_org=JOBCENTER),
            approaching(erased_in_batch),
            new_event(sent, source="/lotse/intake", acting_org=JOBCENTER),
            new_event(accepted, source="/lotse/intake", acting_org=CARITAS),
            new_event(late_answer, source="/lotse/intake", acting_org=CARITAS),
            handed_over(CARITAS),  # no client to contact
        ]
        batch = await prepare_triggers(envs, deps)
        expected = [(str(c), JOBCENTER) for c in many] + [(str(referred), JOBCENTER), (str(remembered), AWO)]
        assert len(contacts.batches) == 1 and sorted(contacts.batches[0]) == sorted(expected)  # one request for the batch
        assert sorted(contacts.lookups) == sorted(expected)
        assert set(batch.contacts) == set(expected)
        # The batch request fails (e.g. an intake without the route): one lookup each, concurrently and bounded.
        contacts.batch_fails = True
        contacts.lookups.clear()
        contacts.most = 0
        batch = await prepare_triggers(envs, deps)
        assert len(contacts.batches) == 2 and sorted(contacts.lookups) == sorted(expected)
        assert 1 < contacts.most <= 3
        assert set(batch.contacts) == set(expected)
        assert await svc.pool.fetchval("SELECT count(*) FROM notifications") == 0  # no effects


async def test_handlers_use_the_prepared_contact_and_fetch_one_that_is_missing(start_service, contacts) -> None:
    async with start_service() as svc:
        deps = svc.app.state.deps
        prepared_client, missing_client = uuid.uuid4(), uuid.uuid4()
        contacts.add(prepared_client, language="de", email="stale@client.test")  # intake would answer German
        contacts.add(missing_client, language="tr", email="deniz@client.test")
        batch = PreparedTriggers(
            contacts={(str(prepared_client), JOBCENTER): ClientContact(str(prepared_client), "uk", ("uk",), "olena@client.test")}
        )
        token = consumer._prepared.set(batch)
        try:
            async with svc.pool.acquire() as conn, conn.transaction():
                await record_notifications(approaching(prepared_client), conn, deps)
                await record_notifications(approaching(missing_client), conn, deps)
        finally:
            consumer._prepared.reset(token)
        assert contacts.lookups == [(str(missing_client), JOBCENTER)]  # the prepared one was not asked again
        langs = {r["client_id"]: r["language"] for r in await svc.rows("recipient_kind = 'client'")}
        assert langs == {prepared_client: "uk", missing_client: "tr"}
        assert batch.woken  # the delivery workers are told once for the batch


async def test_a_line_break_in_an_address_fails_that_message_only_and_injects_nothing(smtp: CountingSink) -> None:
    sender = SmtpSender(host="127.0.0.1", port=smtp.port, mail_from="no-reply@lotse.invalid")  # type: ignore[attr-defined]
    try:
        outcomes = await sender.send_many(
            [_email("c0@client.test", 0), _email("c1@client.test\r\nBcc: spy@evil.test", 1), _email("c2@client.test", 2)]
        )
    finally:
        await sender.aclose()
    assert [o.kind.value for o in outcomes] == ["delivered", "technical", "delivered"]
    assert sorted(m["To"] for m in smtp.messages) == ["c0@client.test", "c2@client.test"]
    assert all(m["Bcc"] is None for m in smtp.messages)


async def test_an_arabic_message_arrives_intact_and_an_internationalised_address_is_built_too() -> None:
    sender = SmtpSender(host="127.0.0.1", port=1, mail_from="Lotse <no-reply@lotse.invalid>")
    rendered = Rendered("ar", "سطر أول\n\nسطر ثان\n", subject="موعد نهائي يقترب", html='<html lang="ar" dir="rtl"><p>سطر</p></html>')
    for to in ("amira@client.test", "amira@bücher.test"):
        built = sender.build(to=to, rendered=rendered, message_id="m-1")
        # Flattened as smtplib.send_message does: SMTPUTF8 for an internationalised address, else the message's own policy.
        raw = built.as_bytes(policy=email.policy.SMTPUTF8) if not to.isascii() else built.as_bytes()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert msg["To"] == to and msg["Subject"] == rendered.subject and msg["Content-Language"] == "ar"
        assert msg["Message-ID"] == "<m-1@notifications.lotse>" and msg["Auto-Submitted"] == "auto-generated"
        assert msg.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n") == rendered.text
        assert msg.get_body(preferencelist=("html",)).get_content().replace("\r\n", "\n").rstrip("\n") == rendered.html
