"""Dead-lettering never stalls a partition, keeps every byte, and readiness tells a stalled partition.

Against the real broker (its default `message.max.bytes`, 1,048,588) and the real database.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from contracts import encode
from contracts.topics import dlq
from lotse_kit.kafka import connection
from tests.kafka_helpers import eventually, read_topic
from tests.kit.conftest import record_effect, registered
from tests.kit.test_kit import effects


async def _produce_largest(bootstrap: str, topic: str, key: bytes, headers: list[tuple[str, bytes]]) -> bytes:
    """Produces the largest undecodable value the broker takes (just under its limit); returns it."""
    producer = AIOKafkaProducer(acks="all", max_request_size=4 * 1024 * 1024, **connection(bootstrap).aiokafka())
    await producer.start()
    try:
        for size in range(1_048_588 - 60, 1_048_588 - 2_000, -20):
            value = b"\x00not-json" + b"x" * (size - 9)
            try:
                await producer.send_and_wait(topic, value=value, key=key, headers=headers)
                return value
            except MessageSizeTooLargeError:
                continue
        raise AssertionError("the broker took no near-limit record")
    finally:
        await producer.stop()


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(acks="all", **connection(bootstrap).aiokafka())
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers, partition=0)
    finally:
        await producer.stop()


async def test_a_near_limit_record_goes_to_the_dlq_as_a_reference_and_the_partition_moves_on(
    make_runtime, runtimes, topic, kafka_bootstrap
):
    rt = make_runtime(handlers={"lotse.client.registered": record_effect})
    await rt.start()
    runtimes.append(rt)
    [consumer] = rt.consumers
    good = registered()
    rec = encode(good)
    trace = [("trace", b"\xff\xfe\xfd")]
    big = await _produce_largest(kafka_bootstrap, topic, rec.key, trace)
    await _produce(kafka_bootstrap, topic, [(rec.key, rec.value, rec.headers)])

    # The next good record on the same partition is processed: nothing stalls.
    rows = await eventually(lambda: effects(rt), timeout=60)
    assert [r["event_id"] for r in rows] == [good.id]

    [ref] = await read_topic(kafka_bootstrap, dlq(topic))
    h = dict(ref.headers)
    assert h["lotse_dlq_reference"] == b"true"
    assert h["lotse_dlq_error_kind"] == b"undecodable"
    assert h["lotse_dlq_original_topic"] == topic.encode()
    doc = json.loads(ref.value)
    assert doc["original_topic"] == topic and doc["value_size"] == len(big) and doc["error_kind"] == "undecodable"
    assert doc["original_offset"] == int(h["lotse_dlq_original_offset"])
    prefix = base64.b64decode(doc["value_prefix_base64"])
    assert len(prefix) > 100_000 and big.startswith(prefix)  # as much of the original as fits
    assert doc["headers"] == [{"key": "trace", "value_base64": base64.b64encode(b"\xff\xfe\xfd").decode()}]
    assert len(ref.value) < 300 * 1024
    assert await consumer.health() == "up"


async def test_the_dlq_copy_keeps_value_key_and_every_header_byte_for_byte(make_runtime, runtimes, topic, kafka_bootstrap):
    rt = make_runtime(handlers={"lotse.client.registered": record_effect})
    await rt.start()
    runtimes.append(rt)
    rec = encode(registered())
    headers = [*rec.headers, ("trace", b"\xff\xfe\xfd"), ("empty", b""), ("trace", b"second value, same key")]
    await _produce(kafka_bootstrap, topic, [(b"\x00key\xff", b"\xfe\xff not json at all", headers)])

    [dead] = await read_topic(kafka_bootstrap, dlq(topic))
    assert dead.key == b"\x00key\xff"
    assert dead.value == b"\xfe\xff not json at all"
    original = [(k, bytes(v)) for k, v in dead.headers if not k.startswith("lotse_dlq_")]
    assert original == headers  # same bytes, same order, duplicates kept
    added = [k for k, _ in dead.headers if k not in {k for k, _ in headers}]
    assert added and all(k.startswith("lotse_dlq_") for k in added)


async def test_readiness_names_a_partition_that_does_not_advance_while_records_wait(make_runtime, runtimes, topic, kafka_bootstrap):
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(env, conn, deps):
        entered.set()
        await release.wait()
        await record_effect(env, conn, deps)

    rt = make_runtime(handlers={"lotse.client.registered": slow}, consumer_stall_after_s=1.0)
    await rt.start()
    runtimes.append(rt)
    [consumer] = rt.consumers
    first, second = registered(), registered()
    await _produce(kafka_bootstrap, topic, [(encode(e).key, encode(e).value, encode(e).headers) for e in (first, second)])
    await asyncio.wait_for(entered.wait(), timeout=30)

    health = await eventually(lambda: _stalled(consumer), timeout=20)
    assert f"{topic}[0] at offset 0 (lag " in health
    checks = await rt.readiness()
    assert checks[f"consumer:{consumer.name}"].startswith("down: stalled on")

    release.set()
    await eventually(lambda: _count(rt, 2), timeout=30)
    assert await eventually(lambda: _up(consumer), timeout=10)


async def test_records_arriving_on_a_long_idle_partition_are_not_a_stall(make_runtime, runtimes, topic, kafka_bootstrap):
    """The stall clock starts when records are first seen waiting, not at the partition's last progress."""
    release = asyncio.Event()
    entered = asyncio.Event()
    calls = 0

    async def second_blocks(env, conn, deps):
        nonlocal calls
        calls += 1
        if calls > 1:
            entered.set()
            await release.wait()
        await record_effect(env, conn, deps)

    rt = make_runtime(handlers={"lotse.client.registered": second_blocks}, consumer_stall_after_s=1.0)
    await rt.start()
    runtimes.append(rt)
    [consumer] = rt.consumers
    first = registered()
    await _produce(kafka_bootstrap, topic, [(encode(first).key, encode(first).value, encode(first).headers)])
    await eventually(lambda: _count(rt, 1), timeout=30)
    assert await eventually(lambda: _up(consumer), timeout=10)
    # Idle for longer than stall_after_s, nothing waiting: that is no stall.
    await asyncio.sleep(1.5)
    assert await consumer.health() == "up"

    second = registered()
    await _produce(kafka_bootstrap, topic, [(encode(second).key, encode(second).value, encode(second).headers)])
    await asyncio.wait_for(entered.wait(), timeout=30)
    # Records wait and are being worked on; the last progress is older than stall_after_s, the waiting is not.
    assert await consumer.health() == "up"

    # Still a stall once it goes on for longer than stall_after_s.
    health = await eventually(lambda: _stalled(consumer), timeout=20)
    assert f"{topic}[0] at offset 1 (lag " in health

    release.set()
    await eventually(lambda: _count(rt, 2), timeout=30)
    assert await eventually(lambda: _up(consumer), timeout=10)


async def _stalled(consumer) -> str | None:
    h = await consumer.health()
    return h if h.startswith("down: stalled") else None


async def _up(consumer) -> bool:
    return await consumer.health() == "up"


async def _count(rt, n: int) -> bool:
    return len(await effects(rt)) >= n


@pytest.mark.parametrize("kind", ["undecodable"])
def test_reference_value_fits_its_budget(kind):
    from aiokafka import ConsumerRecord

    from lotse_kit.dlq import DeadLetterWriter

    w = DeadLetterWriter("127.0.0.1:1", service="t", reference_max_bytes=10_000)
    rec = ConsumerRecord("t.v1", 3, 42, 0, 0, b"k", b"v" * 50_000, None, 1, 50_000, [("h", b"\xff")])
    doc = json.loads(w.reference_value(rec, kind=kind, reason="r" * 5000))
    assert len(json.dumps(doc)) <= 10_000
    assert doc["value_size"] == 50_000 and 0 < doc["value_prefix_size"] < 50_000 and len(doc["reason"]) == 2000
