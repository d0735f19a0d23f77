"""The audit service's background workers: the ingest writer and the tree-head signer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from lotse_kit.retry import TRANSIENT_ERRORS, backoff
from lotse_kit.runtime import tune_gc_for_batches
from lotse_kit.workers import sleep_unless_stopping

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

    def __init__(self, ingest: IngestConsumer, deps: Deps, settings: AuditSettings, *, on_grown: Callable[[], None] | None = None) -> None:
        self.ingest = ingest
        self.deps = deps
        self.on_grown = on_grown  # told after every append that grew the log (the tree-head signer)
        self.retry_base_s = settings.ingest_retry_base_s
        self.retry_max_s = settings.ingest_retry_max_s
        self.stalled_after = settings.ingest_stalled_after
        self.isolate_after = settings.ingest_isolate_after

    async def __call__(self, stopping: asyncio.Event) -> None:
        tune_gc_for_batches()  # the benchmark runs the writer without Runtime.start
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
            if result.appended and self.on_grown is not None:
                self.on_grown()
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


class TreeHeadSigner:
    """Signs tree heads: at start; soon after an append of this replica grew the log; and every
    `interval_s` as a backstop (another replica's appends). Only when the log grew since the latest
    head (`SignTreeHeadIfGrown`), so an idle log gets no new heads.

    After an append, the head is signed once `delay_s` has passed since the previous one: a burst of
    appends costs one head per `delay_s` (one Ed25519 signature, one root from at most
    popcount(size) cached nodes, one row), never one per batch or entry, and every entry is in a
    signed head about `delay_s` after its append. `delay_s` 0: only the backstop and on demand."""

    def __init__(self, deps: Deps, *, delay_s: float, interval_s: float, unhealthy_after: int = 5) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.deps = deps
        self.delay_s = delay_s
        self.interval_s = interval_s
        self.unhealthy_after = unhealthy_after
        self.failures = 0
        self.passes = 0  # successful checks (signed or found nothing new)
        self.heads = 0  # heads signed by this worker
        self._grown = asyncio.Event()
        self._last = 0.0  # monotonic time of the latest signing attempt that succeeded

    def log_grew(self) -> None:
        """Called by the writer after an append that grew the log (it is durable by then)."""
        if self.delay_s > 0:
            self._grown.set()

    async def __call__(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            # Cleared before the size is read: an append committing after this point wakes the next round.
            self._grown.clear()
            try:
                head = await handle(SignTreeHeadIfGrown(), self.deps)
            except Exception as exc:  # never end the worker; readiness says so after a few failures
                self.failures += 1
                delay = backoff(self.failures, min(1.0, self.interval_s), self.interval_s)
                transient = isinstance(exc, TRANSIENT_ERRORS)
                log.log(
                    logging.WARNING if transient else logging.ERROR,
                    "signing a tree head failed; retrying",
                    extra={"attempt": self.failures, "retry_in_s": round(delay, 2), "error": repr(exc)},
                    exc_info=not transient,
                )
                await sleep_unless_stopping(stopping, delay)
                continue
            self.failures = 0
            self._last = time.monotonic()
            self.passes += 1
            if head is not None:
                self.heads += 1
            await self._until_due(stopping)

    async def _until_due(self, stopping: asyncio.Event) -> None:
        """Waits until the log grew and `delay_s` has passed since the last head, or `interval_s` passed."""
        grown = asyncio.ensure_future(self._grown.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({grown, stop}, timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            grown.cancel()
            stop.cancel()
        wait = self._last + self.delay_s - time.monotonic()
        if self._grown.is_set() and wait > 0:
            await sleep_unless_stopping(stopping, wait)

    def health(self) -> str:
        if self.failures >= self.unhealthy_after:
            return f"down: {self.failures} failed runs in a row"
        return "up"
