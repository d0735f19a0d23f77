"""The fault proxy in front of the three-node cluster (bench/chaos/netfault.py), against the real cluster.

Clients reach the brokers only through the proxies; a delay holds every round trip for at least the delay it
was given; a loss of 1.0 lets no request through until heal(), and healing restores the round trip. The
assertions are about what happened in which order (and lower bounds the proxy guarantees), not how fast.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from bench.chaos.netfault import NetFault
from lotse_kit.kafka import KafkaConnection, admin_client
from tests.kafka_helpers import read_topic

REPO = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("LOTSE_RUN_DIR", REPO / ".run"))
CLUSTER_SH = REPO / "deploy" / "local" / "cluster.sh"
ADMIN_CREDENTIALS = RUN / "cluster" / "credentials" / "lotse-admin.properties"
CLIENT_PORTS = {int(os.environ.get("LOTSE_CLUSTER_PORT", 39092)) + i for i in range(3)}


@pytest.fixture(scope="module")
def cluster() -> KafkaConnection:
    """The running three-node cluster. `make chaos` brings it up and runs these tests before its scenarios;
    `make test` runs them only when the cluster is already up (three more brokers would slow every other test)."""
    status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True)
    if "proxy: up" not in status.stdout or not ADMIN_CREDENTIALS.exists():
        pytest.skip("the three-node cluster is not up: `make up-cluster` (make chaos runs these tests)")
    return KafkaConnection.from_properties(ADMIN_CREDENTIALS)


@pytest.fixture
async def topic(cluster: KafkaConnection) -> AsyncIterator[str]:
    name = f"test.netfault.{uuid.uuid4().hex[:10]}"
    admin = admin_client(cluster)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=3)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.fixture
async def net(cluster: KafkaConnection) -> AsyncIterator[NetFault]:  # skips with the cluster
    async with NetFault() as fault:  # heals on the way out, whatever the test did
        yield fault


@pytest.fixture
async def producer(cluster: KafkaConnection) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(**cluster.aiokafka(), acks="all", enable_idempotence=True, request_timeout_ms=60_000)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def round_trip(producer: AIOKafkaProducer, topic: str, value: bytes) -> float:
    """Seconds from send to the acknowledgement of all in-sync replicas."""
    t0 = time.monotonic()
    await producer.send_and_wait(topic, value, key=b"k")
    return time.monotonic() - t0


async def test_clients_reach_the_brokers_only_through_the_proxies(cluster, topic, net, producer):
    await round_trip(producer, topic, b"one")
    # Every broker the cluster told the client about is a proxy's port, not a node's own listener.
    brokers = {(b.host, b.port) for b in producer.client.cluster.brokers()}
    assert brokers == {("127.0.0.1", port) for port in CLIENT_PORTS}
    assert net.proxies == ["kafka-node-1", "kafka-node-2", "kafka-node-3"]
    records = await read_topic(cluster, topic, until=1)
    assert [r.value for r in records] == [b"one"]


async def test_a_delay_holds_every_round_trip_and_heal_restores_it(cluster, topic, net, producer):
    delay_ms = 400
    healthy = await round_trip(producer, topic, b"before")

    await net.degrade(delay_ms=delay_ms)
    faults = await net.faults()
    assert all({t["type"] for t in toxics} == {"latency"} and len(toxics) == 2 for toxics in faults.values())
    degraded = await round_trip(producer, topic, b"during")
    # The request waited upstream and the answer downstream: a lower bound the proxy guarantees.
    assert degraded >= 2 * delay_ms / 1000
    during = await read_topic(cluster, topic, until=2)  # a consumer's round trips work under the delay too

    await net.heal()
    assert all(toxics == [] for toxics in (await net.faults()).values())
    healed = await round_trip(producer, topic, b"after")
    records = await read_topic(cluster, topic, until=3)
    assert [r.value for r in during] == [b"before", b"during"]
    assert [r.value for r in records] == [b"before", b"during", b"after"]
    print(
        f"\nproduce round trip: healthy {healthy * 1000:.0f} ms, delay {delay_ms} ms {degraded * 1000:.0f} ms, healed {healed * 1000:.0f} ms"
    )


@pytest.mark.parametrize("mode", ["reset", "stall"])
async def test_total_loss_lets_nothing_through_until_heal(cluster, topic, net, producer, mode):
    await round_trip(producer, topic, b"warm")  # connections open before the fault: they break too

    await net.degrade(delay_ms=0, loss=1.0, loss_mode=mode, stall_ms=2000)
    t_degraded = time.monotonic()
    sending = asyncio.ensure_future(producer.send_and_wait(topic, b"lost-until-healed", key=b"k"))
    await asyncio.sleep(3)  # time for the request to reach the proxy and be broken (mode reset) or swallowed (stall)
    held = not sending.done()
    await net.heal()
    t_healed = time.monotonic()
    await asyncio.wait_for(sending, timeout=90)
    t_acked = time.monotonic()

    assert held, "a request got through while every connection was broken"
    assert t_degraded < t_healed < t_acked
    records = await read_topic(cluster, topic, until=2)
    assert [r.value for r in records] == [b"warm", b"lost-until-healed"]  # acks=all + idempotence: once, in order
    print(f"\nloss 1.0 ({mode}): acknowledged {t_acked - t_healed:.2f} s after heal")


async def test_degrade_refuses_nonsense(net):
    for kwargs in ({"delay_ms": -1}, {"delay_ms": 0, "loss": 1.5}, {"delay_ms": 0, "jitter_ms": -3}):
        with pytest.raises(ValueError):
            await net.degrade(**kwargs)
    with pytest.raises(ValueError):
        await net.degrade(0, loss=0.5, loss_mode="drop")  # type: ignore[arg-type]
    assert all(toxics == [] for toxics in (await net.faults()).values())
