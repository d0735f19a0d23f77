"""A consumer batch's outbox rows, against the real broker and database: the rows every handler of a batch enqueues
go to PostgreSQL in one statement just before the batch commits (lotse_kit.outbox.collecting), in the order of the
enqueue calls, each stamped with its handler's trace context; a handler's own transaction on another connection
writes at once; a crash or a stop mid-batch leaves no row; the one-at-a-time fallback writes each record's rows.

The tests hold the relay's advisory lock, so no relay publishes (and deletes) the rows they look at."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import Envelope, encode, new_event
from contracts.events import ClientRegistered, ConsentExpired
from lotse_kit import tracing
from lotse_kit.consumer import ConsumerStopping, Rejected
from lotse_kit.declaration import UndeclaredEvent
from tests.kafka_helpers import eventually
from tests.kit.conftest import record_effect
from tests.kit.test_batch_consumer import HANDLED, N, count_is, effect_ids, produce, same_client, start

# The one-partition topic: whatever waits when the consumer starts is its first batch.
from tests.kit.test_batch_consumer import topic as topic

FOLLOW_UP_ORG = "caritas-paderborn"
_IDS = uuid.UUID("6f1d3c2e-0b7a-4d52-9a51-1b0e6c3f2a10")
INSERTS_INTO_OUTBOX = "INSERT INTO outbox"


def follow_up_event(env: Envelope[Any], i: int = 0) -> Envelope[Any]:
    """The i-th event `env`'s handler enqueues, with an id derived from both (so a test knows every row's id)."""
    data = env.data.model_copy(update={"registering_org": FOLLOW_UP_ORG, "responsible_org": FOLLOW_UP_ORG})
    return new_event(data, source="/lotse/kittest", acting_org=FOLLOW_UP_ORG, event_id=uuid.uuid5(_IDS, f"{env.id}/{i}"))


async def follow_up(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
    """An effect and one follow-up event in the batch's transaction (also tests/kit/crash_batch_consumer.py's)."""
    await record_effect(env, conn, deps)
    await deps["runtime"].outbox.enqueue(conn, follow_up_event(env), deps["topic"])


@pytest.fixture
async def relay_held(database_url: str, unique: str) -> AsyncIterator[None]:
    """Holds the relay's advisory lock of the tests' schema: every relay stands by, the rows stay in the outbox."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"lotse-outbox-relay:kt_{unique}")
        yield
    finally:
        await conn.close()


async def outbox_ids(rt: Any) -> list[uuid.UUID]:
    return [r["event_id"] for r in await rt.db.pool.fetch("SELECT event_id FROM outbox ORDER BY id")]


async def start_enqueuing(make_runtime: Any, runtimes: Any, handler: Any) -> tuple[Any, Any]:
    deps: dict[str, Any] = {}
    rt, consumer = await start(make_runtime, runtimes, handler, deps=deps)
    deps.update(runtime=rt, topic=rt.declaration.publications[0].channel)
    return rt, consumer


async def test_a_batch_writes_every_handlers_outbox_rows_in_one_statement_in_enqueue_order(
    make_runtime, runtimes, topic, kafka_bootstrap, relay_held
):
    envs = same_client(N)
    position = {e.id: i for i, e in enumerate(envs)}
    expected: list[uuid.UUID] = []
    statements: list[str] = []
    logged: set[int] = set()

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        if id(conn) not in logged:  # the batch's connection: every statement from here to its commit
            logged.add(id(conn))
            conn.add_query_logger(lambda q: statements.append(q.query))
        # 1-3 events per handler, by enqueue and enqueue_many, between the handler's own statements.
        n = position[env.id] % 3 + 1
        first, *more = [follow_up_event(env, i) for i in range(n)]
        await deps["runtime"].outbox.enqueue(conn, first, deps["topic"])
        await record_effect(env, conn, deps)
        await deps["runtime"].outbox.enqueue_many(conn, more, deps["topic"])
        expected.extend(e.id for e in (first, *more))

    await produce(kafka_bootstrap, topic, envs)
    rt, consumer = await start_enqueuing(make_runtime, runtimes, handler)
    await eventually(count_is(rt, N), timeout=60)

    assert (consumer.batches, consumer.fallbacks) == (1, 0)
    assert len(expected) == sum(i % 3 + 1 for i in range(N))
    assert await outbox_ids(rt) == expected  # ids (the relay's order) follow the enqueue calls exactly
    assert sum(INSERTS_INTO_OUTBOX in q for q in statements) == 1
    # Rows of one statement share its command id (cmin) within the batch's one transaction (xmin), the effects' too.
    assert await rt.db.pool.fetchval("SELECT count(DISTINCT cmin::text) FROM outbox") == 1
    assert (
        await rt.db.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM (SELECT xmin FROM outbox UNION SELECT xmin FROM effects) x") == 1
    )


async def test_a_handlers_own_transaction_on_another_connection_writes_its_rows_at_once(
    make_runtime, runtimes, topic, kafka_bootstrap, relay_held
):
    envs = same_client(4)
    seen_at_once: list[bool] = []

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        rt = deps["runtime"]
        await rt.outbox.enqueue(conn, follow_up_event(env, 0), deps["topic"])
        side = follow_up_event(env, 1)
        async with rt.db.pool.acquire() as own, own.transaction():
            await rt.outbox.enqueue(own, side, deps["topic"])
        # Committed with its own transaction: visible to everyone at once, while the batch's transaction is open.
        seen_at_once.append(await rt.db.pool.fetchval("SELECT count(*) = 1 FROM outbox WHERE event_id = $1", side.id))
        await record_effect(env, conn, deps)

    await produce(kafka_bootstrap, topic, envs)
    rt, consumer = await start_enqueuing(make_runtime, runtimes, handler)
    await eventually(count_is(rt, 4), timeout=60)

    assert consumer.fallbacks == 0
    assert seen_at_once == [True] * 4
    rows = await rt.db.pool.fetch("SELECT event_id, xmin::text AS tx FROM outbox ORDER BY id")
    batch_tx = await rt.db.pool.fetchval("SELECT DISTINCT xmin::text FROM effects")
    in_batch = [r["event_id"] for r in rows if r["tx"] == batch_tx]
    assert in_batch == [follow_up_event(e, 0).id for e in envs]
    assert sorted(r["event_id"] for r in rows if r["tx"] != batch_tx) == sorted(follow_up_event(e, 1).id for e in envs)
    assert len({r["tx"] for r in rows}) == 5  # four own transactions and the batch's


async def test_the_one_at_a_time_fallback_writes_each_records_rows_and_none_of_the_failed_batch(
    make_runtime, runtimes, topic, kafka_bootstrap, relay_held
):
    envs = same_client(N)
    poison = envs[7].id

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        await follow_up(env, conn, deps)
        if env.id == poison:
            raise Rejected("this one is refused, after it enqueued")

    await produce(kafka_bootstrap, topic, envs)
    rt, consumer = await start_enqueuing(make_runtime, runtimes, handler)
    await eventually(count_is(rt, N - 1), timeout=60)
    await eventually(lambda: rt.db.pool.fetchval("SELECT count(*) = $1 FROM processed_events", N), timeout=30)

    assert consumer.fallbacks == 1
    # Once each, in offset order, each record's rows in its own transaction (with its effect); the poison's none.
    assert await outbox_ids(rt) == [follow_up_event(e).id for e in envs if e.id != poison]
    rows = {r["event_id"]: r["tx"] for r in await rt.db.pool.fetch("SELECT event_id, xmin::text AS tx FROM outbox")}
    effects = {r["event_id"]: r["tx"] for r in await rt.db.pool.fetch("SELECT event_id, xmin::text AS tx FROM effects")}
    assert len(set(rows.values())) == N - 1
    assert all(rows[follow_up_event(e).id] == effects[e.id] for e in envs if e.id != poison)


async def test_a_refused_or_unencodable_event_fails_the_handlers_call_at_once_and_the_call_keeps_nothing(
    make_runtime, runtimes, topic, kafka_bootstrap, relay_held
):
    envs = same_client(3)
    errors: list[str] = []

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        rt, to = deps["runtime"], deps["topic"]
        undeclared = new_event(
            ConsentExpired(client_id=uuid.uuid4(), consent_id=uuid.uuid4(), expired_at=env.time),
            source="/lotse/kittest",
            acting_org=FOLLOW_UP_ORG,
        )
        unencodable = dataclasses.replace(follow_up_event(env, 2), data=ClientRegistered.model_construct(client_id=object()))
        try:
            await rt.outbox.enqueue(conn, undeclared, to)
        except UndeclaredEvent:
            errors.append("undeclared")
        try:
            await rt.outbox.enqueue_many(conn, [follow_up_event(env, 1), unencodable], to)
        except Exception as exc:
            errors.append(type(exc).__name__)
        await rt.outbox.enqueue(conn, follow_up_event(env, 0), to)
        await record_effect(env, conn, deps)

    await produce(kafka_bootstrap, topic, envs)
    rt, consumer = await start_enqueuing(make_runtime, runtimes, handler)
    await eventually(count_is(rt, 3), timeout=60)

    assert (consumer.batches, consumer.fallbacks) == (1, 0)
    assert errors == ["undeclared", "PydanticSerializationError"] * 3  # in the handler, at the call
    assert await outbox_ids(rt) == [follow_up_event(e, 0).id for e in envs]  # nothing of the failed calls


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    yield exporter
    tracing.configure(None)
    provider.shutdown()


async def test_each_row_carries_the_trace_context_of_the_handler_that_enqueued_it(
    spans, make_runtime, runtimes, topic, kafka_bootstrap, relay_held
):
    envs = same_client(5)
    await produce(kafka_bootstrap, topic, envs)
    rt, consumer = await start_enqueuing(make_runtime, runtimes, follow_up)
    await eventually(count_is(rt, 5), timeout=60)
    assert consumer.batches == 1

    handler_spans = {
        s.attributes[tracing.ATTR_EVENT_ID]: s for s in spans.get_finished_spans() if s.attributes and tracing.ATTR_EVENT_ID in s.attributes
    }
    rows = await rt.db.pool.fetch("SELECT event_id, headers FROM outbox ORDER BY id")
    assert [r["event_id"] for r in rows] == [follow_up_event(e).id for e in envs]
    for env, row in zip(envs, rows, strict=True):
        span = handler_spans[str(env.id)]
        traceparent = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
        assert json.loads(row["headers"])["ce_traceparent"] == traceparent


def record_of(env: Envelope[Any], topic: str, offset: int) -> ConsumerRecord:
    rec = encode(env)
    return ConsumerRecord(topic, 0, offset, 0, 0, rec.key, rec.value, None, 0, len(rec.value), list(rec.headers))


async def test_a_stop_in_the_middle_of_a_batch_writes_none_of_its_rows(make_runtime, runtimes, topic, relay_held):
    envs = same_client(5)
    rt, consumer = await start_enqueuing(make_runtime, runtimes, follow_up)
    inner = consumer.handlers[HANDLED]

    async def stopping_after_the_third(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        await inner(env, conn, deps)
        if env.id == envs[2].id:
            consumer.stopping = True  # the service shuts down: the next event of the batch raises ConsumerStopping

    consumer.handlers[HANDLED] = stopping_after_the_third
    with pytest.raises(ConsumerStopping):
        await consumer.handle_batch([record_of(e, topic, i) for i, e in enumerate(envs)])
    consumer.stopping = False
    assert await outbox_ids(rt) == []
    assert await effect_ids(rt) == []


@pytest.mark.parametrize("mode", ["in-handler", "after-commit"])
async def test_a_crash_mid_batch_leaves_no_row_of_the_uncommitted_batch_and_every_event_is_applied_once(
    make_runtime, runtimes, topic, unique, kafka_bootstrap, relay_held, mode
):
    envs = same_client(N)
    await produce(kafka_bootstrap, topic, envs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.crash_batch_consumer", topic, f"kt_{unique}", mode, "5", "outbox"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=90)
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == -signal.SIGKILL, out

    deps: dict[str, Any] = {"topic": topic}
    again = make_runtime(handlers={HANDLED: follow_up}, deps=deps)
    deps["runtime"] = again
    await again.db.start()
    try:
        before = await outbox_ids(again)
    finally:
        await again.db.close(5)
    # The killed batch's transaction left nothing; a committed batch left all its rows.
    assert before == ([] if mode == "in-handler" else [follow_up_event(e).id for e in envs]), out

    await again.start()
    runtimes.append(again)
    await eventually(count_is(again, N), timeout=60)
    await asyncio.sleep(1.0)
    assert await outbox_ids(again) == [follow_up_event(e).id for e in envs]
    assert await again.db.pool.fetchval("SELECT count(*) FROM processed_events") == N
