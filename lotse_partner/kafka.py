"""The inbox over Kafka: the organisation's own principal reads `partner.<org>.inbox.v1` in a consumer group
under its own prefix (`partner.<org>.`) and writes answers to `partner.<org>.outbox.v1`. These are the only
rights Lotse's provisioning gives a partner principal (READ inbox, WRITE outbox, groups `partner.<org>.*`).

The connection comes from the credentials file Lotse's operators hand over (librdkafka's keys:
`bootstrap.servers`, `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `sasl.username`,
`sasl.password`, `ssl.ca.location`); `kafka_options` turns it into aiokafka's arguments.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from contracts import Envelope, decode, encode, topics

from .consumer import Delivery, bytes_field

Start = Literal["earliest", "latest"]
log = logging.getLogger("lotse_partner")


def kafka_options(credentials: Path, *, bootstrap: str | None = None) -> dict[str, Any]:
    """aiokafka's connection arguments from a Lotse credentials file (`key=value`, # comments; a relative
    `ssl.ca.location` is relative to the file). Lotse's own tools read the same format in `lotse_kit.kafka`."""
    props: dict[str, str] = {}
    for line in credentials.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and line[0] not in "#!" and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    server = bootstrap or props.get("bootstrap.servers")
    if not server:
        raise ValueError(f"{credentials}: no bootstrap.servers")
    protocol = props.get("security.protocol", "SASL_SSL").upper()
    opts: dict[str, Any] = {"bootstrap_servers": server, "security_protocol": protocol}
    if protocol == "SASL_SSL":
        ca = props.get("ssl.ca.location")
        ca_path = (credentials.parent / ca) if ca and not Path(ca).is_absolute() else (Path(ca) if ca else None)
        ctx = ssl.create_default_context(cafile=str(ca_path) if ca_path else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        opts |= {
            "sasl_mechanism": props.get("sasl.mechanism", "SCRAM-SHA-512").upper(),
            "sasl_plain_username": props.get("sasl.username"),
            "sasl_plain_password": props.get("sasl.password"),
            "ssl_context": ctx,
        }
    return opts


class KafkaTransport:
    """`Transport` over Kafka. `group` is the consumer group's name after `partner.<org>.` (one per system
    that reads the inbox; its committed offsets are that system's progress). `start` says where a group
    without committed offsets begins: `earliest` (default: nothing sent before the first start is missed)
    or `latest`; a group that has committed continues after its commits either way.
    `namespace` prefixes topics and the group as Lotse's `LOTSE_TOPIC_NAMESPACE` does (empty in production)."""

    def __init__(
        self,
        kafka: Mapping[str, Any],
        org: str,
        *,
        group: str = "inbox",
        start: Start = "earliest",
        namespace: str = "",
        commit: bool = True,
        assignment_timeout_s: float = 60.0,
    ) -> None:
        self.org = org
        self.kafka = dict(kafka)
        self.inbox = namespace + topics.partner_inbox(org)
        self.outbox = namespace + topics.partner_outbox(org)
        self.group = f"{namespace}partner.{org}.{group}"
        self.start_at = start
        self.commits = commit
        self.assignment_timeout_s = assignment_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    @classmethod
    def from_properties(cls, credentials: Path, org: str, **kw: Any) -> KafkaTransport:
        return cls(kafka_options(credentials), org, **kw)

    async def start(self) -> None:
        """Joins the group and waits until partitions are assigned and positioned, so that a record sent after
        `start` returns is read (what `PartnerInbox.ready` promises)."""
        consumer = AIOKafkaConsumer(
            self.inbox,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self.start_at == "latest" else "earliest",
            **self.kafka,
        )
        await consumer.start()
        self._consumer = consumer
        deadline = time.monotonic() + self.assignment_timeout_s
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partition of {self.inbox} assigned to group {self.group}")
            await asyncio.sleep(0.1)
        for tp in consumer.assignment():
            await consumer.position(tp)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def fetch(self, max_records: int) -> Sequence[Delivery]:
        assert self._consumer is not None, "start() first"
        batch = await self._consumer.getmany(timeout_ms=1000, max_records=max_records)
        return [self._delivery(rec) for records in batch.values() for rec in records]

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        if not self.commits or not deliveries:
            return
        assert self._consumer is not None
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for d in deliveries:
            topic, partition, offset = d.position.rsplit("/", 2)
            offsets[TopicPartition(topic, int(partition))] = OffsetAndMetadata(int(offset) + 1, "")
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced while these were handled: another member owns the partition now and gets
            # the records again (at least once; the answers' stable ids keep Lotse from applying them twice).
            log.warning("commit refused after a rebalance; the records will be delivered again", extra={"error": str(exc)})

    async def send(self, *events: Envelope[Any]) -> None:
        """Publishes to the organisation's outbox and waits until the broker has them (acks=all)."""
        if self._producer is None:
            self._producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **self.kafka)
            await self._producer.start()
        sent = []
        for env in events:
            rec = encode(env)
            sent.append(await self._producer.send(self.outbox, value=rec.value, key=rec.key, headers=rec.headers))
        await asyncio.gather(*sent)

    @staticmethod
    def _delivery(rec: ConsumerRecord) -> Delivery:
        headers = list(rec.headers or ())
        value: bytes | None = rec.value
        original = {
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
            "key": bytes_field(rec.key),
            "headers": {k: bytes_field(v) for k, v in headers},
            "value": bytes_field(value),
        }
        return Delivery(f"{rec.topic}/{rec.partition}/{rec.offset}", lambda: decode(headers, value), original)
