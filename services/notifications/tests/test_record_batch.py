"""Recording a consumer batch of triggers with few statements (`prepare_triggers`, `record_notifications`), against the
real PostgreSQL: the same rows and announcements as one event at a time, the batch's endpoints and erasures read inside
its transaction (what is committed after `prepare` counts), and a redelivered batch records nothing twice.

The batch is driven as `lotse_kit.consumer` drives it: `prepare` first, then every handler in one transaction with the
prepared value in `consumer._prepared`; one at a time means without it. Statements are counted with asyncpg query loggers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contracts import new_event
from contracts.events import AcknowledgementOverdue, ClientErased, ConsentWithdrawn, ReferralAccepted, ReferralSent
from lotse_kit import consumer
from lotse_kit.clock import ManualClock
from services.notifications.adapters import repository as repo
from services.notifications.domain.model import CLIENT_ERASED
from services.notifications.handlers import EVENT_HANDLERS, prepare_triggers
from services.notifications.handlers.triggers import PreparedTriggers
from tests.fixtures import as_org

from .conftest import AWO, CARITAS, JOBCENTER, OPERATOR, FakeContacts
from .test_delivery import approaching, handed_over, missed, register

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
COLUMNS = """trigger_event_id, trigger_type, client_id, recipient_kind, recipient_org, recipient_key, endpoint_id, channel, template,
             language, payload, concerned_orgs, status, reason, attempts, next_attempt_at, completed_at"""


class Statements:
    """The SQL one connection ran while logged."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, record: Any) -> None:
        self.seen.append(" ".join(record.query.split()))

    def count(self, fragment: str) -> int:
        return sum(1 for q in self.seen if fragment in q)


async def _handle(conn: asyncpg.Connection, envs: Sequence[Any], deps: Any, batch: PreparedTriggers | None) -> None:
    token = consumer._prepared.set(batch)
    try:
        for env in envs:
            await EVENT_HANDLERS[env.type](env, conn, deps)
    finally:
        consumer._prepared.reset(token)


async def _recorded(conn: asyncpg.Connection, envs: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The rows the events caused (without their ids and bookkeeping times), and the `lotse.notification.failed` events
    announced for them in the outbox (each naming its row by trigger, recipient and channel instead of by id)."""
    ids = [e.id for e in envs]
    rows = await conn.fetch(f"SELECT id, {COLUMNS} FROM notifications WHERE trigger_event_id = ANY($1)", ids)
    by_id = {r["id"]: (str(r["trigger_event_id"]), r["recipient_key"], r["channel"]) for r in rows}
    recorded = sorted(json.dumps({k: v for k, v in dict(r).items() if k != "id"}, default=str, sort_keys=True) for r in rows)
    announced = []
    for o in await conn.fetch("SELECT value FROM outbox WHERE event_type = 'lotse.notification.failed'"):
        data = json.loads(bytes(o["value"]))
        if uuid.UUID(data["trigger_event_id"]) in ids:
            data["notification"] = by_id[uuid.UUID(data.pop("notification_id"))]
            announced.append(json.dumps(data, sort_keys=True))
    return recorded, sorted(announced)


def _scenario(contacts: FakeContacts) -> tuple[list[Any], dict[str, uuid.UUID]]:
    """Every kind of row a trigger can cause, and erasures before and within the batch."""
    c = {name: uuid.uuid4() for name in ("olena", "deniz", "refused", "erased_before", "erased_here", "referred", "earlier")}
    contacts.add(c["olena"], language="uk", email="olena@client.test", phone="+4915100000001")
    contacts.add(c["deniz"], language="tr", phone="+4915100000002")  # SMS only: the e-mail route ends without address
    contacts.add(c["erased_here"], language="de", email="gone@client.test")  # a contact intake would still give
    contacts.add(c["referred"], language="ar", email="amira@client.test")
    contacts.add(c["earlier"], language="fa", email="parisa@client.test")
    # c["refused"]: intake refuses (no consent); c["erased_before"]: erased before the batch.
    referral_id, gone_referral = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    envs = [
        approaching(c["olena"]),
        missed(c["deniz"]),
        approaching(c["refused"], org=CARITAS),
        approaching(c["erased_before"]),
        approaching(c["erased_here"]),  # before its erasure: recorded, then ended by it
        new_event(
            ReferralSent(client_id=c["erased_here"], referral_id=gone_referral, from_org=AWO, to_org=CARITAS, service="x", sent_at=now),
            source="/lotse/intake",
            acting_org=AWO,
        ),
        new_event(ClientErased(client_id=c["erased_here"], requested_by_org=JOBCENTER, erased_at=now), source="/lotse/intake"),
        missed(c["erased_here"]),  # after it: nothing for the client
        # An answer to the erased client's referral, forgotten with them: no from_org to notify.
        new_event(
            ReferralAccepted(client_id=c["erased_here"], referral_id=gone_referral, to_org=CARITAS, accepted_at=now),
            source="/lotse/intake",
            acting_org=CARITAS,
        ),
        # An answer to a referral remembered by an earlier batch.
        new_event(
            ReferralAccepted(client_id=c["earlier"], referral_id=c["earlier"], to_org=JOBCENTER, accepted_at=now),
            source="/lotse/intake",
            acting_org=JOBCENTER,
        ),
        new_event(
            ReferralSent(client_id=c["referred"], referral_id=referral_id, from_org=JOBCENTER, to_org=CARITAS, service="x", sent_at=now),
            source="/lotse/intake",
            acting_org=JOBCENTER,
        ),
        # Without from_org: the referral remembered a moment ago in the same transaction names it.
        new_event(
            ReferralAccepted(client_id=c["referred"], referral_id=referral_id, to_org=CARITAS, accepted_at=now),
            source="/lotse/intake",
            acting_org=CARITAS,
        ),
        handed_over(CARITAS, c["olena"]),
        handed_over("unknown-org", c["olena"]),  # technical failure: not in the network file
        new_event(
            ConsentWithdrawn(client_id=c["olena"], consent_id=uuid.uuid4(), withdrawn_at=now, disclosed_to=[CARITAS, AWO, CARITAS]),
            source="/lotse/consent",
            acting_org=JOBCENTER,
        ),
        new_event(
            AcknowledgementOverdue(
                client_id=c["deniz"],
                org=AWO,
                kind="erasure",
                acknowledged_event_id=uuid.uuid4(),
                collecting_org=AWO,  # the same organisation twice: one row
                forwarded_at=now,
                due_at=now,
            ),
            source="/lotse/consent",
            acting_org=OPERATOR,
        ),
    ]
    return envs, c


async def _endpoints(svc: Any, peer: Any) -> None:
    await register(svc, JOBCENTER, "/hooks/jc", peer, event_types=["lotse.deadline.approaching"])  # filters by type
    await register(svc, CARITAS, "/hooks/caritas-1", peer)
    await register(svc, CARITAS, "/hooks/caritas-2", peer, event_types=["lotse.consent.withdrawn"])
    gone = await register(svc, AWO, "/hooks/awo", peer)
    assert (await svc.http.delete(f"/v1/webhook-endpoints/{gone['id']}", headers=as_org(AWO))).status_code == 204  # none for AWO


async def test_a_batch_records_what_one_event_at_a_time_records_with_one_insert_per_event(
    start_service: Any, contacts: FakeContacts, peer: Any
) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        deps = svc.app.state.deps
        await _endpoints(svc, peer)
        envs, c = _scenario(contacts)
        await svc.pool.execute("INSERT INTO erased_clients (client_id, erased_at) VALUES ($1, $2)", c["erased_before"], T0)
        await repo.remember_referral(svc.pool, c["earlier"], CARITAS, JOBCENTER, "y", c["earlier"])  # its id: the client's
        triggers = [e for e in envs if e.type != "lotse.client.erased"]

        async with svc.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await _handle(conn, envs, deps, None)
            one_at_a_time = await _recorded(conn, envs)
            await tx.rollback()

            batch = await prepare_triggers(envs, deps)
            statements = Statements()
            tx = conn.transaction()
            await tx.start()
            conn.add_query_logger(statements)
            await _handle(conn, envs, deps, batch)
            conn.remove_query_logger(statements)
            batched = await _recorded(conn, envs)
            await tx.rollback()

        rows, announced = one_at_a_time
        assert batched == one_at_a_time
        assert len(rows) >= 25 and len(announced) >= 5  # the scenario covers what it means to
        statuses = {json.loads(r)["reason"] for r in rows}
        assert CLIENT_ERASED in statuses and "organisation unknown in the network file" in statuses
        assert any(json.loads(r)["recipient_key"].startswith("endpoint:") for r in rows)
        assert any(json.loads(r)["recipient_key"] == f"org:{CARITAS}" and "referral_accepted" in json.loads(r)["template"] for r in rows)
        # One INSERT per trigger (not per row); the batch's endpoints, erasures and referrals each read once, in the transaction.
        assert statements.count("INSERT INTO notifications") == len(triggers) - 1  # the answer about the erased client has none
        assert statements.count("FROM webhook_endpoints") == 1
        assert statements.count("SELECT client_id FROM erased_clients") == 1
        assert statements.count("SELECT referral_id, from_org") == 1
        assert statements.count("SELECT true FROM erased_clients") == 0


async def test_an_endpoint_registered_or_a_client_erased_after_prepare_is_honoured(
    start_service: Any, contacts: FakeContacts, peer: Any
) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        deps = svc.app.state.deps
        olena, deniz = uuid.uuid4(), uuid.uuid4()
        contacts.add(olena, language="uk", email="olena@client.test")
        contacts.add(deniz, language="tr", email="deniz@client.test")

        # A first batch: AWO has no endpoint, neither client is erased.
        first = [handed_over(AWO, olena), approaching(olena, org=AWO), approaching(deniz, org=AWO)]
        batch = await prepare_triggers(first, deps)
        async with svc.pool.acquire() as conn, conn.transaction():
            await _handle(conn, first, deps, batch)
        assert not await svc.rows("recipient_kind = 'partner_system'")
        assert {r["status"] for r in await svc.rows("recipient_kind = 'client'")} <= {"created", "sending", "delivered"}  # the worker

        # The next batch is prepared; before its transaction opens, AWO registers an endpoint and Olena is erased
        # (committed by another transaction: the HTTP API, another batch or replica).
        second = [handed_over(AWO, olena), approaching(olena, org=AWO), approaching(deniz, org=AWO)]
        batch = await prepare_triggers(second, deps)
        olena_key = (str(olena), AWO)
        assert olena_key in batch.contacts  # prepared while she was not erased
        endpoint = await register(svc, AWO, "/hooks/awo", peer)
        erased = new_event(ClientErased(client_id=olena, requested_by_org=AWO, erased_at=T0), source="/lotse/intake")
        async with svc.pool.acquire() as conn, conn.transaction():
            await EVENT_HANDLERS[erased.type](erased, conn, deps)
        async with svc.pool.acquire() as conn, conn.transaction():
            await _handle(conn, second, deps, batch)

        [hook] = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", second[0].id)
        assert hook["endpoint_id"] == uuid.UUID(endpoint["id"])
        [gone] = await svc.rows("trigger_event_id = $1 AND recipient_kind = 'client'", second[1].id)
        assert (gone["status"], gone["reason"], gone["payload"]) == ("permanent-failure", CLIENT_ERASED, "{}")
        assert batch.contact(*olena_key) is not None  # the prepared contact was there, and not used
        [still] = await svc.rows("trigger_event_id = $1 AND recipient_kind = 'client'", second[2].id)
        assert still["status"] in ("created", "sending", "delivered")


async def test_a_redelivered_batch_records_and_announces_nothing_twice(start_service: Any, contacts: FakeContacts, peer: Any) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        deps = svc.app.state.deps
        await _endpoints(svc, peer)
        envs, _ = _scenario(contacts)
        async with svc.pool.acquire() as conn, conn.transaction():
            await _handle(conn, envs, deps, await prepare_triggers(envs, deps))
        first = {r["id"] for r in await svc.rows("trigger_event_id = ANY($1)", [e.id for e in envs])}
        assert len(first) >= 25

        # The inbox forgot the events (a replay, a new consumer group): again as a batch, then one at a time.
        for batch in (await prepare_triggers(envs, deps), None):
            statements = Statements()
            async with svc.pool.acquire() as conn:
                conn.add_query_logger(statements)
                try:
                    async with conn.transaction():
                        await _handle(conn, envs, deps, batch)
                finally:
                    conn.remove_query_logger(statements)
            assert {r["id"] for r in await svc.rows("trigger_event_id = ANY($1)", [e.id for e in envs])} == first
            assert statements.count("INSERT INTO outbox") == 0  # no failure announced again (the erasure cancels nothing now)
            assert statements.count("pg_notify") == 0  # nothing new to send
            if batch is not None:
                assert not batch.woken
