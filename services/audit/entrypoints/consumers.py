"""What the audit service consumes, and its ingest: one batch subscriber over every Lotse topic.

Why not the kit's `EventConsumer`: the audit log takes batches, is idempotent by record position
rather than by event id, and must log every record as what it is, including undecodable ones and
the dead-letter topics; it never dead-letters anything itself. So its subscription is declared
`custom=True` (it still says what it consumes, for the AsyncAPI document) and registered here.

Two stages, so that Python (fetching, building entries) and PostgreSQL (writing them) work at
the same time:

1. the subscriber's handler (`IngestConsumer`, here) builds the entries of a batch (CPU) and queues them;
2. the writer (`entrypoints/workers.py: IngestWriter`, a runtime worker) appends each queued batch
   in one transaction and then commits exactly that batch's offsets
   (`consumer.commit({partition: last offset + 1})`).

Offsets are therefore committed only after the entries are durable (`AckPolicy.MANUAL`: FastStream
commits nothing by itself). A failing append is retried with backoff until it succeeds or the
service stops. Whatever is not committed (a batch still queued at shutdown, a commit refused
after a rebalance) is delivered again, and the append skips records whose position is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from contracts import topics
from contracts.events import EVENTS, PARTNER_ACK_TYPES, PARTNER_ANSWER_TYPES, PARTNER_CORRECTION, PARTNER_REFERRAL
from lotse_kit.declaration import PARTNER_INBOX, PARTNER_OUTBOX, ServiceDeclaration, Subscription, message_id
from lotse_kit.naming import Naming
from lotse_kit.workers import sleep_unless_stopping

from ..config import AuditSettings
from ..domain.entries import Entry, RecordLike, build_entries, log_order
from ..handlers import EVENT_HANDLERS

log = logging.getLogger(__name__)

_LOGGED_TOPICS = (*topics.INTERNAL_TOPICS, topics.DISCLOSURE_REQUESTS)

# The audit log consumes every record; it declares every message that travels on each channel.
DECLARATION = ServiceDeclaration(
    service="audit",
    title="Lotse audit service",
    description="Tamper-evident (RFC 6962) log of every record on every lotse.*, partner.* and dead-letter topic.",
    subscriptions=(
        Subscription(
            "ingest",
            channels=(*_LOGGED_TOPICS, PARTNER_INBOX, PARTNER_OUTBOX),
            handlers=EVENT_HANDLERS,
            custom=True,
            types={
                **{t: tuple(message_id(s) for s in EVENTS.values() if s.topic == t) for t in _LOGGED_TOPICS},
                # The audit log records every record whatever its type; these are the ones it describes.
                PARTNER_INBOX: (
                    message_id(PARTNER_REFERRAL),
                    message_id(PARTNER_CORRECTION),
                    "lotse.consent.withdrawn",
                    "lotse.client.erased",
                    *PARTNER_ANSWER_TYPES,
                ),
                PARTNER_OUTBOX: (*PARTNER_ANSWER_TYPES, *PARTNER_ACK_TYPES),
            },
        ),
    ),
    publications=(),  # the audit service produces nothing
)

BUILD_SLICE = 25  # records built between two yields to the event loop


async def parse_batch(records: tuple[ConsumerRecord, ...], original: Any) -> Any:
    """FastStream's batch parser decodes every header of every record as UTF-8 (and fails on
    anything else, which would stall the subscription on one bad record) and copies every body.
    The audit log needs neither: FastStream's message is built from a header-less duplicate of the
    first record, and the handler reads the untouched records from `msg.raw_message`."""
    msg = await original((dataclasses.replace(records[0], headers=[]),))
    msg.raw_message = records
    return msg


async def raw_records(msg: Any) -> Any:
    return msg.raw_message


def next_offsets(records: Sequence[RecordLike]) -> dict[TopicPartition, int]:
    """Per partition, the offset to commit once these records are logged."""
    highest: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        if highest.get(key, -1) < r.offset:
            highest[key] = r.offset
    return {TopicPartition(t, p): o + 1 for (t, p), o in highest.items()}


@dataclass
class Batch:
    entries: list[Entry]
    offsets: dict[TopicPartition, int]
    consumer: Any  # the AIOKafkaConsumer that fetched it


class IngestConsumer:
    """Stage 1 and the ingest's state: the subscriber, the queue to the writer, counters and health."""

    def __init__(
        self, broker: KafkaBroker, naming: Naming, settings: AuditSettings, stopping: asyncio.Event, *, queue_depth: int = 1
    ) -> None:
        self.broker = broker
        self.naming = naming
        self.settings = settings
        self.stopping = stopping
        self.group_id = naming.consumer_group("ingest")
        self.pattern = naming.topic_pattern(settings.topic_regex)
        self.subscriber: Any = None
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=queue_depth)
        # Written by the writer (entrypoints/workers.py):
        self.writer_running = False
        self.failing_since: float | None = None
        self.failed_attempts = 0
        self.batches = 0
        self.entries = 0
        self.build_seconds = 0.0  # time spent building entries (stage 1)
        self.append_seconds = 0.0  # time spent appending (stage 2), for diagnostics and the benchmark

    def register(self) -> None:
        s = self.settings
        self.subscriber = self.broker.subscriber(
            pattern=self.pattern,
            batch=True,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,  # the writer commits each batch's offsets once it is durable
            auto_offset_reset="earliest",
            max_records=s.ingest_max_records,
            batch_timeout_ms=s.ingest_batch_timeout_ms,
            max_poll_interval_ms=10 * 60 * 1000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=s.ingest_fetch_wait_ms,
            fetch_min_bytes=1024 * 1024 if s.ingest_fetch_wait_ms else 1,
            parser=parse_batch,
            decoder=raw_records,
        )
        self.subscriber(self._on_batch)

    @property
    def running(self) -> bool:
        return bool(self.subscriber is not None and getattr(self.subscriber, "running", False)) and self.writer_running

    def health(self) -> str:
        if not self.running:
            return "down: not running"
        if self.failed_attempts >= self.settings.ingest_stalled_after:
            return f"down: appends failing for {time.monotonic() - (self.failing_since or time.monotonic()):.0f}s"
        return "up"

    async def _on_batch(self, body: Any, msg: KafkaMessage) -> None:
        records: list[ConsumerRecord] = list(msg.raw_message)  # type: ignore[arg-type]
        if not records:
            return
        started = time.perf_counter()
        try:
            records.sort(key=log_order)
            entries: list[Entry] = []
            ns = self.naming.namespace
            for i in range(0, len(records), BUILD_SLICE):
                entries += build_entries(records[i : i + BUILD_SLICE], namespace=ns, presorted=True)
                await asyncio.sleep(0)  # let the writer's COPY of the previous batch make progress meanwhile
        except Exception:  # a bug: never skip records; fetch them again after a pause
            log.error("building audit entries failed; the batch will be fetched again", exc_info=True)
            await msg.nack()
            await sleep_unless_stopping(self.stopping, self.settings.ingest_retry_max_s)
            return
        self.build_seconds += time.perf_counter() - started
        batch = Batch(entries, next_offsets(records), msg.consumer)
        put = asyncio.ensure_future(self.queue.put(batch))
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({put, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not put.done():
            put.cancel()
            await msg.nack()  # shutting down: leave it to the next consumer
