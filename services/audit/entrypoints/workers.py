"""The audit service's background workers: the ingest writer and the tree-head signer."""

from __future__ import annotations

import asyncio
import logging
import time

from lotse_kit.retry import backoff
from lotse_kit.workers import PeriodicWorker, periodic, sleep_unless_stopping

from ..adapters import metrics
from ..config import AuditSettings
from ..domain.commands import AppendEntries, SignTreeHeadIfGrown
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
