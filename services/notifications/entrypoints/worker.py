"""The delivery worker: claims due notifications per channel, within each channel's token bucket, and sends them.

Safe with several replicas: rows are claimed with FOR UPDATE SKIP LOCKED and a lease
(see adapters.postgres.claim_due). Woken by NOTIFY when the consumer records rows,
otherwise it polls. Rate limits are per replica.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from lotse_kit.runtime import Runtime

from .. import metrics
from ..adapters import postgres as pg
from ..config import NotificationsSettings
from ..domain.model import Channel, TokenBucket
from ..handlers import SERVICE, Deps, send_notification

log = logging.getLogger(__name__)


class DeliveryWorker:
    def __init__(self, settings: NotificationsSettings, deps: Deps) -> None:
        self.settings = settings
        self.deps = deps
        limits = settings.rate_limits
        self.buckets = {c: TokenBucket(limits[c.value].rate_per_s, limits[c.value].burst) for c in Channel if c.value in limits}
        self.capacity = settings.worker_batch_size
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[object]] = set()

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def __call__(self, runtime: Runtime) -> None:
        listener = await self._listen(runtime)
        try:
            while not runtime.stopping.is_set():
                try:
                    claimed = await self.pass_once(runtime.pool)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                    log.warning("delivery worker could not claim; retrying", extra={"error": repr(exc)})
                    claimed = 0
                if claimed == 0 or len(self._tasks) >= self.capacity:
                    await self._sleep(self._idle_wait())
        finally:
            try:
                if self._tasks:  # let attempts in flight finish and record their outcome (bounded by the send timeouts)
                    await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace_s)
            finally:
                for t in list(self._tasks):
                    t.cancel()  # their rows stay `sending` and are claimed again when the lease ends
                await asyncio.gather(*self._tasks, return_exceptions=True)
                if listener is not None:
                    await listener.close()

    async def pass_once(self, pool: asyncpg.Pool) -> int:
        """Claims what is due and fits the buckets and free capacity; starts sending it. Returns the number claimed."""
        total = 0
        for channel in Channel:
            free = self.capacity - len(self._tasks)
            if free <= 0:
                break
            bucket = self.buckets.get(channel)
            allowed = min(free, bucket.available()) if bucket else free
            if allowed <= 0:
                metrics.rate_limited.labels(SERVICE, channel.value).inc()
                continue
            rows = await pg.claim_due(pool, channel, allowed, self.settings.sending_lease_s)
            if bucket and rows:
                bucket.take(len(rows))
            for row in rows:
                task = asyncio.create_task(self._send(pool, row), name=f"notify-{row['id']}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            total += len(rows)
        return total

    async def _send(self, pool: asyncpg.Pool, row: asyncpg.Record) -> None:
        metrics.in_flight.labels(SERVICE).inc()
        try:
            await send_notification(pool, row, self.deps)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The outcome could not be recorded; the lease expires and the row is attempted again.
            log.error("could not record a notification attempt", extra={"notification_id": str(row["id"]), "error": repr(exc)})
        finally:
            metrics.in_flight.labels(SERVICE).dec()
            self._wake.set()

    def _idle_wait(self) -> float:
        wait = self.settings.worker_poll_interval_s
        for bucket in self.buckets.values():
            if bucket.available() < 1:
                wait = min(wait, max(bucket.seconds_until(1), 0.01))
        return wait

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    async def _listen(self, runtime: Runtime) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(runtime.dsn, server_settings={"search_path": runtime.schema, "application_name": "lotse-notifications-worker"})
            await conn.add_listener(pg.wake_channel(runtime.schema), self.wake)
            return conn
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("no LISTEN connection; the worker polls only", extra={"error": repr(exc)})
            return None
