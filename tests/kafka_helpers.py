"""Raw Kafka access for tests: read what really landed on a topic, write arbitrary records."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from lotse_kit.kafka import KafkaConnection, connection


async def read_topic(
    bootstrap: str | KafkaConnection,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool] | int = 1,
    timeout: float = 30.0,
    settle: float = 0.0,
    group: str | None = None,
) -> list[ConsumerRecord]:
    """Reads `topic` from the beginning until `until` holds (or that many records arrived), then `settle` seconds more."""
    want = (lambda rs: len(rs) >= until) if isinstance(until, int) else until
    consumer = AIOKafkaConsumer(
        topic,
        **connection(bootstrap).aiokafka(),
        group_id=group or f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[ConsumerRecord] = []
    try:
        await consumer.start()
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


async def provision_services(
    admin: str | KafkaConnection, network_file: Path, namespace: str, credentials_dir: Path, schemas: dict[str, str]
) -> dict[str, Path]:
    """Provisions `namespace` as `lotse admin provision` does (topics, every service and partner principal,
    ACLs, quotas), with consumer-group ACLs for services whose database schema is not their name (tests
    name schemas uniquely, and groups after schemas). Returns each service's credentials file."""
    from lotse_cli.admin import service_grants
    from lotse_kit.network import load_network
    from lotse_kit.provisioning import desired_state, provision, service_principal

    grants = [dataclasses.replace(g, group_prefix=f"lotse-{schemas[g.service]}-") if g.service in schemas else g for g in service_grants()]
    want = desired_state(load_network(network_file), grants, namespace=namespace)
    await provision(connection(admin), want, credentials_dir)
    return {g.service: credentials_dir / f"{service_principal(namespace, g.service)}.properties" for g in grants}
