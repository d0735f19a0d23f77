"""The audit service's background workers: the ingest writer and the tree-head signer."""

from __future__ import annotations

import asyncio
import logging
import time

from lotse_kit.retry import TRANSIENT_ERRORS, backoff
from lotse_kit.workers import PeriodicWorker, periodic, sleep_unless_stopping

from ..adapters import metrics
from ..config import AuditSettings
from ..domain.commands import AppendEntries, SignTreeHeadIfGrown
from ..domain.entries import Entry, unloggable
from ..handlers import Deps, handle
from .consumers import Batch, IngestConsumer

log = logging.getLogger(__name__)


class IngestWriter:
    """Stage 2 of the ingest: appends each queued batch durably, then commits exactly its offsets.

    Not a `periodic` job: it is driven by the ingest's queue, and an append is retried (with the
    kit's `backoff`) until it succeeds, because nothing may be skipped. On stopping it drains the
    queue; a batch whose append is cut short stays uncommitted and is delivered again."""

    def __init__(self, ingest: IngestConsumer, deps: Deps, settings: AuditSettings) -> None:
        self.ingest = ingest
        self.deps = deps
        self.retry_base_s = settings.ingest_retry_base_s
        self.retry_max_s = settings.ingest_retry_max_s
        self.stalled_after = settings.ingest_stalled_after
        self.isolate_after = settings.ingest_isolate_after

    async def __call__(self, stopping: asyncio.Event) -> None:
        ingest = self.ingest
        ingest.writer_running = True
        try:
            while not stopping.is_set() or not ingest.queue.empty():
                try:
                    batch = await asyncio.wait_for(ingest.queue.get(), timeout=0.5)
                except TimeoutError:
                    continue
                if not await self._append(batch, stopping):
                    return  # stopping: the batch stays uncommitted and is delivered again
                await self._commit(batch)
        finally:
            ingest.writer_running = False

    async def _append(self, batch: Batch, stopping: asyncio.Event) -> bool:
        ingest = self.ingest
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                result = await handle(AppendEntries(batch.entries), self.deps)
            except Exception as exc:  # nothing may be skipped: retry whatever failed
                if stopping.is_set():
                    return False
                if not isinstance(exc, TRANSIENT_ERRORS) and attempt >= self.isolate_after:
                    # The database refuses something in this batch, not the connection: find the
                    # entries it refuses, log stand-ins for them, and move on instead of stalling.
                    batch.entries = await self._isolate(list(batch.entries))
                    continue
                ingest.failed_attempts = attempt
                ingest.failing_since = ingest.failing_since or time.monotonic()
                delay = backoff(attempt, self.retry_base_s, self.retry_max_s)
                level = logging.ERROR if attempt >= self.stalled_after else logging.WARNING
                log.log(
                    level,
                    "audit append failed; retrying",
                    extra={"entries": len(batch.entries), "attempt": attempt, "retry_in_s": round(delay, 2), "error": repr(exc)},
                )
                await sleep_unless_stopping(stopping, delay)
                continue
            took = time.perf_counter() - started
            metrics.batch_appended(result, batch.entries, took)
            ingest.append_seconds += took
            ingest.failed_attempts = 0
            ingest.failing_since = None
            ingest.batches += 1
            ingest.entries += result.appended
            if result.duplicates:
                log.info("redelivered records skipped", extra={"duplicates": result.duplicates, "tree_size": result.tree_size})
            return True

    async def _isolate(self, entries: list[Entry]) -> list[Entry]:
        """`entries` with every one the database refuses (tried alone, by bisection, in a transaction that
        is rolled back) replaced by its `unloggable` stand-in. Order is kept."""
        refused: dict[tuple[str, int, int], str] = {}

        async def probe(part: list[Entry]) -> None:
            error = await self.deps.repo.refusal(part)
            if error is None:
                return
            if len(part) == 1:
                refused[part[0].position] = error
                return
            mid = len(part) // 2
            await probe(part[:mid])
            await probe(part[mid:])

        await probe(entries)
        for position, reason in refused.items():
            log.error("audit entry refused by the database; logging a stand-in", extra={"position": list(position), "reason": reason})
            metrics.ENTRIES_UNLOGGABLE.labels(metrics.SERVICE).inc()
        return [unloggable(e, refused[e.position]) if e.position in refused else e for e in entries]

    async def _commit(self, batch: Batch) -> None:
        try:
            await batch.consumer.commit(batch.offsets)
        except Exception as exc:  # durable already; a redelivery is skipped by position
            log.warning(
                "offset commit failed; the records will be delivered again and skipped",
                extra={"partitions": len(batch.offsets), "error": repr(exc)},
            )


def tree_head_signer(deps: Deps, interval_s: float) -> PeriodicWorker:
    """Signs a tree head at start and then every `interval_s` when the log has grown."""

    async def step() -> bool:
        await handle(SignTreeHeadIfGrown(), deps)
        return False

    return periodic("tree-head-signer", step, interval_s=interval_s, retry_base_s=min(1.0, interval_s), retry_max_s=interval_s)
