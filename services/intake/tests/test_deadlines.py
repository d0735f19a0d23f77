"""Deadlines and the scheduler against the real broker and database: each notice exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import date, datetime, timedelta

from contracts import topics
from services.intake.handlers.deadlines import emit_due_deadline_notices
from tests.kafka_helpers import eventually

from .conftest import BERLIN, JOBCENTER, KI, client_body, events, h, metric

NOTICES = "lotse_intake_deadline_notices_total"


async def notices(app, deadline_id: str | uuid.UUID) -> set[str]:
    rows = await app.state.runtime.db.pool.fetch("SELECT notice FROM deadline_notices WHERE deadline_id = $1", uuid.UUID(str(deadline_id)))
    return {r["notice"] for r in rows}


def notice_key(e) -> tuple[str, str, int | None]:
    return (str(e.data.deadline_id), e.type, getattr(e.data, "lead_time_days", None))


async def test_register_deadline_kinds_and_104c_end(make_intake):
    async with make_intake() as (_app, http):
        client_id = (
            await http.post("/v1/clients", json=client_body(residence_title=None, residence_valid_until=None), headers=h(JOBCENTER))
        ).json()["client_id"]
        url = f"/v1/clients/{client_id}/deadlines"
        resp = await http.post(url, headers=h(JOBCENTER), json={"kind": "chancen_aufenthalt_end", "valid_from": "2025-03-15"})
        assert resp.status_code == 201, resp.text
        d = resp.json()
        assert d["last_day"] == "2026-09-14"
        assert datetime.fromisoformat(d["due_at"]).astimezone(BERLIN).date() == date(2026, 9, 14)
        assert "§25a" in d["legal_note"] and d["lead_times_days"] == [90, 30, 7]
        resp = await http.post(url, headers=h(JOBCENTER), json={"kind": "appointment", "due_at": "2026-03-10T10:30:00+01:00"})
        assert resp.status_code == 201 and resp.json()["lead_times_days"] == [1]
        resp = await http.post(
            url,
            headers=h(JOBCENTER),
            json={"kind": "integration_course_eligibility", "due_date": "2027-01-31", "lead_times_days": [60, 14]},
        )
        assert resp.status_code == 201 and resp.json()["lead_times_days"] == [60, 14]
        for body, field in [
            ({"kind": "chancen_aufenthalt_end", "due_date": "2026-09-14"}, "due_date"),
            ({"kind": "appointment", "due_at": "2026-03-10T10:30:00"}, "due_at"),  # no offset
            ({"kind": "residence_title_expiry", "due_date": "2026-01-01"}, "due_date"),  # in the past
            ({"kind": "referral_answer_due", "due_date": "2026-04-01"}, "referral_id"),
            ({"kind": "referral_answer_due", "due_date": "2026-04-01", "referral_id": str(uuid.uuid4())}, "referral_id"),
            ({"kind": "court_date", "due_date": "2026-04-01"}, "kind"),
            ({"kind": "appointment", "due_at": "2026-03-10T10:30:00+01:00", "lead_times_days": [0]}, "lead_times_days.0"),
        ]:
            resp = await http.post(url, headers=h(JOBCENTER), json=body)
            assert resp.status_code == 422, (body, resp.text)
            assert resp.json()["errors"][0]["field"] == field, (body, resp.json())
        # An organisation that does not see the client: the client does not exist for it.
        assert (await http.post(url, headers=h(KI), json={"kind": "appointment", "due_at": "2026-03-10T10:30:00+01:00"})).status_code == 404
        # Resolving emits once; a second resolve is a conflict.
        deadline_id = d["deadline_id"]
        assert (
            await http.post(f"/v1/deadlines/{deadline_id}/resolve", headers=h(JOBCENTER), json={"resolution": "§25b granted"})
        ).status_code == 200
        assert (await http.post(f"/v1/deadlines/{deadline_id}/resolve", headers=h(JOBCENTER))).status_code == 409


async def test_each_deadline_notice_is_emitted_once_across_a_restart(make_intake, clock, kafka_bootstrap, topic_namespace):
    topic = topic_namespace + topics.DEADLINES
    async with make_intake() as (app, http):
        counted = {n: await metric(http, NOTICES, notice=n) for n in ("approaching", "missed")}
        client_id = (
            await http.post("/v1/clients", json=client_body(residence_title=None, residence_valid_until=None), headers=h(JOBCENTER))
        ).json()["client_id"]
        d = (
            await http.post(
                f"/v1/clients/{client_id}/deadlines",
                headers=h(JOBCENTER),
                json={"kind": "residence_title_expiry", "due_date": "2026-06-30"},
            )
        ).json()
        did = d["deadline_id"]
        due = datetime.fromisoformat(d["due_at"])
        clock.set(due - timedelta(days=89))
        await eventually(lambda: _has(app, did, "approaching:90"))
        # The process goes away right after emitting (as in a crash: no graceful hand-off needed, state is in the DB).
    async with make_intake() as (app, http):
        # The new process scans the same schema with the same "now": nothing is due again.
        await asyncio.sleep(1.0)  # several scan intervals (0.2 s)
        clock.set(due - timedelta(days=29))
        await eventually(lambda: _has(app, did, "approaching:30"))
    async with make_intake() as (app, http):
        clock.set(due - timedelta(days=6, hours=12))
        await eventually(lambda: _has(app, did, "approaching:7"))
        clock.set(due + timedelta(seconds=1))
        await eventually(lambda: _has(app, did, "missed"))
        missed_at = await app.state.runtime.db.pool.fetchval("SELECT missed_at FROM deadlines WHERE deadline_id = $1", uuid.UUID(did))
        assert missed_at == due + timedelta(seconds=1)
        assert {n: await metric(http, NOTICES, notice=n) - c for n, c in counted.items()} == {"approaching": 3, "missed": 1}
        evs = await events(kafka_bootstrap, topic, until=lambda es: any(e.type == "lotse.deadline.missed" for e in es), settle=1.5)
    emitted = [notice_key(e) for e in evs if e.type in ("lotse.deadline.approaching", "lotse.deadline.missed")]
    assert emitted == [
        (did, "lotse.deadline.approaching", 90),
        (did, "lotse.deadline.approaching", 30),
        (did, "lotse.deadline.approaching", 7),
        (did, "lotse.deadline.missed", None),
    ]
    approaching = [e for e in evs if e.type == "lotse.deadline.approaching"]
    assert [e.data.days_left for e in approaching] == [89, 29, 6]
    assert all(e.data.responsible_org == JOBCENTER and e.subject == client_id for e in approaching)


async def _has(app, did: str, notice: str) -> bool:
    return notice in await notices(app, did)


async def test_two_replicas_emit_each_notice_once(make_intake, clock, kafka_bootstrap, topic_namespace):
    async with make_intake() as (a, http_a), make_intake() as (b, http_b):
        ids = []
        for i in range(12):
            http = http_a if i % 2 else http_b
            cid = (
                await http.post("/v1/clients", json=client_body(residence_title=None, residence_valid_until=None), headers=h(JOBCENTER))
            ).json()["client_id"]
            resp = await http.post(
                f"/v1/clients/{cid}/deadlines",
                headers=h(JOBCENTER),
                json={"kind": "appointment", "due_at": (clock.now() + timedelta(days=3, minutes=i)).isoformat()},
            )
            ids.append(resp.json()["deadline_id"])
        # Both replicas' schedulers race for the same rows; also drive extra passes concurrently from both.
        clock.advance(timedelta(days=2, hours=12))
        await asyncio.gather(*(emit_due_deadline_notices(app.state.deps) for app in (a, b, a, b)))
        await eventually(lambda: _all(a, ids, "approaching:1"))
        clock.advance(timedelta(days=1))
        await eventually(lambda: _all(b, ids, "missed"))
        evs = await events(
            kafka_bootstrap,
            topic_namespace + topics.DEADLINES,
            until=lambda es: sum(e.type == "lotse.deadline.missed" for e in es) >= len(ids),
            settle=1.5,
        )
    counts = Counter(notice_key(e) for e in evs if e.type in ("lotse.deadline.approaching", "lotse.deadline.missed"))
    assert set(counts.values()) == {1}
    assert set(counts) == {(i, "lotse.deadline.approaching", 1) for i in ids} | {(i, "lotse.deadline.missed", None) for i in ids}


async def _all(app, ids: list[str], notice: str) -> bool:
    return all([notice in await notices(app, i) for i in ids])
