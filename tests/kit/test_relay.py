"""The outbox relay against the real broker and database: order, retries, delete-after-ack, the backlog gauge.

Each test drives `OutboxRelay.drain_once` itself on a service schema whose runtime is not started
(so no other relay takes the rows), publishing through the broker's own producer
(`kafka.broker_producer`), as the runtime does.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from contracts import decode
from lotse_kit import metrics
from lotse_kit.kafka import broker_producer
from lotse_kit.outbox import OutboxRelay
from lotse_kit.runtime import Runtime
from tests.kafka_helpers import read_topic
from tests.kit.conftest import registered


@dataclass
class Env:
    rt: Runtime
    topic: str
    conn: asyncpg.Connection
    failing: set[str] = field(default_factory=set)  # event ids whose publish raises
    nacked: set[str] = field(default_factory=set)  # event ids whose acknowledgement fails

    def relay(self, publish: Callable[..., Awaitable[Any]] | None = None, **kw: Any) -> OutboxRelay:
        # A failed row waits half a minute or more: it is due again only when a test says so (`backoff_elapsed`).
        kw = {"retry_base_s": 60.0, "retry_max_s": 60.0, **kw}
        return OutboxRelay(
            service=f"relaytest-{self.rt.db.schema}", dsn=self.rt.db.dsn, schema=self.rt.db.schema, publish=publish or self.publish, **kw
        )

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str], event_id: str) -> Any:
        """The runtime's publish (the broker's producer), with failures on demand."""
        if event_id in self.failing:
            raise ConnectionError("the producer refused the record")
        if event_id in self.nacked:
            nack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            nack.set_exception(ConnectionError("Kafka did not acknowledge the record"))
            return nack
        producer = broker_producer(self.rt.broker)
        return await producer.send(self.rt.naming.topic(topic), value=value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])

    async def backoff_elapsed(self) -> None:
        await self.conn.execute("UPDATE outbox SET next_attempt_at = now() WHERE attempts > 0")

    async def outbox(self) -> list[asyncpg.Record]:
        return await self.conn.fetch("SELECT event_id, attempts, last_error, next_attempt_at > now() AS waiting FROM outbox ORDER BY id")


@pytest.fixture
async def env(make_runtime: Callable[..., Runtime], topic: str) -> AsyncIterator[Env]:
    rt = make_runtime()
    await rt.db.start()  # the schema and the outbox table; the runtime (and its relay) stays stopped
    await rt.broker.start()
    conn = await rt.db.connect("relaytest")
    try:
        yield Env(rt, topic, conn)
    finally:
        await conn.close()
        await rt.broker.stop()
        await rt.db.close(5.0)


async def enqueue(e: Env, n: int, clients: int | None = None) -> list[Any]:
    """`n` events for `clients` clients in turn (default: one client each; a drain hands over one row per client)."""
    clients = clients or n
    ids = [uuid.uuid4() for _ in range(clients)]
    envs = [registered(ids[i % clients]) for i in range(n)]
    async with e.rt.db.pool.acquire() as conn, conn.transaction():
        for env in envs:
            await e.rt.outbox.enqueue(conn, env, e.topic)
    return envs


def backlog_gauge(relay: OutboxRelay) -> float | None:
    return metrics.REGISTRY.get_sample_value("lotse_outbox_backlog", {"service": relay.service})


async def drain_all(e: Env, relay: OutboxRelay) -> None:
    while await relay.drain_once(e.conn):
        pass


def test_broker_producer_is_the_brokers_idempotent_acks_all_producer(env: Env) -> None:
    producer = broker_producer(env.rt.broker)
    assert producer._txn_manager is not None  # idempotent: a producer id and sequence numbers per partition
    assert producer._sender._acks in ("all", -1)
    assert producer.client._client_id == f"lotse-{env.rt.service}"


async def test_order_per_partition_is_kept_even_when_publish_yields(env: Env, kafka_bootstrap: str) -> None:
    """Rows reach Kafka in id order per client key, however long each publish takes to hand its record over."""
    envs = await enqueue(env, 60, clients=4)

    async def slow_publish(*args: Any) -> Any:
        await asyncio.sleep(random.uniform(0, 0.01))  # e.g. waiting for metadata or for a full batch to drain
        return await env.publish(*args)

    relay = env.relay(slow_publish, batch_size=25)  # several drains
    await drain_all(env, relay)

    records = await read_topic(kafka_bootstrap, env.topic, until=60, settle=0.5)
    by_key: dict[bytes, list[Any]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(r.key, []).append(decode(r.headers, r.value).id)
    expected: dict[bytes, list[Any]] = {}
    for x in envs:
        expected.setdefault(str(x.data.client_id).encode(), []).append(x.id)
    assert by_key == expected
    assert await env.outbox() == []


async def test_rows_are_deleted_only_after_kafka_acknowledged_them(env: Env) -> None:
    envs = await enqueue(env, 5)
    acks: list[asyncio.Future[Any]] = []

    async def held_publish(*args: Any) -> Any:
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acks.append(ack)
        return ack

    relay = env.relay(held_publish)
    drain = asyncio.create_task(relay.drain_once(env.conn))
    while len(acks) < len(envs):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    # Every record handed over, none acknowledged: every row is still there (read on another connection).
    assert not drain.done()
    assert await env.rt.db.pool.fetchval("SELECT count(*) FROM outbox") == len(envs)
    for ack in acks[:3]:
        ack.set_result(None)
    acks[3].set_exception(ConnectionError("not acknowledged"))
    acks[4].set_result(None)
    assert await drain == 4
    [left] = await env.outbox()
    assert left["event_id"] == envs[3].id and left["attempts"] == 1


async def test_failed_rows_are_retried_with_backoff_and_not_lost(env: Env, kafka_bootstrap: str) -> None:
    envs = await enqueue(env, 6)
    env.nacked = {str(envs[1].id)}  # Kafka refuses its acknowledgement
    env.failing = {str(envs[5].id)}  # the producer refuses it outright (the last row: none held back behind it)
    relay = env.relay()

    assert await relay.drain_once(env.conn) == 4
    rows = {r["event_id"]: r for r in await env.outbox()}
    assert set(rows) == {envs[1].id, envs[5].id}
    for r in rows.values():
        assert r["attempts"] == 1 and r["waiting"] and "ConnectionError" in r["last_error"]
    # Not due yet: the next drain leaves them alone.
    assert await relay.drain_once(env.conn) == 0

    env.nacked = set()
    env.failing = set()
    await env.backoff_elapsed()
    assert await relay.drain_once(env.conn) == 2
    assert await env.outbox() == []
    records = await read_topic(kafka_bootstrap, env.topic, until=6, settle=0.5)
    assert sorted(decode(r.headers, r.value).id for r in records) == sorted(x.id for x in envs)  # each exactly once


def ids_by_key(records: list[Any]) -> dict[bytes, list[Any]]:
    by_key: dict[bytes, list[Any]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(r.key, []).append(decode(r.headers, r.value).id)
    return by_key


async def test_a_row_that_fails_holds_back_the_later_rows_of_its_client_until_it_is_published(env: Env, kafka_bootstrap: str) -> None:
    """Issue 15: a failed acknowledgement (e.g. the partition leader died) must not let a client's later
    events overtake it, in the same drain or in the drains until its retry."""
    a, other, b = await enqueue(env, 3, clients=2)  # a and b: client 0; other: client 1
    env.nacked = {str(a.id)}
    relay = env.relay()

    assert await relay.drain_once(env.conn) == 1  # `other`; b was not handed over behind a
    assert relay.deferred == 1
    assert [(r["event_id"], r["attempts"]) for r in await env.outbox()] == [(a.id, 1), (b.id, 0)]
    # While a waits for its retry, b and a row of client 0 committed later stay in the outbox.
    assert await relay.drain_once(env.conn) == 0
    [later] = [registered(a.data.client_id)]
    async with env.rt.db.pool.acquire() as conn, conn.transaction():
        await env.rt.outbox.enqueue(conn, later, env.topic)
    assert await relay.drain_once(env.conn) == 0

    env.nacked = set()
    await env.backoff_elapsed()
    await drain_all(env, relay)
    assert await env.outbox() == []
    records = await read_topic(kafka_bootstrap, env.topic, until=4, settle=0.5)
    assert ids_by_key(records) == {str(a.data.client_id).encode(): [a.id, b.id, later.id], str(other.data.client_id).encode(): [other.id]}


async def test_a_drain_hands_over_one_row_per_client_and_the_relay_drains_the_rest_at_once(env: Env, kafka_bootstrap: str) -> None:
    """Each row of a client goes to the producer only after the previous one was acknowledged; the relay
    drains again at once instead of waiting for its poll."""
    envs = await enqueue(env, 8, clients=2)
    relay = env.relay(poll_interval_s=300.0)  # a drain after the first one can only come from the held-back rows
    relay.start()
    try:
        records = await read_topic(kafka_bootstrap, env.topic, until=8, timeout=30)
    finally:
        await relay.stop(timeout_s=10)
    expected: dict[bytes, list[Any]] = {}
    for x in envs:
        expected.setdefault(str(x.data.client_id).encode(), []).append(x.id)
    assert ids_by_key(records) == expected


async def test_a_row_the_producer_refuses_holds_back_the_later_rows_of_its_topic(env: Env) -> None:
    """They would fail alike (and overtake it otherwise): they stay due, untried, for the next drain."""
    envs = await enqueue(env, 4)
    env.failing = {str(envs[1].id)}
    relay = env.relay()
    assert await relay.drain_once(env.conn) == 1
    rows = await env.outbox()
    assert [r["event_id"] for r in rows] == [x.id for x in envs[1:]]
    assert [r["attempts"] for r in rows] == [1, 0, 0]
    assert backlog_gauge(relay) == 3
    env.failing = set()
    assert await relay.drain_once(env.conn) == 2  # the untried ones; the failed one waits for its retry
    await env.backoff_elapsed()
    assert await relay.drain_once(env.conn) == 1
    assert await env.outbox() == []


class CountingConnection:
    """Passes every call to the connection and remembers the statements."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)

        async def call(query: str, *args: Any, **kw: Any) -> Any:
            self.statements.append(query)
            return await method(query, *args, **kw)

        return call

    def counts(self) -> int:
        return sum("count(*)" in q for q in self.statements)


async def test_the_backlog_gauge_is_right_without_counting_on_every_drain(env: Env) -> None:
    relay = env.relay(batch_size=10, backlog_count_interval_s=3600)
    conn = CountingConnection(env.conn)

    async def check(expected: int) -> None:
        assert await env.conn.fetchval("SELECT count(*) FROM outbox") == expected
        assert backlog_gauge(relay) == expected

    envs = await enqueue(env, 25)
    assert await relay.drain_once(conn) == 10  # type: ignore[arg-type]  # the first drain counts: 15 left
    await check(15)
    env.nacked = {str(envs[12].id)}
    env.failing = {str(envs[21].id)}
    assert await relay.drain_once(conn) == 9  # type: ignore[arg-type]  # full batch, counted recently: the gauge keeps its count
    assert await relay.drain_once(conn) == 1  # type: ignore[arg-type]  # 21 refused, 22-24 held back
    await check(5)
    assert await relay.drain_once(conn) == 3  # type: ignore[arg-type]
    await check(2)
    await enqueue(env, 3)
    env.nacked = env.failing = set()
    await env.backoff_elapsed()
    assert await relay.drain_once(conn) == 5  # type: ignore[arg-type]  # the two retries and the three new rows
    await check(0)
    assert await relay.drain_once(conn) == 0  # type: ignore[arg-type]
    await check(0)
    assert conn.counts() == 1  # only the first drain counted


async def test_with_a_linger_the_commits_of_a_burst_share_one_drain(env: Env, kafka_bootstrap: str) -> None:
    relay = env.relay(poll_interval_s=300.0, linger_s=2.0)  # only a NOTIFY wakes it; the burst is well inside the linger
    drains: list[int] = []
    drain_once = relay.drain_once

    async def counted(conn: asyncpg.Connection) -> int:
        published = await drain_once(conn)
        if published:
            drains.append(published)
        return published

    relay.drain_once = counted  # type: ignore[method-assign]  # the relay's loop looks it up on the instance
    relay.start()
    try:
        while not relay.is_leader:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # its first, empty drain is done
        envs = [x for _ in range(5) for x in await enqueue(env, 1)]  # five commits, five NOTIFYs
        records = await read_topic(kafka_bootstrap, env.topic, until=5, settle=0.5)
    finally:
        await relay.stop(timeout_s=10)
    assert sorted(decode(r.headers, r.value).id for r in records) == sorted(x.id for x in envs)
    assert drains == [5]


async def test_a_row_committed_during_a_drain_is_published_without_waiting_for_the_poll(env: Env, kafka_bootstrap: str) -> None:
    in_drain, proceed = asyncio.Event(), asyncio.Event()

    async def publish_first_held(*args: Any) -> Any:
        if not in_drain.is_set():
            in_drain.set()
            await proceed.wait()
        return await env.publish(*args)

    relay = env.relay(publish_first_held, poll_interval_s=300.0)  # only a NOTIFY can wake it within the test
    relay.start()
    try:
        while not relay.is_leader:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # its first, empty drain is done
        [first] = await enqueue(env, 1)
        await asyncio.wait_for(in_drain.wait(), timeout=20)
        [second] = await enqueue(env, 1)  # committed while the drain that publishes `first` runs
        await asyncio.sleep(0.5)  # its NOTIFY reaches the relay's connection
        proceed.set()
        records = await read_topic(kafka_bootstrap, env.topic, until=2, timeout=20)
    finally:
        await relay.stop(timeout_s=10)
    assert sorted(decode(r.headers, r.value).id for r in records) == sorted([first.id, second.id])


async def test_rows_kafka_never_acknowledges_are_recorded_failed_after_the_ack_timeout(env: Env) -> None:
    """With the partition leader unreachable the producer retries for ever: the relay must not wait with it."""
    envs = await enqueue(env, 3)
    hanging: list[asyncio.Future[Any]] = []

    async def publish_to_a_leader_that_never_answers(*_args: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        hanging.append(fut)
        return fut

    relay = env.relay(publish_to_a_leader_that_never_answers, ack_timeout_s=0.5)
    assert await asyncio.wait_for(relay.drain_once(env.conn), timeout=10) == 0
    rows = await env.outbox()
    assert [r["event_id"] for r in rows] == [e.id for e in envs]  # nothing lost
    assert all(r["attempts"] == 1 and r["waiting"] and "no acknowledgement" in r["last_error"] for r in rows)
    hanging[0].set_exception(ConnectionError("late"))  # a late outcome is swallowed, not reported as unretrieved
    await asyncio.sleep(0)
    # Retried later through a working producer: published, then deleted.
    await env.backoff_elapsed()
    assert await env.relay().drain_once(env.conn) == 3
    assert await env.outbox() == []


async def test_enqueue_many_writes_the_events_in_the_order_given_and_checks_each(env: Env, kafka_bootstrap: str) -> None:
    from contracts import new_event
    from contracts.events import ConsentExpired
    from lotse_kit.declaration import UndeclaredEvent

    envs = [registered() for _ in range(5)]
    async with env.rt.db.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await env.rt.outbox.enqueue_many(conn, envs, env.topic)
        async with conn.transaction():
            await env.rt.outbox.enqueue_many(conn, list(reversed(envs)), env.topic)
            await env.rt.outbox.enqueue_many(conn, [], env.topic)  # nothing to do
    assert [r["event_id"] for r in await env.outbox()] == [e.id for e in reversed(envs)]
    undeclared = new_event(
        ConsentExpired(client_id=uuid.uuid4(), consent_id=uuid.uuid4(), expired_at=registered().time),
        source="/lotse/kittest",
        acting_org="jobcenter-paderborn",
    )
    with pytest.raises(UndeclaredEvent):
        async with env.rt.db.pool.acquire() as conn, conn.transaction():
            await env.rt.outbox.enqueue_many(conn, [registered(), undeclared], env.topic)
    assert len(await env.outbox()) == 5  # the refused call wrote nothing
    await drain_all(env, env.relay())
    records = await read_topic(kafka_bootstrap, env.topic, until=5)
    assert sorted(decode(r.headers, r.value).id for r in records) == sorted(e.id for e in envs)


async def test_a_producer_that_never_takes_the_record_fails_it_after_the_timeout(env: Env) -> None:
    """E.g. waiting for metadata of a topic while Kafka is away: bounded like the acknowledgements."""
    envs = await enqueue(env, 3, clients=1)

    async def publish_that_waits_for_metadata_for_ever(*_args: Any) -> Any:
        await asyncio.Event().wait()

    relay = env.relay(publish_that_waits_for_metadata_for_ever, ack_timeout_s=0.5)
    assert await asyncio.wait_for(relay.drain_once(env.conn), timeout=10) == 0
    rows = await env.outbox()
    assert [r["event_id"] for r in rows] == [e.id for e in envs]
    # The first is failed; the later rows of its topic were not tried (they would overtake it).
    assert [r["attempts"] for r in rows] == [1, 0, 0]
    assert "did not take the record" in rows[0]["last_error"]


@pytest.mark.parametrize("failure", [RuntimeError("teardown failed"), asyncio.CancelledError()])
async def test_the_relay_leads_again_after_an_unexpected_failure(env: Env, kafka_bootstrap: str, failure: BaseException) -> None:
    """Issue 15 (a PostgreSQL restart under load): an error outside the transient list, or a cancellation nobody
    asked for, ended the relay for good and left every later event in the outbox until the service restarted."""
    relay = env.relay(poll_interval_s=0.2, retry_base_s=0.05, retry_max_s=0.1)
    lead = relay._lead
    failed: list[BaseException] = []

    async def lead_failing_once() -> None:
        if not failed:
            failed.append(failure)
            raise failure
        await lead()

    relay._lead = lead_failing_once  # type: ignore[method-assign]  # the relay's loop looks it up on the instance
    relay.start()
    try:
        [x] = await enqueue(env, 1)
        records = await read_topic(kafka_bootstrap, env.topic, until=1, timeout=30)
        assert relay.running
    finally:
        await relay.stop(timeout_s=10)
    assert failed and [decode(r.headers, r.value).id for r in records] == [x.id]
    assert not relay.running  # a real stop still ends it


async def test_the_relay_leads_again_after_its_connection_is_terminated(env: Env, kafka_bootstrap: str) -> None:
    relay = env.relay(poll_interval_s=0.2, retry_base_s=0.05, retry_max_s=0.1)
    relay.start()
    try:
        while not relay.is_leader:
            await asyncio.sleep(0.05)
        app = f"lotse-{relay.service}-relay"
        assert (
            await env.conn.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app) == 1
        )
        [x] = await enqueue(env, 1)
        records = await read_topic(kafka_bootstrap, env.topic, until=1, timeout=30)
        assert relay.running
    finally:
        await relay.stop(timeout_s=10)
    assert [decode(r.headers, r.value).id for r in records] == [x.id]
