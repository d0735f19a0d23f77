"""Dead-letter topics: a record the service cannot process goes to `<topic>.dlq`, unchanged, with a reason.

The copy keeps the record's key, value and every header byte-for-byte, in their order; Lotse adds
only headers named `lotse_dlq_*`. When that copy cannot be written as is — the added headers push a
record that was just under the broker's size limit over it — a *reference record* goes there
instead: its value is a JSON document naming the original (topic, partition, offset, sizes) with as
much of the original value as fits (base64), and its headers are the `lotse_dlq_*` ones plus
`lotse_dlq_reference: true`. Either way the reason is on the DLQ and the consumer moves on.

The writer uses its own producer (idempotent, acks=all) rather than FastStream's publish, which
takes headers as text and would re-encode bytes that are not UTF-8.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError

from contracts.topics import dlq, dlq_spec

from .kafka import KafkaConnection, connection, ensure_topics

log = logging.getLogger(__name__)

PREFIX = "lotse_dlq_"
REFERENCE_HEADER = "lotse_dlq_reference"
# What a reference record may take at most: far under any broker's limit (Kafka's default is ~1 MiB).
REFERENCE_MAX_BYTES = 256 * 1024


class DeadLetterWriter:
    def __init__(
        self, kafka: str | KafkaConnection, *, service: str, reference_max_bytes: int = REFERENCE_MAX_BYTES, create_topics: bool = True
    ) -> None:
        self.kafka = connection(kafka)
        self.create_topics = create_topics
        self.service = service
        self.reference_max_bytes = reference_max_bytes
        self._producer: AIOKafkaProducer | None = None
        self._ready: set[str] = set()

    async def start(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                client_id=f"lotse-{self.service}-dlq",
                acks="all",
                enable_idempotence=True,
                # Let the broker judge the size: its limit, not the client's default, is what counts.
                max_request_size=16 * 1024 * 1024,
                **self.kafka.aiokafka(),
            )
            await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def write(self, record: ConsumerRecord[Any, Any], *, kind: str, reason: str, consumer: str) -> bool:
        """Writes the copy (or, if it is too large, a reference record). Returns True for a full copy.

        Raises only when Kafka does not take even the reference record (the broker is away): the caller
        retries with backoff and leaves the offset where it is until the reason is on the DLQ.
        """
        await self.start()
        assert self._producer is not None
        target = dlq(record.topic)
        if target not in self._ready:
            # Pattern subscriptions meet topics created after start; their DLQ may not exist yet.
            await ensure_topics(self.kafka, [dlq_spec(record.topic)], client_id=f"lotse-{self.service}", create=self.create_topics)
            self._ready.add(target)
        added = _added_headers(record, kind=kind, reason=reason, consumer=consumer, service=self.service)
        original = [(k, bytes(v)) for k, v in (record.headers or ())]
        try:
            await self._producer.send_and_wait(target, value=record.value, key=record.key, headers=original + added)
            return True
        except MessageSizeTooLargeError as exc:
            log.warning(
                "dead-letter copy too large; writing a reference record",
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "error": repr(exc)},
            )
        value = self.reference_value(record, kind=kind, reason=reason)
        await self._producer.send_and_wait(
            target, value=value, key=record.key if _size(record.key) <= 4096 else None, headers=[*added, (REFERENCE_HEADER, b"true")]
        )
        return False

    def reference_value(self, record: ConsumerRecord[Any, Any], *, kind: str, reason: str) -> bytes:
        headers = list(record.headers or ())
        doc: dict[str, Any] = {
            "reference": True,
            "original_topic": record.topic,
            "original_partition": record.partition,
            "original_offset": record.offset,
            "original_timestamp_ms": record.timestamp,
            "value_size": _size(record.value),
            "key_size": _size(record.key),
            "headers_size": sum(len(k) + _size(v) for k, v in headers),
            "error_kind": kind,
            "reason": reason[:2000],
            "key_base64": base64.b64encode(record.key).decode() if record.key and len(record.key) <= 4096 else None,
            "headers": [{"key": k, "value_base64": base64.b64encode(bytes(v)).decode()} for k, v in headers if _size(v) <= 4096],
            "value_prefix_base64": "",
        }
        room = self.reference_max_bytes - len(json.dumps(doc).encode()) - 64
        prefix = (record.value or b"")[: max(0, room * 3 // 4)]  # base64 grows by 4/3
        doc["value_prefix_base64"] = base64.b64encode(prefix).decode()
        doc["value_prefix_size"] = len(prefix)
        return json.dumps(doc).encode()


def _size(b: bytes | None) -> int:
    return len(b) if b else 0


def _added_headers(record: ConsumerRecord[Any, Any], *, kind: str, reason: str, consumer: str, service: str) -> list[tuple[str, bytes]]:
    return [
        (f"{PREFIX}error_kind", kind.encode()),
        (f"{PREFIX}reason", reason[:2000].encode("utf-8", errors="replace")),
        (f"{PREFIX}original_topic", record.topic.encode()),
        (f"{PREFIX}original_partition", str(record.partition).encode()),
        (f"{PREFIX}original_offset", str(record.offset).encode()),
        (f"{PREFIX}consumer", consumer.encode()),
        (f"{PREFIX}service", service.encode()),
        (f"{PREFIX}failed_at", datetime.now(UTC).isoformat().encode()),
    ]


# ---------------------------------------------------------------- replay (operators: `lotse dlq replay`)
REPLAY_GROUP = "lotse-dlq-replay"


@dataclass
class ReplayReport:
    replayed: list[tuple[int, str]] = field(default_factory=list)  # (dlq offset, original topic)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (dlq offset, why)


def original_of(headers: Iterable[tuple[str, bytes]]) -> tuple[str | None, list[tuple[str, bytes]], bool]:
    """(original topic, the original headers without the `lotse_dlq_*` ones, whether it is a reference record)."""
    hs = list(headers)
    topic = next((v.decode(errors="replace") for k, v in hs if k == f"{PREFIX}original_topic"), None)
    reference = any(k == REFERENCE_HEADER for k, _ in hs)
    return topic, [(k, v) for k, v in hs if not k.startswith(PREFIX)], reference


async def replay(kafka: str | KafkaConnection, dlq_topic: str, *, group: str, dry_run: bool = False, idle_s: float = 2.0) -> ReplayReport:
    """Puts every dead letter not replayed before back on its original topic, byte for byte (value, key and
    the original headers; the `lotse_dlq_*` ones dropped), after the cause was fixed.

    Exactly-once effects hold: the consumers are idempotent by event id (`processed_events`), so a record
    that was in fact processed is skipped by them, and the replay group's committed offset (committed after
    each record is on Kafka) means a second replay does not send it again. Reference records (the original
    was too large to copy) cannot be replayed: they are reported, and the original is found by its position.
    """
    conn = connection(kafka)
    report = ReplayReport()
    consumer = AIOKafkaConsumer(
        dlq_topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, client_id="lotse-dlq-replay", **conn.aiokafka()
    )
    producer = AIOKafkaProducer(
        acks="all", enable_idempotence=True, max_request_size=16 * 1024 * 1024, client_id="lotse-dlq-replay", **conn.aiokafka()
    )
    try:
        await consumer.start()
        await producer.start()
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                break
            for tp, records in batch.items():
                for rec in records:
                    topic, headers, reference = original_of(rec.headers or ())
                    if reference or topic is None:
                        report.skipped.append(
                            (rec.offset, "a reference record: the original was too large to copy" if reference else "no original topic")
                        )
                    elif not dry_run:
                        await producer.send_and_wait(topic, value=rec.value, key=rec.key, headers=headers)
                        report.replayed.append((rec.offset, topic))
                    else:
                        report.replayed.append((rec.offset, topic))
                    if not dry_run:
                        await consumer.commit({tp: rec.offset + 1})
            if dry_run:
                break
    finally:
        await producer.stop()
        await consumer.stop()
    return report
