"""Several bootstrap servers (the three-node cluster's "a:1,b:2,c:3") reach every Kafka client the kit makes."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from lotse_kit.kafka import KafkaConnection, make_broker

pytestmark = pytest.mark.usefixtures("infra")


def with_a_dead_server_first(kafka_bootstrap: str) -> KafkaConnection:
    # Port 1 answers nothing: only a client that reads the list server by server gets to the real one.
    return KafkaConnection.from_env(bootstrap=f"127.0.0.1:1, {kafka_bootstrap}")


def test_servers_are_split_and_trimmed() -> None:
    conn = KafkaConnection(bootstrap="a:1, b:2,,c:3 ", security_protocol="PLAINTEXT")
    assert conn.servers() == ["a:1", "b:2", "c:3"]
    assert conn.aiokafka()["bootstrap_servers"] == ["a:1", "b:2", "c:3"]


async def test_a_service_broker_connects_through_a_list_of_servers(kafka_bootstrap: str) -> None:
    """FastStream wraps a string into a one-element list: "a:1,b:2" was one unknown host and no service started."""
    broker = make_broker(with_a_dead_server_first(kafka_bootstrap), "kittest", produces=False)
    await broker.start()
    try:
        assert await broker.ping(timeout=20)
    finally:
        await broker.stop()


async def test_aiokafka_clients_connect_through_a_list_of_servers(kafka_bootstrap: str) -> None:
    producer = AIOKafkaProducer(**with_a_dead_server_first(kafka_bootstrap).aiokafka())
    await producer.start()
    try:
        assert producer.client.cluster.brokers()
    finally:
        await producer.stop()
