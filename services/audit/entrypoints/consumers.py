"""Ingest: one batch subscriber over every Lotse topic (pattern subscription), and the tree-head signer.

Why not the kit's `EventConsumer`: the audit log takes batches, is idempotent by record position
rather than by event id, and must log every record as what it is, including undecodable ones and
the dead-letter topics; it never dead-letters anything itself.

Two stages, so that Python (fetching, building entries) and PostgreSQL (writing them) work at
the same time:

1. the subscriber's handler builds the entries of a batch (CPU) and queues them;
2. the writer (a runtime worker) appends each queued batch in one transaction and then commits
   exactly that batch's offsets (`consumer.commit({partition: last offset + 1})`).

Offsets are therefore committed only after the entries are durable (`AckPolicy.MANUAL`: FastStream
commits nothing by itself). A failing append is retried with backoff until it succeeds or the
service stops. Whatever is not committed — a batch still queued at shutdown, a commit refused
after a rebalance — is delivered again, and the append skips records whose position is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Gauge, Histogram

from lotse_kit import metrics
from lotse_kit.runtime import Runtime

from .. import handlers
from ..adapters.repository import AuditRepository
from ..config import AuditSettings
from ..domain.entries import Entry, RecordLike, log_order

log = logging.getLogger(__name__)

BUILD_SLICE = 25  # records built between two yields to the event loop

ENTRIES_LOGGED = Counter("lotse_audit_entries_total", "Records appended to the audit log.", ["service", "kind"], registry=metrics.REGISTRY)
DUPLICATES_SKIPPED = Counter("lotse_audit_duplicates_total", "Redelivered records already in the log.", ["service"], registry=metrics.REGISTRY)
TREE_SIZE = Gauge("lotse_audit_tree_size", "Entries in the audit log (as appended by this replica).", ["service"], registry=metrics.REGISTRY)
APPEND_SECONDS = Histogram(
    "lotse_audit_append_seconds", "Time to append one batch durably.", ["service"], registry=metrics.REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


async def parse_batch(records: tuple[ConsumerRecord, ...], original: Any) -> Any:
    """FastStream's batch parser decodes every header of every record as UTF-8 (and fails on
    anything else, which would stall the subscription on one bad record) and copies every body.
    The audit log needs neither: FastStream's message is built from a header-less copy of the
    first record, and the handler reads the untouched records from `msg.raw_message`."""
    msg = await original((dataclasses.replace(records[0], headers=[]),))
    msg.raw_message = records
    return msg


async def raw_records(msg: Any) -> Any:
    return msg.raw_message


def next_offsets(records: Sequence[RecordLike]) -> dict[TopicPartition, int]:
    """Per partition, the offset to commit once these records are logged."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        out[tp] = max(out.get(tp, 0), r.offset + 1)
    return out


@dataclass
class Batch:
    entries: list[Entry]
    offsets: dict[TopicPartition, int]
    consumer: Any  # the AIOKafkaConsumer that fetched it


class IngestConsumer:
    def __init__(self, runtime: Runtime, settings: AuditSettings, repo: AuditRepository, *, queue_depth: int = 1) -> None:
        self.runtime = runtime
        self.settings = settings
        self.repo = repo
        self.group_id = runtime.consumer_group("ingest")
        self.pattern = runtime.topic_pattern(settings.topic_regex)
        self.subscriber: Any = None
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=queue_depth)
        self.failing_since: float | None = None
        self.failed_attempts = 0
        self.batches = 0
        self.entries = 0
        self.build_seconds = 0.0  # time spent building entries (stage 1)
        self.append_seconds = 0.0  # time spent appending (stage 2), for diagnostics and the benchmark
        self.writer_running = False

    def register(self) -> None:
        s = self.settings
        self.subscriber = self.runtime.broker.subscriber(
            pattern=self.pattern,
            batch=True,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,  # the writer commits each batch's offsets once it is durable
            auto_offset_reset="earliest",
            max_records=s.ingest_max_records,
            batch_timeout_ms=s.ingest_batch_timeout_ms,
            max_poll_interval_ms=10 * 60 * 1000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            parser=parse_batch,
            decoder=raw_records,
        )
        self.subscriber(self._on_batch)
        self.runtime.add_worker(self._write)

    @property
    def running(self) -> bool:
        return bool(self.subscriber is not None and getattr(self.subscriber, "running", False)) and self.writer_running

    def health(self) -> str:
        if not self.running:
            return "down: not running"
        if self.failed_attempts >= self.settings.ingest_stalled_after:
            return f"down: appends failing for {time.monotonic() - (self.failing_since or time.monotonic()):.0f}s"
        return "up"

    # ------------------------------------------------------------ stage 1: build
    async def _on_batch(self, body: Any, msg: KafkaMessage) -> None:
        records: list[ConsumerRecord] = list(msg.raw_message)  # type: ignore[arg-type]
        if not records:
            return
        started = time.perf_counter()
        try:
            records.sort(key=log_order)
            entries: list[Entry] = []
            ns = self.runtime.settings.topic_namespace
            for i in range(0, len(records), BUILD_SLICE):
                entries += handlers.build_entries(records[i:i + BUILD_SLICE], namespace=ns, presorted=True)
                await asyncio.sleep(0)  # let the writer's COPY of the previous batch make progress meanwhile
        except Exception:  # a bug: never skip records; fetch them again after a pause
            log.error("building audit entries failed; the batch will be fetched again", exc_info=True)
            await msg.nack()
            await self._pause(self.settings.ingest_retry_max_s)
            return
        self.build_seconds += time.perf_counter() - started
        batch = Batch(entries, next_offsets(records), msg.consumer)
        put = asyncio.ensure_future(self.queue.put(batch))
        stop = asyncio.ensure_future(self.runtime.stopping.wait())
        await asyncio.wait({put, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not put.done():
            put.cancel()
            await msg.nack()  # shutting down: leave it to the next consumer

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.runtime.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # ------------------------------------------------------------ stage 2: write, then commit
    async def _write(self, runtime: Runtime) -> None:
        self.writer_running = True
        try:
            while not runtime.stopping.is_set() or not self.queue.empty():
                try:
                    batch = await asyncio.wait_for(self.queue.get(), timeout=0.5)
                except TimeoutError:
                    continue
                if not await self._append(batch):
                    return  # stopping: the batch stays uncommitted and is delivered again
                await self._commit(batch)
        finally:
            self.writer_running = False

    async def _append(self, batch: Batch) -> bool:
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                result = await handlers.append_entries(self.repo, batch.entries)
            except Exception as exc:  # noqa: BLE001 - nothing may be skipped: retry whatever failed
                if self.runtime.stopping.is_set():
                    return False
                self.failed_attempts = attempt
                self.failing_since = self.failing_since or time.monotonic()
                s = self.settings
                delay = min(s.ingest_retry_base_s * 2 ** (attempt - 1), s.ingest_retry_max_s) * random.uniform(0.5, 1.0)
                level = logging.ERROR if attempt >= s.ingest_stalled_after else logging.WARNING
                log.log(level, "audit append failed; retrying", extra={"entries": len(batch.entries), "attempt": attempt,
                                                                      "retry_in_s": round(delay, 2), "error": repr(exc)})
                await self._pause(delay)
                continue
            took = time.perf_counter() - started
            APPEND_SECONDS.labels("audit").observe(took)
            self.append_seconds += took
            self.failed_attempts = 0
            self.failing_since = None
            self.batches += 1
            self.entries += result.appended
            TREE_SIZE.labels("audit").set(result.tree_size)
            if result.appended:
                kinds: dict[str, int] = {}
                for e in batch.entries:
                    kinds[e.kind] = kinds.get(e.kind, 0) + 1
                for kind, n in kinds.items():
                    ENTRIES_LOGGED.labels("audit", kind).inc(n)
            if result.duplicates:
                DUPLICATES_SKIPPED.labels("audit").inc(result.duplicates)
                log.info("redelivered records skipped", extra={"duplicates": result.duplicates, "tree_size": result.tree_size})
            return True

    async def _commit(self, batch: Batch) -> None:
        try:
            await batch.consumer.commit(batch.offsets)
        except Exception as exc:  # noqa: BLE001 - durable already; a redelivery is skipped by position
            log.warning("offset commit failed; the records will be delivered again and skipped",
                        extra={"partitions": len(batch.offsets), "error": repr(exc)})


def tree_head_signer(repo: AuditRepository, key: Ed25519PrivateKey, interval_s: float):
    """A worker: signs a tree head at start and then every `interval_s` when the log has grown."""

    async def run(runtime: Runtime) -> None:
        while not runtime.stopping.is_set():
            try:
                await handlers.sign_tree_head_if_grown(repo, key)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("signing a tree head failed", extra={"error": repr(exc)})
            try:
                await asyncio.wait_for(runtime.stopping.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    return run
