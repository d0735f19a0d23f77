"""The kit consumer's batches against the real broker and database: one transaction per batch, every
event applied once (across crashes inside a batch too), order kept, a failure falls back to one at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts import Envelope, encode
from contracts.topics import TopicSpec, dlq
from lotse_kit.consumer import Rejected, prepared
from lotse_kit.kafka import ensure_topics
from tests.kafka_helpers import eventually, produce_raw, read_topic
from tests.kit.conftest import record_effect, registered

N = 20
HANDLED = "lotse.client.registered"


@pytest.fixture
async def topic(kafka_bootstrap: str, unique: str) -> str:
    """Overrides the kit's two-partition topic: on one partition, whatever waits when a consumer starts
    comes in its first batch (one fetch), so the batches of these tests are known."""
    name = f"test.kitbatch-{unique}.v1"
    await ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=1)])
    return name


async def produce(bootstrap: str, topic: str, envs: list[Envelope[Any]]) -> None:
    await produce_raw(bootstrap, topic, [(r.key, r.value, r.headers) for r in map(encode, envs)])


def same_client(n: int) -> list[Envelope[Any]]:
    client = uuid.uuid4()
    return [registered(client_id=client) for _ in range(n)]


async def effect_ids(rt) -> list[uuid.UUID]:
    return [r["event_id"] for r in await rt.db.pool.fetch("SELECT event_id FROM effects")]


def count_is(rt, n: int):
    async def check() -> bool:
        return len(await effect_ids(rt)) == n

    return check


async def start(make_runtime, runtimes, handler: Any, deps: Any = None, **settings: Any):
    rt = make_runtime(handlers={HANDLED: handler}, deps=deps, **settings)
    await rt.start()
    runtimes.append(rt)
    return rt, rt.consumers[0]


async def test_records_waiting_at_start_are_applied_in_one_transaction(make_runtime, runtimes, topic, kafka_bootstrap):
    envs = same_client(N)
    await produce(kafka_bootstrap, topic, envs)
    rt, consumer = await start(make_runtime, runtimes, record_effect)

    await eventually(count_is(rt, N), timeout=60)
    # xmin is the id of the transaction that wrote a row: one batch, one transaction (not N).
    assert await rt.db.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM effects") == 1
    assert (consumer.batches, consumer.fallbacks) == (1, 0)
    assert await rt.db.pool.fetchval("SELECT count(*) FROM processed_events") == N


async def test_a_failing_event_rolls_its_batch_back_and_the_others_are_applied_once_in_order(
    make_runtime, runtimes, topic, kafka_bootstrap
):
    envs = same_client(N)
    poison = envs[7].id
    seen: list[uuid.UUID] = []

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        seen.append(env.id)
        if env.id == poison:
            raise Rejected("this one is refused")
        await record_effect(env, conn, deps)

    await produce(kafka_bootstrap, topic, envs)
    rt, consumer = await start(make_runtime, runtimes, handler)

    await eventually(count_is(rt, N - 1), timeout=60)
    dead = await read_topic(kafka_bootstrap, dlq(topic), until=1, settle=1.0)
    assert [dict(r.headers)["ce_id"].decode() for r in dead] == [str(poison)]
    assert consumer.fallbacks == 1
    assert sorted(await effect_ids(rt)) == sorted(e.id for e in envs if e.id != poison)
    # The batch up to the poison (then rolled back), then one at a time from its start, in offset order.
    assert seen == [e.id for e in envs[:8]] + [e.id for e in envs]
    # Each effect in a transaction of its own in the fallback; the poison is remembered as processed.
    assert await rt.db.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM effects") == N - 1
    assert await rt.db.pool.fetchval("SELECT count(*) FROM processed_events") == N


async def test_the_same_event_twice_in_one_batch_is_applied_once(make_runtime, runtimes, topic, kafka_bootstrap):
    envs = same_client(5)
    await produce(kafka_bootstrap, topic, [*envs, envs[2], envs[0]])  # the relay re-sent two (at-least-once)
    calls: list[uuid.UUID] = []

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        calls.append(env.id)
        await record_effect(env, conn, deps)

    rt, consumer = await start(make_runtime, runtimes, handler)
    await eventually(count_is(rt, 5), timeout=60)
    await asyncio.sleep(1.0)  # nothing more arrives
    assert calls == [e.id for e in envs]
    assert (consumer.batches, consumer.fallbacks) == (1, 0)


async def test_prepare_runs_once_per_batch_and_its_result_reaches_the_handlers(make_runtime, runtimes, topic, kafka_bootstrap):
    envs = same_client(N)
    batches: list[list[uuid.UUID]] = []
    given: list[Any] = []

    async def prepare(batch: list[Envelope[Any]], deps: Any) -> Any:
        batches.append([e.id for e in batch])
        return {e.id: f"prepared for {e.id}" for e in batch}

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        p = prepared()
        given.append(p.get(env.id) if p else None)
        await record_effect(env, conn, deps)

    await produce(kafka_bootstrap, topic, envs)
    rt = make_runtime(handlers={HANDLED: handler})
    rt.consumers[0].prepare = prepare
    await rt.start()
    runtimes.append(rt)

    await eventually(count_is(rt, N), timeout=60)
    assert batches == [[e.id for e in envs]]
    assert given == [f"prepared for {e.id}" for e in envs]


async def test_a_failing_prepare_only_costs_its_help(make_runtime, runtimes, topic, kafka_bootstrap):
    envs = same_client(3)
    given: list[Any] = []

    async def prepare(batch: list[Envelope[Any]], deps: Any) -> Any:
        raise ConnectionError("the other service is away")

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        given.append(prepared())
        await record_effect(env, conn, deps)

    await produce(kafka_bootstrap, topic, envs)
    rt = make_runtime(handlers={HANDLED: handler})
    rt.consumers[0].prepare = prepare
    await rt.start()
    runtimes.append(rt)
    await eventually(count_is(rt, 3), timeout=60)
    assert given == [None, None, None]


async def test_later_records_of_a_partition_wait_for_its_batch(make_runtime, runtimes, topic, kafka_bootstrap):
    """Per-client order across batches: a record produced while a batch is being applied is applied after it."""
    first, later = same_client(3), None
    release = asyncio.Event()
    order: list[uuid.UUID] = []

    async def handler(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
        order.append(env.id)
        if env.id == first[-1].id:
            await release.wait()
        await record_effect(env, conn, deps)

    await produce(kafka_bootstrap, topic, first)
    rt, _ = await start(make_runtime, runtimes, handler)
    await eventually(lambda: len(order) == 3, timeout=60)
    later = [registered(client_id=first[0].data.client_id)]
    await produce(kafka_bootstrap, topic, later)
    await asyncio.sleep(0.5)
    assert len(order) == 3  # the batch holds the partition
    release.set()
    await eventually(count_is(rt, 4), timeout=60)
    assert order == [e.id for e in first + later]


@pytest.mark.parametrize("mode", ["in-handler", "after-commit"])
async def test_a_crash_mid_batch_applies_every_event_exactly_once(make_runtime, runtimes, topic, unique, kafka_bootstrap, mode):
    """SIGKILL inside a batch: while the 5th handler runs (its transaction open), or right after the
    batch's commit (offsets not yet committed). The group's next member applies every event once."""
    envs = same_client(N)
    await produce(kafka_bootstrap, topic, envs)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.crash_batch_consumer", topic, f"kt_{unique}", mode, "5"],
        cwd=repo,
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
    assert code == -signal.SIGKILL, out  # it really died

    # Same schema and consumer group: the next member.
    again = make_runtime(handlers={HANDLED: record_effect})
    await again.db.start()
    try:
        before = len(await effect_ids(again))
    finally:
        await again.db.close(5)
    # The open transaction died with the process; a committed batch is all there.
    assert before == (0 if mode == "in-handler" else N), out

    await again.start()
    runtimes.append(again)
    await eventually(count_is(again, N), timeout=60)
    await asyncio.sleep(1.0)
    assert sorted(await effect_ids(again)) == sorted(e.id for e in envs)
    assert await again.db.pool.fetchval("SELECT count(*) FROM processed_events") == N
    if mode == "after-commit":
        # Redelivered, recognised, not applied again.
        assert await again.db.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM effects") == 1


async def _insert_processed(rt, ages_days: list[float]) -> None:
    await rt.db.pool.executemany(
        """INSERT INTO processed_events (consumer, event_id, event_type, topic, "partition", "offset", processed_at)
           VALUES ('someone', $1, 'lotse.client.registered', 't', 0, 0, now() - make_interval(days => $2))""",
        [(uuid.uuid4(), age) for age in ages_days],
    )


async def test_processed_event_ids_are_pruned_after_the_retention_and_not_before(make_runtime, runtimes):
    from lotse_kit.consumer import prune_processed_events

    # The runtime's own pruning worker takes its first pass at start-up, maybe after the rows below are in: with a
    # retention longer than any of their ages it leaves them to the calls under test (it raced them before).
    rt, _ = await start(
        make_runtime, runtimes, record_effect, processed_events_prune_interval_s=3600.0, processed_events_retention_days=3650
    )
    await _insert_processed(rt, [40, 36, 50, 34, 1])
    assert await prune_processed_events(rt.db.pool, older_than_days=35, batch=2) is True  # a full batch: more due
    assert await prune_processed_events(rt.db.pool, older_than_days=35, batch=2) is False
    ages = await rt.db.pool.fetch("SELECT extract(day FROM now() - processed_at)::int AS d FROM processed_events ORDER BY d")
    assert [r["d"] for r in ages] == [1, 34]


async def test_every_service_with_consumers_prunes_on_its_own(make_runtime, runtimes):
    rt, _ = await start(make_runtime, runtimes, record_effect, processed_events_prune_interval_s=0.2, processed_events_retention_days=2)
    await _insert_processed(rt, [3, 1])
    assert (await rt.readiness())["worker:processed-events-pruning"] == "up"
    await eventually(lambda: rt.db.pool.fetchval("SELECT count(*) = 1 FROM processed_events"), timeout=30)


@pytest.mark.parametrize(("wait_ms", "min_bytes"), [(33, 64 * 1024), (0, 1)])
async def test_the_broker_gathers_records_for_a_fetch_as_configured(make_runtime, runtimes, wait_ms, min_bytes):
    """A fetch names every assigned partition; letting the broker gather records for a few ms instead of answering
    each arriving record costs far less (bench/README.md). The setting must reach the Kafka client in use."""
    _, consumer = await start(make_runtime, runtimes, record_effect, consumer_fetch_wait_ms=wait_ms)
    fetcher = consumer.subscriber.consumer._fetcher
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (wait_ms, min_bytes)
