"""Reading a partner's inbox topic straight from Kafka, from given positions (the gateway stores no record content).

One Kafka consumer per organisation, without a consumer group (the gateway assigns the inbox's partitions and
seeks; where the partner stands is the gateway's database, not a committed offset), opened on first use and
closed after `idle_s` without use. Requests for one organisation take turns on its consumer (a lock); those of
different organisations run side by side.

Readiness (`health`, a check of the kit's /health/ready): each organisation's last contact with Kafka, from
opening, reading or `probe` (a metadata request on every open reader, and a new opening where one failed, run
periodically by the gateway), so a reader that lost Kafka shows before its partner's next request, and a recovered
one shows without it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import topics
from lotse_kit.kafka import KafkaConnection
from lotse_kit.naming import Naming
from lotse_kit.retry import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboxRecord:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Slice:
    """Records read from `start`, in the order they are handed out (per partition in Kafka order), and the
    inbox's end offsets (the offset the next record of each partition will get) when reading began."""

    records: list[InboxRecord]
    start: dict[int, int]
    ends: dict[int, int]


class Inbox(Protocol):
    async def read(self, org: str, start: Mapping[int, int], *, limit: int, wait_s: float = 0.0) -> Slice: ...

    async def ends(self, org: str) -> dict[int, int]: ...

    async def oldest_after(self, org: str, start: Mapping[int, int]) -> tuple[int, int | None]:
        """(records at or after `start`, timestamp in ms of the oldest of them or None)."""
        ...

    async def aclose(self) -> None: ...


PARTITIONS_MAX_AGE_S = 60.0


class _Reader:
    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self.lock = asyncio.Lock()
        self.used = time.monotonic()
        self.partitions: list[int] = []
        self.partitions_at = 0.0
        self.closed = False


class KafkaInbox:
    def __init__(
        self,
        kafka: KafkaConnection,
        naming: Naming,
        *,
        client_id: str = "lotse-gateway",
        idle_s: float = 300.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.kafka = kafka
        self.naming = naming
        self.client_id = client_id
        self.idle_s = idle_s
        self.probe_timeout_s = probe_timeout_s
        self._readers: dict[str, _Reader] = {}
        self._unreachable: dict[str, str] = {}  # organisation -> why its reader's last contact with Kafka failed
        self._opening = asyncio.Lock()
        # End offsets are asked by acknowledgements, which must not wait behind a long poll on the organisation's
        # reader: one shared consumer answers them for every organisation.
        self._meta: _Reader | None = None
        self._meta_partitions: dict[str, tuple[float, list[int]]] = {}

    def _consumer(self, name: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self.kafka.aiokafka(),
            client_id=f"{self.client_id}-{name}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a position before the log's start (retention) reads from the start
            isolation_level="read_committed",
        )

    @asynccontextmanager
    async def _contact(self, org: str) -> AsyncIterator[None]:
        """Records how a contact with Kafka for `org` ended, for readiness; the error itself goes on to the caller."""
        try:
            yield
        except TRANSIENT_ERRORS as exc:
            if org not in self._unreachable:
                log.warning("inbox reader cannot reach Kafka", extra={"org": org, "error": type(exc).__name__})
            self._unreachable[org] = type(exc).__name__
            raise
        if self._unreachable.pop(org, None) is not None:
            log.info("inbox reader reaches Kafka again", extra={"org": org})

    def health(self) -> str:
        """ "up", or "down: ..." naming each organisation whose reader's last contact with Kafka failed."""
        if not self._unreachable:
            return "up"
        return "down: cannot reach Kafka: " + ", ".join(f"{org} ({why})" for org, why in sorted(self._unreachable.items()))

    async def probe(self) -> bool:
        """One metadata request from every open reader, and a new opening for each organisation whose last contact
        failed; a failure is recorded for `health`, not raised. Returns False (a periodic step with nothing more due)."""
        for org in sorted(set(self._readers) | set(self._unreachable)):
            try:
                async with self._contact(org):
                    await asyncio.wait_for(self._ping(org), self.probe_timeout_s)
            except TRANSIENT_ERRORS:
                continue  # recorded; the next probe or request tries again
        return False

    async def _ping(self, org: str) -> None:
        # An open reader is not marked used by a probe (it still closes when idle); a failed one is opened again.
        reader = self._readers.get(org) or await self._reader(org)
        try:
            # Not under the reader's lock: a long poll may hold it, and a metadata request does not touch the fetch.
            await reader.consumer.topics()
        except TRANSIENT_ERRORS:
            if reader.closed:
                return  # closed as idle meanwhile: that says nothing about Kafka
            raise

    async def _reader(self, org: str) -> _Reader:
        async with self._opening:
            reader = self._readers.get(org)
            if reader is None:
                consumer = self._consumer(org)
                try:
                    await consumer.start()
                except BaseException:
                    await consumer.stop()  # a half-started consumer keeps connections and a task otherwise
                    raise
                reader = self._readers[org] = _Reader(consumer, self.naming.topic(topics.partner_inbox(org)))
            reader.used = time.monotonic()
            return reader

    async def _meta_reader(self) -> _Reader:
        async with self._opening:
            if self._meta is None:
                consumer = self._consumer("meta")
                try:
                    await consumer.start()
                except BaseException:
                    await consumer.stop()
                    raise
                self._meta = _Reader(consumer, "")
            return self._meta

    async def _partitions(self, reader: _Reader) -> list[TopicPartition]:
        # The partition count hardly ever changes: asked again after a minute (or while the topic is missing).
        if not reader.partitions or time.monotonic() - reader.partitions_at > PARTITIONS_MAX_AGE_S:
            # aiokafka has no public call for one topic's partitions that also fetches them.
            cluster = await reader.consumer._client.fetch_all_metadata()
            reader.partitions = sorted(cluster.partitions_for_topic(reader.topic) or ())
            reader.partitions_at = time.monotonic()
        return [TopicPartition(reader.topic, p) for p in reader.partitions]

    async def _assign(self, reader: _Reader, start: Mapping[int, int]) -> tuple[list[TopicPartition], dict[int, int], dict[int, int]]:
        tps = await self._partitions(reader)
        if not tps:
            return [], {}, {}
        c = reader.consumer
        c.assign(tps)
        begins = await c.beginning_offsets(tps)
        ends = await c.end_offsets(tps)
        pos = {tp.partition: max(start.get(tp.partition, 0), begins[tp]) for tp in tps}
        for tp in tps:
            c.seek(tp, pos[tp.partition])
        return tps, pos, {tp.partition: ends[tp] for tp in tps}

    async def read(self, org: str, start: Mapping[int, int], *, limit: int, wait_s: float = 0.0) -> Slice:
        async with self._contact(org):
            return await self._read(org, start, limit=limit, wait_s=wait_s)

    async def _read(self, org: str, start: Mapping[int, int], *, limit: int, wait_s: float) -> Slice:
        reader = await self._reader(org)
        async with reader.lock:
            tps, pos, ends = await self._assign(reader, start)
            per_partition: dict[int, list[InboxRecord]] = {tp.partition: [] for tp in tps}
            total = 0
            if tps and all(pos[p] >= ends[p] for p in pos) and wait_s > 0:
                # Long poll: nothing waiting; the first records to arrive within wait_s answer the request.
                batch = await reader.consumer.getmany(*tps, timeout_ms=int(wait_s * 1000), max_records=limit)
                total += _collect(batch, per_partition, pos)
            while tps and total < limit:
                waiting = [tp for tp in tps if pos[tp.partition] < ends[tp.partition]]
                if not waiting:
                    break
                batch = await reader.consumer.getmany(*waiting, timeout_ms=1000, max_records=limit - total)
                if not batch:
                    break  # what is left up to the end offsets are no records (transaction markers) or not fetchable now
                total += _collect(batch, per_partition, pos)
            reader.used = time.monotonic()
        merged = list(heapq.merge(*per_partition.values(), key=lambda r: (r.timestamp_ms, r.partition)))[:limit]
        return Slice(merged, dict(start), ends)

    async def ends(self, org: str) -> dict[int, int]:
        async with self._contact(org):
            return await self._ends(org)

    async def _ends(self, org: str) -> dict[int, int]:
        meta = await self._meta_reader()
        topic = self.naming.topic(topics.partner_inbox(org))
        async with meta.lock:
            known = self._meta_partitions.get(topic)
            if known is None or not known[1] or time.monotonic() - known[0] > PARTITIONS_MAX_AGE_S:
                cluster = await meta.consumer._client.fetch_all_metadata()
                known = self._meta_partitions[topic] = (time.monotonic(), sorted(cluster.partitions_for_topic(topic) or ()))
            tps = [TopicPartition(topic, p) for p in known[1]]
            ends = await meta.consumer.end_offsets(tps) if tps else {}
            return {tp.partition: o for tp, o in ends.items()}

    async def oldest_after(self, org: str, start: Mapping[int, int]) -> tuple[int, int | None]:
        async with self._contact(org):
            return await self._oldest_after(org, start)

    async def _oldest_after(self, org: str, start: Mapping[int, int]) -> tuple[int, int | None]:
        reader = await self._reader(org)
        async with reader.lock:
            tps, pos, ends = await self._assign(reader, start)
            pending = sum(max(0, ends[p] - pos[p]) for p in pos)
            oldest: int | None = None
            waiting = [tp for tp in tps if pos[tp.partition] < ends[tp.partition]]
            firsts: dict[int, int] = {}
            # The first record of each partition with records waiting (one fetch usually brings them all).
            for _ in range(5):
                if not waiting:
                    break
                batch = await reader.consumer.getmany(*waiting, timeout_ms=1000, max_records=len(waiting) * 10)
                for tp, recs in batch.items():
                    if recs and tp.partition not in firsts:
                        firsts[tp.partition] = recs[0].timestamp
                waiting = [tp for tp in waiting if tp.partition not in firsts]
            if firsts:
                oldest = min(firsts.values())
            return pending, oldest

    async def close_idle(self) -> None:
        now = time.monotonic()
        for org, reader in list(self._readers.items()):
            if now - reader.used > self.idle_s and not reader.lock.locked():
                del self._readers[org]
                reader.closed = True
                await reader.consumer.stop()

    async def aclose(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        if self._meta is not None:
            readers.append(self._meta)
            self._meta = None
        for reader in readers:
            reader.closed = True
            await reader.consumer.stop()


def _collect(batch: Mapping[TopicPartition, list[object]], out: dict[int, list[InboxRecord]], pos: dict[int, int]) -> int:
    n = 0
    for tp, recs in batch.items():
        for r in recs:
            out[tp.partition].append(
                InboxRecord(
                    partition=tp.partition,
                    offset=r.offset,  # type: ignore[attr-defined]
                    timestamp_ms=r.timestamp,  # type: ignore[attr-defined]
                    key=r.key,  # type: ignore[attr-defined]
                    value=r.value,  # type: ignore[attr-defined]
                    headers=tuple(r.headers),  # type: ignore[attr-defined]
                )
            )
            pos[tp.partition] = r.offset + 1  # type: ignore[attr-defined]
            n += 1
    return n
