"""Pull: records on an HTTPS partner's inbox are fetched after a cursor, acknowledged, and never handed out again,
also after a restart; against the real broker and database."""

from __future__ import annotations

import uuid

from contracts import validate
from contracts.structured import from_structured

from .conftest import AWO, CARITAS, inbox_event, partner

INBOX = "/v1/partners/awo-paderborn/inbox"
ACK = "/v1/partners/awo-paderborn/inbox/acknowledgements"


async def test_fetch_acknowledge_and_not_again_also_after_a_restart(start_gateway):
    client_id = uuid.uuid4()  # one client: one partition, so Kafka order is the order written
    envs = [inbox_event(AWO, client_id=client_id) for _ in range(5)]
    async with start_gateway() as gw:
        await gw.put_on_inbox(AWO, *envs)
        r = await gw.http.get(INBOX, params={"limit": 3}, headers=partner(AWO))
        assert r.status_code == 200, r.text
        page = r.json()
        assert [rec["event"]["id"] for rec in page["records"]] == [str(e.id) for e in envs[:3]]
        assert page["next_cursor"] == page["records"][-1]["cursor"]
        # The event is the structured CloudEvent of the record, exactly: it decodes to the envelope written.
        first = page["records"][0]["event"]
        assert first["specversion"] == "1.0" and first["type"] == "lotse.referral.accepted" and first["subject"] == str(client_id)
        assert validate(from_structured(first)).data == envs[0].data

        # Not acknowledged yet: a fetch without a cursor starts at the beginning again.
        again = (await gw.http.get(INBOX, headers=partner(AWO))).json()
        assert [rec["event"]["id"] for rec in again["records"]] == [str(e.id) for e in envs]
        # After the page's cursor: the rest.
        rest = (await gw.http.get(INBOX, params={"after": page["next_cursor"]}, headers=partner(AWO))).json()
        assert [rec["event"]["id"] for rec in rest["records"]] == [str(e.id) for e in envs[3:]]

        # Acknowledge up to the second record: it and the first are done.
        r = await gw.http.post(ACK, json={"cursor": page["records"][1]["cursor"]}, headers=partner(AWO))
        assert r.status_code == 204, r.text
        after_ack = (await gw.http.get(INBOX, headers=partner(AWO))).json()
        assert [rec["event"]["id"] for rec in after_ack["records"]] == [str(e.id) for e in envs[2:]]
        # Acknowledging again, or an older cursor, changes nothing.
        assert (await gw.http.post(ACK, json={"cursor": page["records"][1]["cursor"]}, headers=partner(AWO))).status_code == 204
        assert (await gw.http.post(ACK, json={"cursor": page["records"][0]["cursor"]}, headers=partner(AWO))).status_code == 204
        # An old cursor does not hand out acknowledged records either.
        old = (await gw.http.get(INBOX, params={"after": page["records"][0]["cursor"]}, headers=partner(AWO))).json()
        assert [rec["event"]["id"] for rec in old["records"]] == [str(e.id) for e in envs[2:]]
        last_cursor = rest["records"][-1]["cursor"]

    async with start_gateway() as gw:  # a restart: positions are in the database
        after_restart = (await gw.http.get(INBOX, headers=partner(AWO))).json()
        assert [rec["event"]["id"] for rec in after_restart["records"]] == [str(e.id) for e in envs[2:]]
        assert (await gw.http.post(ACK, json={"cursor": last_cursor}, headers=partner(AWO))).status_code == 204
        empty = (await gw.http.get(INBOX, headers=partner(AWO))).json()
        assert empty["records"] == []
        # With nothing new, next_cursor is the acknowledged position; after it, nothing; the given cursor comes back.
        nothing = (await gw.http.get(INBOX, params={"after": empty["next_cursor"]}, headers=partner(AWO))).json()
        assert nothing == {"records": [], "next_cursor": empty["next_cursor"]}
        # A new record arrives and is the only one handed out.
        late = inbox_event(AWO, client_id=client_id)
        await gw.put_on_inbox(AWO, late)
        fresh = (await gw.http.get(INBOX, params={"after": empty["next_cursor"]}, headers=partner(AWO))).json()
        assert [rec["event"]["id"] for rec in fresh["records"]] == [str(late.id)]


async def test_records_of_several_partitions_each_in_kafka_order_and_paged_without_loss(start_gateway):
    envs = [inbox_event(AWO) for _ in range(12)]  # random clients: spread over the partitions
    async with start_gateway() as gw:
        await gw.put_on_inbox(AWO, *envs)
        seen: list[dict] = []
        cursor = None
        for _ in range(10):
            params = {"limit": 5} | ({"after": cursor} if cursor else {})
            page = (await gw.http.get(INBOX, params=params, headers=partner(AWO))).json()
            if not page["records"]:
                break
            seen += page["records"]
            cursor = page["next_cursor"]
        assert sorted(r["event"]["id"] for r in seen) == sorted(str(e.id) for e in envs)
        # Per client (= per partition) the order written; here each client has one record, so: every id once.
        assert len({r["event"]["id"] for r in seen}) == len(envs)
        # Acknowledging the last cursor acknowledges everything.
        assert (await gw.http.post(ACK, json={"cursor": cursor}, headers=partner(AWO))).status_code == 204
        assert (await gw.http.get(INBOX, headers=partner(AWO))).json()["records"] == []


async def test_long_poll_answers_with_a_record_that_arrives_while_waiting(start_gateway):
    import asyncio

    async with start_gateway() as gw:
        env = inbox_event(AWO)
        get = asyncio.create_task(gw.http.get(INBOX, params={"wait": 20}, headers=partner(AWO), timeout=60))
        await asyncio.sleep(1.0)
        assert not get.done()
        await gw.put_on_inbox(AWO, env)
        r = await get
        assert [rec["event"]["id"] for rec in r.json()["records"]] == [str(env.id)]


async def test_only_records_of_the_callers_own_inbox(start_gateway):
    async with start_gateway() as gw:
        other = inbox_event(CARITAS)
        await gw.put_on_inbox(CARITAS, other)
        mine = inbox_event(AWO)
        await gw.put_on_inbox(AWO, mine)
        page = (await gw.http.get(INBOX, headers=partner(AWO))).json()
        assert [rec["event"]["id"] for rec in page["records"]] == [str(mine.id)]
        # Caritas reads over Kafka: the gateway has no inbox for it.
        r = await gw.http.get(f"/v1/partners/{CARITAS}/inbox", headers=partner(CARITAS))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_bad_cursors_are_4xx_problems(start_gateway):
    async with start_gateway() as gw:
        await gw.put_on_inbox(AWO, inbox_event(AWO))
        page = (await gw.http.get(INBOX, headers=partner(AWO))).json()
        good = page["next_cursor"]
        from services.gateway.domain.cursors import Cursor

        forged_past = Cursor.of(AWO, {0: 10_000, 1: 10_000, 2: 10_000}).encode()
        foreign = Cursor.of(CARITAS, {0: 0}).encode()
        for cursor, status in [
            ("garbage", 422),
            ("c1.!!!!", 422),
            ("c1." + "A" * 30, 422),
            (forged_past, 409),
            (foreign, 403),
        ]:
            r = await gw.http.post(ACK, json={"cursor": cursor}, headers=partner(AWO))
            assert r.status_code == status, (cursor, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            g = await gw.http.get(INBOX, params={"after": cursor}, headers=partner(AWO))
            assert g.status_code == status, (cursor, g.text)
        for body in [{}, {"cursor": ""}, {"cursor": good, "extra": 1}, {"cursor": 5}, []]:
            r = await gw.http.post(ACK, json=body, headers=partner(AWO))
            assert r.status_code == 422, (body, r.text)
        r = await gw.http.post(ACK, content=b"{not json", headers=partner(AWO) | {"content-type": "application/json"})
        assert 400 <= r.status_code < 500
        for params in [{"limit": 0}, {"limit": "x"}, {"wait": -1}]:
            assert (await gw.http.get(INBOX, params=params, headers=partner(AWO))).status_code == 422
        # Nothing was acknowledged by any of it.
        assert len((await gw.http.get(INBOX, headers=partner(AWO))).json()["records"]) == 1


async def test_an_acknowledgement_does_not_wait_behind_a_long_poll(start_gateway):
    import asyncio

    async with start_gateway() as gw:
        await gw.put_on_inbox(AWO, inbox_event(AWO))
        page = (await gw.http.get(INBOX, headers=partner(AWO))).json()
        assert (await gw.http.post(ACK, json={"cursor": page["next_cursor"]}, headers=partner(AWO))).status_code == 204
        waiting = asyncio.create_task(gw.http.get(INBOX, params={"wait": 20}, headers=partner(AWO), timeout=60))
        await asyncio.sleep(0.5)  # the long poll holds AWO's reader now
        r = await gw.http.post(ACK, json={"cursor": page["next_cursor"]}, headers=partner(AWO))
        assert r.status_code == 204
        assert not waiting.done()  # answered while the long poll still waits
        late = inbox_event(AWO)
        await gw.put_on_inbox(AWO, late)
        assert [rec["event"]["id"] for rec in (await waiting).json()["records"]] == [str(late.id)]
