"""A record not fetched and acknowledged within LOTSE_GATEWAY_UNFETCHED_AFTER: the gateway emits
`lotse.inbox.left_unfetched` (pseudonymous) and the notifications service e-mails the organisation's technical
contact. End to end on the real broker and database, with the gateway's clock injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts import decode, topics
from contracts.events import InboxLeftUnfetched
from lotse_kit.clock import ManualClock
from lotse_kit.network import OrgDirectory, parse_network
from services.gateway.domain.overdue import Backlog, LastNotice, notice_due
from services.notifications.bootstrap import bootstrap as notifications_app
from services.notifications.tests.conftest import FakeContacts
from services.notifications.tests.conftest import fast_settings as notifications_settings
from tests.fixtures import in_process
from tests.kafka_helpers import eventually, read_topic

from .conftest import AWO, INVIA, inbox_event, network_yaml, partner

DAY = timedelta(days=1)
T = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_when_a_notice_is_due():
    after, repeat = 3 * DAY, DAY
    none = LastNotice(None, None)
    assert not notice_due(Backlog(0, None), none, T, after=after, repeat_after=repeat)
    assert not notice_due(Backlog(2, T - 2 * DAY), none, T, after=after, repeat_after=repeat)
    assert notice_due(Backlog(2, T - 3 * DAY), none, T, after=after, repeat_after=repeat)
    told = LastNotice(T - 3 * DAY, T - timedelta(hours=1))
    assert not notice_due(Backlog(2, T - 3 * DAY), told, T, after=after, repeat_after=repeat)  # told an hour ago
    assert notice_due(Backlog(2, T - 3 * DAY), told, T + DAY, after=after, repeat_after=repeat)  # a day later: again
    assert notice_due(Backlog(1, T - 2.5 * DAY), LastNotice(T - 4 * DAY, T), T + DAY, after=after, repeat_after=repeat)  # new backlog


async def test_an_unfetched_record_emails_the_technical_contact(start_gateway, topic_namespace, kafka_bootstrap, unique, smtp, receiver):
    clock = ManualClock(datetime.now(UTC))
    directory = OrgDirectory.of(parse_network(network_yaml(receiver.url)))
    notif = notifications_app(
        notifications_settings(topic_namespace, smtp_host="127.0.0.1", smtp_port=smtp.port),
        schema=f"notif_{unique}",
        contacts=FakeContacts(),
        directory=directory,
    )
    receiver.script = [503] * 1000  # IN VIA's endpoint is down: its records stay unacknowledged too
    async with start_gateway(clock=clock, push_retry_base_s=3600, push_retry_max_s=3600) as gw, in_process(notif):
        env = inbox_event(AWO)
        await gw.put_on_inbox(AWO, env)
        await gw.put_on_inbox(INVIA, inbox_event(INVIA))
        # Fetched but not acknowledged: still pending. Two days on: nothing yet.
        assert (await gw.http.get(f"/v1/partners/{AWO}/inbox", headers=partner(AWO))).json()["records"]
        clock.advance(days=2)
        await gw.http.get("/health/live")
        assert smtp.messages == []  # (the check runs every 0.2 s; the final count below would show a notice sent now)
        clock.advance(days=1, minutes=1)  # past three days
        mail = await eventually(lambda: smtp.to("it@awo.lotse-demo.de"), timeout=30)
        body = mail[0].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "nicht" in mail[0]["Subject"] or "not" in mail[0]["Subject"]
        assert "1" in body
        await eventually(lambda: smtp.to("it@invia.lotse-demo.de"), timeout=30)  # push, too
        records = await read_topic(kafka_bootstrap, gw.topic(topics.GATEWAY), until=2)
        notices = {decode(r.headers, r.value).data.org: decode(r.headers, r.value) for r in records}
        awo = notices[AWO].data
        assert isinstance(awo, InboxLeftUnfetched)
        assert awo.pending == 1 and awo.mode == "pull" and awo.unfetched_after_s == 3 * 86400
        assert notices[INVIA].data.mode == "push"
        # Pseudonymous: no client id, no record content on the shared topic.
        assert str(env.data.client_id) not in records[0].value.decode() and notices[AWO].subject is None
        # Acknowledged: no notice any more, also after the repeat interval.
        cursor = (await gw.http.get(f"/v1/partners/{AWO}/inbox", headers=partner(AWO))).json()["next_cursor"]
        assert (
            await gw.http.post(f"/v1/partners/{AWO}/inbox/acknowledgements", json={"cursor": cursor}, headers=partner(AWO))
        ).status_code == 204
        clock.advance(days=1, minutes=1)
        await eventually(lambda: len(smtp.to("it@invia.lotse-demo.de")) == 2, timeout=30)  # IN VIA: repeated after a day
        # AWO was told once: not again by the checks before its acknowledgement, not after it.
        assert len(smtp.to("it@awo.lotse-demo.de")) == 1
