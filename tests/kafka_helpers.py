"""Raw Kafka access for tests: read what really landed on a topic, write arbitrary records."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from lotse_kit.kafka import KafkaConnection, connection


async def read_topic(
    bootstrap: str | KafkaConnection,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool] | int = 1,
    timeout: float = 30.0,
    settle: float = 0.0,
) -> list[ConsumerRecord]:
    """Reads `topic` from the beginning until `until` holds (or that many records arrived), then `settle` seconds more."""
    want = (lambda rs: len(rs) >= until) if isinstance(until, int) else until
    consumer = AIOKafkaConsumer(
        topic,
        **connection(bootstrap).aiokafka(),
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not want(records):
            batch = await consumer.getmany(timeout_ms=300)
            for rs in batch.values():
                records.extend(rs)
        if settle:
            end = time.monotonic() + settle
            while time.monotonic() < end:
                for rs in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(rs)
    finally:
        await consumer.stop()
    return records


async def produce_raw(
    bootstrap: str | KafkaConnection, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **connection(bootstrap).aiokafka())
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def eventually(check: Callable[[], object], *, timeout: float = 30.0, interval: float = 0.2) -> object:
    """Polls an (async or sync) check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
