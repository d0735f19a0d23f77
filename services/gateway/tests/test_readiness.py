"""Readiness of the per-organisation Kafka readers: /health/ready is 503 while a reader cannot reach Kafka (the kit's
own `kafka` check, the service's producer connection, stays up), a partner's GET is a 503 problem meanwhile, and
both recover without a request once Kafka answers on the readers' address again."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from contracts import topics
from lotse_kit.kafka import ensure_topics
from lotse_kit.naming import Naming
from lotse_kit.network import OrgDirectory, parse_network
from services.gateway.adapters.inbox import KafkaInbox
from services.gateway.bootstrap import bootstrap
from tests.fixtures import in_process
from tests.kafka_helpers import eventually

from .conftest import AWO, CARITAS, INVIA, fast_settings, network_yaml, partner


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def forwarding(port: int, to: str) -> AsyncIterator[None]:
    """Kafka reachable on `port` again: bytes passed on to the broker as they are (TLS stays end to end)."""
    host, to_port = to.rsplit(":", 1)
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection(host, int(to_port))
        for t in (asyncio.create_task(pipe(client_r, broker_w)), asyncio.create_task(pipe(broker_r, client_w))):
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    server = await asyncio.start_server(connect, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()


async def test_a_reader_that_cannot_reach_kafka_makes_the_gateway_not_ready_until_it_can(
    infra: Any, unique: str, topic_namespace: str, kafka_bootstrap: str, receiver: Any
) -> None:
    settings = fast_settings(topic_namespace, reader_probe_interval_s=0.2)
    specs = [s for org in (AWO, INVIA, CARITAS) for s in topics.partner_topics(org)]
    await ensure_topics(settings.kafka(), [type(s)(topic_namespace + s.name, s.partitions, s.config) for s in specs])
    # The readers alone reach Kafka through a port where nothing listens yet; the rest of the gateway reaches it as usual.
    port = _closed_port()
    readers_kafka = dataclasses.replace(settings.kafka(), bootstrap=f"127.0.0.1:{port}")
    schema = f"gw_{unique}"
    inbox = KafkaInbox(readers_kafka, Naming(topic_namespace, schema), probe_timeout_s=5.0)
    directory = OrgDirectory.of(parse_network(network_yaml(receiver.url)))
    app = bootstrap(settings, schema=schema, directory=directory, inbox=inbox)
    async with in_process(app) as http:

        async def readiness() -> tuple[int, dict[str, Any]]:
            r = await http.get("/health/ready")
            return r.status_code, r.json()

        # IN VIA's push sender opens IN VIA's reader at once; it cannot reach Kafka. (The unfetched check may open and
        # name AWO's first: the check lists every reader down at that moment.)
        async def readers_down() -> bool:
            status, body = await readiness()
            return status == 503 and "inbox-readers" in body.get("down", []) and INVIA in body["checks"]["inbox-readers"]

        await eventually(readers_down, timeout=30)
        status, body = await readiness()
        assert status == 503
        assert body["checks"]["inbox-readers"].startswith("down: cannot reach Kafka: ") and INVIA in body["checks"]["inbox-readers"]
        assert body["checks"]["kafka"] == "up"  # the kit's own connection: only the readers' check tells
        # The partner asking meanwhile gets a 503 problem to retry, not an internal error; its reader is named too.
        r = await http.get(f"/v1/partners/{AWO}/inbox", headers=partner(AWO))
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json", r.text
        assert r.json()["type"] == "urn:lotse:problem:gateway:inbox-unavailable" and r.headers["retry-after"] == "5"
        assert AWO in (await readiness())[1]["checks"]["inbox-readers"]

        # Kafka answers on the readers' address: ready again without any partner's request (the probe reopens them).
        async with forwarding(port, kafka_bootstrap):

            async def ready() -> bool:
                return (await readiness())[0] == 200

            await eventually(ready, timeout=60)
            assert (await readiness())[1]["checks"]["inbox-readers"] == "up"
            r = await http.get(f"/v1/partners/{AWO}/inbox", headers=partner(AWO))
            assert r.status_code == 200, r.text


async def test_the_probe_tells_a_reader_that_reaches_kafka_again_without_a_request(
    infra: Any, topic_namespace: str, kafka_bootstrap: str
) -> None:
    settings = fast_settings(topic_namespace)
    await ensure_topics(settings.kafka(), [type(s)(topic_namespace + s.name, s.partitions, s.config) for s in topics.partner_topics(AWO)])
    port = _closed_port()
    inbox = KafkaInbox(dataclasses.replace(settings.kafka(), bootstrap=f"127.0.0.1:{port}"), Naming(topic_namespace, "gw"))
    try:
        assert inbox.health() == "up"  # no reader yet: nothing to tell
        with pytest.raises(KafkaError):
            await inbox.read(AWO, {}, limit=10)
        assert inbox.health().startswith("down: cannot reach Kafka: ") and AWO in inbox.health()
        assert await inbox.probe() is False  # a periodic step: a failure is recorded, not raised
        assert AWO in inbox.health()
        async with forwarding(port, kafka_bootstrap):
            await inbox.probe()  # no request of AWO's in between
            assert inbox.health() == "up"
            await inbox.probe()  # the open reader, asked again
            assert inbox.health() == "up"
    finally:
        await inbox.aclose()
