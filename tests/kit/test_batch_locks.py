"""A subscription's batch lock (lotse_kit.declaration.LockBatch), against the real database: two consumers whose
batches update the same rows in opposite orders deadlock without it (PostgreSQL aborts one after deadlock_timeout
and its consumer redoes the batch one event at a time); with it, each batch locks its rows in one order first, the
second waits for the first, and neither falls back. Every event is applied once either way."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from contracts import Envelope
from lotse_kit.consumer import EventConsumer
from tests.kit.conftest import registered
from tests.kit.test_batch_consumer import HANDLED
from tests.kit.test_outbox_batching import record_of

# How long a batch's first handler waits for the other batch to have locked its own first row. The other batch
# either does so at once (no batch lock: both hold one row, then each wants the other's) or is blocked behind this
# batch's locks (batch lock), and then this wait runs out and the batch goes on. Not an assertion.
MEET_S = 0.5


async def bump(env: Envelope[Any], conn: asyncpg.Connection, deps: dict[str, Any]) -> None:
    await conn.execute("UPDATE counters SET n = n + 1 WHERE client_id = $1", env.data.client_id)
    if not deps["met"]:  # the first handler call of this consumer's first batch: meet the other batch there
        deps["met"] = True
        deps["mine"].set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(deps["theirs"].wait(), MEET_S)


async def lock_counters(envs: Sequence[Envelope[Any]], conn: asyncpg.Connection, deps: Any) -> None:
    ids = sorted({env.data.client_id for env in envs})
    await conn.execute("SELECT FROM counters WHERE client_id = ANY($1::uuid[]) ORDER BY client_id FOR UPDATE", ids)


async def run_opposite_batches(make_runtime: Any, runtimes: list[Any], topic: str, *, lock: Any) -> tuple[list[EventConsumer], Any]:
    rt = make_runtime()
    await rt.start()
    runtimes.append(rt)
    first, second = sorted([uuid.uuid4(), uuid.uuid4()])
    await rt.db.pool.executemany("INSERT INTO counters (client_id) VALUES ($1)", [(first,), (second,)])
    gates = [asyncio.Event(), asyncio.Event()]
    consumers = [
        EventConsumer(
            service="kittest",
            name=f"locks-{i}",
            pool_getter=lambda: rt.db.pool,
            bootstrap=rt.kafka,
            handlers={HANDLED: bump},
            deps={"met": False, "mine": gates[i], "theirs": gates[1 - i]},
            topics=[topic],
            dead_letters=rt.dead_letters,
            lock=lock,
        )
        for i in range(2)
    ]
    # Batch 0 touches first then second; batch 1 second then first.
    batches = [
        [registered(client_id=first), registered(client_id=second)],
        [registered(client_id=second), registered(client_id=first)],
    ]
    await asyncio.gather(
        *(c.handle_batch([record_of(e, topic, j) for j, e in enumerate(b)]) for c, b in zip(consumers, batches, strict=True))
    )
    return consumers, rt


async def counts(rt: Any) -> list[int]:
    return [r["n"] for r in await rt.db.pool.fetch("SELECT n FROM counters ORDER BY client_id")]


async def test_without_a_batch_lock_opposite_batches_deadlock_and_one_falls_back(make_runtime, runtimes, topic):
    # The failure the batch lock prevents, shown on the real database (and that the scenario below is a real one).
    consumers, rt = await run_opposite_batches(make_runtime, runtimes, topic, lock=None)
    assert sorted(c.fallbacks for c in consumers) == [0, 1]
    assert await counts(rt) == [2, 2]


async def test_with_a_batch_lock_opposite_batches_wait_in_turn_and_neither_falls_back(make_runtime, runtimes, topic):
    consumers, rt = await run_opposite_batches(make_runtime, runtimes, topic, lock=lock_counters)
    assert [c.fallbacks for c in consumers] == [0, 0]
    assert [c.batches for c in consumers] == [1, 1]
    assert await counts(rt) == [2, 2]


async def test_the_batch_lock_sees_only_the_batchs_new_events_and_runs_in_its_transaction(make_runtime, runtimes, topic):
    rt = make_runtime()
    await rt.start()
    runtimes.append(rt)
    client = uuid.uuid4()
    await rt.db.pool.execute("INSERT INTO counters (client_id) VALUES ($1)", client)
    seen: list[list[uuid.UUID]] = []

    async def watching(envs: Sequence[Envelope[Any]], conn: asyncpg.Connection, deps: Any) -> None:
        seen.append([env.id for env in envs])
        # Inside the batch's transaction: its processed_events rows are visible here, not yet committed.
        assert await conn.fetchval("SELECT count(*) FROM processed_events WHERE event_id = ANY($1::uuid[])", [e.id for e in envs]) == len(
            envs
        )
        assert conn.is_in_transaction()

    async def count(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        await conn.execute("UPDATE counters SET n = n + 1 WHERE client_id = $1", env.data.client_id)

    consumer = EventConsumer(
        service="kittest",
        name="locks-seen",
        pool_getter=lambda: rt.db.pool,
        bootstrap=rt.kafka,
        handlers={HANDLED: count},
        topics=[topic],
        dead_letters=rt.dead_letters,
        lock=watching,
    )
    envs = [registered(client_id=client) for _ in range(3)]
    await consumer.handle_batch([record_of(e, topic, i) for i, e in enumerate(envs)])
    # Redelivered with two new ones: the lock is asked about the new ones only.
    more = [registered(client_id=client) for _ in range(2)]
    await consumer.handle_batch([record_of(e, topic, i) for i, e in enumerate([*envs, *more])])
    # A batch with one new event needs no lock of its own: the event locks what it touches.
    last = registered(client_id=client)
    await consumer.handle_batch([record_of(e, topic, i) for i, e in enumerate([envs[0], last])])
    assert seen == [[e.id for e in envs], [e.id for e in more]]
    assert await rt.db.pool.fetchval("SELECT n FROM counters WHERE client_id = $1", client) == 6
