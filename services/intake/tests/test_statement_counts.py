"""How many SQL statements a referral answer costs (each is a round trip and ~25 µs of asyncpg CPU; issue 14).

A partner's acceptance arrives on its outbox topic; the consumer's handler reads the referral with what it needs of
its client, updates it and resolves its answer deadline, one statement each (its events are written with the rest of
the consumer batch's outbox rows, outside the handler). The HTTP answer does the same plus its own transaction and
one statement for the events. These tests count the statements and check the effects are the same as ever.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from contracts import topics
from contracts.events import ReferralAccepted
from contracts.vocab import DataCategory, Purpose
from lotse_kit import outbox
from services.intake.entrypoints.consumers import DECLARATION
from tests.kafka_helpers import eventually

from .conftest import CARITAS, JOBCENTER, KI, events, h
from .test_referrals import partner_answer, refer, register

_COUNTING: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("statement_counting", default=None)


@pytest.fixture
def count_statements(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Counts the statements asyncpg sends while `_COUNTING` holds a list (in that task only): a prepared statement
    (`_do_execute`, behind fetch* and execute with arguments) or a simple query (`execute` without arguments:
    BEGIN, COMMIT). Returns a function that starts a new list in the caller's context."""
    do_execute = asyncpg.connection.Connection._do_execute
    execute = asyncpg.connection.Connection.execute

    def counted_do_execute(self: Any, query: Any, *a: Any, **k: Any) -> Any:
        seen = _COUNTING.get()
        if seen is not None:
            seen.append(" ".join(str(query).split())[:90])
        return do_execute(self, query, *a, **k)

    def counted_execute(self: Any, query: str, *args: Any, **k: Any) -> Any:
        seen = _COUNTING.get()
        if seen is not None and not args:
            seen.append(" ".join(query.split())[:90])
        return execute(self, query, *args, **k)

    monkeypatch.setattr(asyncpg.connection.Connection, "_do_execute", counted_do_execute)
    monkeypatch.setattr(asyncpg.connection.Connection, "execute", counted_execute)

    def start() -> list[str]:
        seen: list[str] = []
        _COUNTING.set(seen)
        return seen

    return start


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(subject, type) of every event written to an outbox, in the order written."""
    seen: list[tuple[str, str]] = []
    encode_into = outbox._encode_into

    def recording(rows: Any, evs: Any) -> None:
        seen.extend((str(env.subject), env.type) for env, _topic in evs)
        encode_into(rows, evs)

    monkeypatch.setattr(outbox, "_encode_into", recording)
    return seen


async def _deadlines(app: Any, referral_id: str) -> list[tuple[str, str]]:
    rows = await app.state.runtime.db.pool.fetch(
        "SELECT kind, status FROM deadlines WHERE referral_id = $1 ORDER BY kind", uuid.UUID(referral_id)
    )
    return [(r["kind"], r["status"]) for r in rows]


async def test_a_partner_acceptance_costs_three_statements_and_one_more_for_an_appointment(
    make_intake, consent, kafka_bootstrap, topic_namespace, monkeypatch, count_statements, enqueued
):
    # The handler's own statements, per acceptance: counted in the consumer's task while the handler runs.
    per_answer: list[list[str]] = []
    [subscription] = [s for s in DECLARATION.subscriptions if s.name == "partner-answers"]
    original = subscription.handlers["lotse.referral.accepted"]

    async def counting_handler(env: Any, conn: Any, deps: Any) -> None:
        per_answer.append(count_statements())
        try:
            await original(env, conn, deps)
        finally:
            _COUNTING.set(None)

    monkeypatch.setitem(subscription.handlers, "lotse.referral.accepted", counting_handler)
    async with make_intake() as (app, http):
        client_id = await register(http)
        cid = uuid.UUID(client_id)
        consent.grant(cid, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        plain, with_appointment = (await refer(http, client_id))["referral_id"], (await refer(http, client_id))["referral_id"]
        now = datetime.now(UTC)
        for rid, appointment in ((plain, None), (with_appointment, now + timedelta(days=20))):
            await partner_answer(
                kafka_bootstrap,
                topic_namespace,
                KI,
                ReferralAccepted(client_id=cid, referral_id=uuid.UUID(rid), to_org=KI, accepted_at=now, appointment_at=appointment),
            )
            await eventually(lambda rid=rid: _accepted(app, rid))
        assert len(per_answer) == 2, per_answer
        # The referral with its client's erasure and responsible organisation (one statement, the referral locked),
        # its update, its open deadlines resolved; the appointment deadline is one insert more. (Before: 5 and 6.)
        assert [len(s) for s in per_answer] == [3, 4], per_answer
        # The same effects as ever: the answer deadline resolved, the appointment deadline registered and open.
        assert await _deadlines(app, plain) == [("referral_answer_due", "resolved")]
        assert await _deadlines(app, with_appointment) == [("appointment", "open"), ("referral_answer_due", "resolved")]
        await _events_as_ever(kafka_bootstrap, topic_namespace, plain, with_appointment, enqueued, client_id)


async def test_an_http_acceptance_costs_four_statements_in_its_transaction_and_one_more_for_an_appointment(
    make_intake, consent, kafka_bootstrap, topic_namespace, count_statements, enqueued
):
    async with make_intake() as (app, http):
        client_id = await register(http)
        consent.grant(uuid.UUID(client_id), KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        plain, with_appointment = (await refer(http, client_id))["referral_id"], (await refer(http, client_id))["referral_id"]
        counts = []
        for rid, body in ((plain, {}), (with_appointment, {"appointment_at": (datetime.now(UTC) + timedelta(days=20)).isoformat()})):
            seen = count_statements()
            resp = await http.post(f"/v1/referrals/{rid}/accept", headers=h(KI), json=body)
            _COUNTING.set(None)
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "accepted" and resp.json()["from_org"] == JOBCENTER
            counts.append(seen[seen.index("BEGIN;") + 1 : seen.index("COMMIT;")])
        # Between BEGIN and COMMIT: the referral with its client, its update, its deadlines resolved, its events in one
        # statement; the appointment deadline's insert (its event goes with the others). Before: 7 and 9.
        assert [len(s) for s in counts] == [4, 5], counts
        assert await _deadlines(app, plain) == [("referral_answer_due", "resolved")]
        assert await _deadlines(app, with_appointment) == [("appointment", "open"), ("referral_answer_due", "resolved")]
        await _events_as_ever(kafka_bootstrap, topic_namespace, plain, with_appointment, enqueued, client_id)


async def test_an_answer_that_waited_for_a_hand_over_reads_the_client_as_it_is_now(make_intake, consent):
    """The referral and its client are read in one statement, which may wait for the referral's lock. A case hand-over
    changes the client and moves its open referrals in one transaction: an acceptance that waited for it must see the
    new responsible organisation (its appointment deadline goes there), as when the client was read after the lock."""
    async with make_intake() as (app, http):
        client_id = await register(http)
        consent.grant(uuid.UUID(client_id), KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        rid = (await refer(http, client_id))["referral_id"]
        pool = app.state.runtime.db.pool
        async with pool.acquire() as other:
            tx = other.transaction()
            await tx.start()
            # What hand_over_case writes (clients.py), held open while the acceptance comes.
            await other.execute("UPDATE clients SET responsible_org = $2 WHERE client_id = $1", uuid.UUID(client_id), CARITAS)
            await other.execute("UPDATE referrals SET from_org = $2 WHERE referral_id = $1", uuid.UUID(rid), CARITAS)
            appointment = datetime.now(UTC) + timedelta(days=20)
            accept = asyncio.create_task(
                http.post(f"/v1/referrals/{rid}/accept", headers=h(KI), json={"appointment_at": appointment.isoformat()})
            )
            try:
                await eventually(lambda: _blocks_someone(pool, other.get_server_pid()))
            finally:
                await tx.commit()
            resp = await accept
        assert resp.status_code == 200, resp.text
        assert resp.json()["from_org"] == CARITAS
        rows = await pool.fetch("SELECT responsible_org FROM deadlines WHERE referral_id = $1 AND kind = 'appointment'", uuid.UUID(rid))
        assert [r["responsible_org"] for r in rows] == [CARITAS]


async def _events_as_ever(
    kafka_bootstrap: str, topic_namespace: str, plain: str, with_appointment: str, enqueued: list[tuple[str, str]], client_id: str
) -> None:
    """Every event of the two acceptances, in the order it always had: accepted, then the answer deadline's
    resolution, then (for the appointment) its registration; in the outbox and on their topics."""
    assert [t for subject, t in enqueued if subject == client_id][-5:] == [
        "lotse.referral.accepted",
        "lotse.deadline.resolved",
        "lotse.referral.accepted",
        "lotse.deadline.resolved",
        "lotse.deadline.registered",
    ]
    mine = {plain, with_appointment}
    got = await events(
        kafka_bootstrap,
        topic_namespace + topics.DEADLINES,
        until=lambda es: sum(e.type == "lotse.deadline.registered" and e.data.kind.value == "appointment" for e in es) >= 1,
    )
    ours = [(str(e.data.referral_id), e.type, e.data.kind.value) for e in got if str(e.data.referral_id) in mine]
    assert ours == [
        (plain, "lotse.deadline.registered", "referral_answer_due"),
        (with_appointment, "lotse.deadline.registered", "referral_answer_due"),
        (plain, "lotse.deadline.resolved", "referral_answer_due"),
        (with_appointment, "lotse.deadline.resolved", "referral_answer_due"),
        (with_appointment, "lotse.deadline.registered", "appointment"),
    ]
    referrals = await events(kafka_bootstrap, topic_namespace + topics.REFERRALS, until=4)
    assert [(str(e.data.referral_id), e.type) for e in referrals] == [
        (plain, "lotse.referral.sent"),
        (with_appointment, "lotse.referral.sent"),
        (plain, "lotse.referral.accepted"),
        (with_appointment, "lotse.referral.accepted"),
    ]


async def _blocks_someone(pool: Any, pid: int) -> bool:
    """Whether a backend waits for a lock the backend `pid` holds (the acceptance, waiting for the referral)."""
    return bool(await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid))


async def _accepted(app: Any, referral_id: str) -> bool:
    status = await app.state.runtime.db.pool.fetchval("SELECT status FROM referrals WHERE referral_id = $1", uuid.UUID(referral_id))
    return bool(status == "accepted")
