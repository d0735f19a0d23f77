"""The delivery worker: claims due notifications per channel, within each channel's token bucket, and sends them;
and the re-wrap job (`secret_rewrap`), which keeps stored webhook secrets under the current key-encryption key.

Not a `periodic` job: it is woken by NOTIFY when the consumer records rows (on a dedicated LISTEN
connection) and keeps up to `worker_batch_size` attempts in flight at once; without a wake-up it
polls every `worker_poll_interval_s`. What one claim returns is sent as one batch (`handlers.send_batch`:
e-mails over one SMTP connection, outcomes written in one transaction). Safe with several replicas: rows are claimed with
FOR UPDATE SKIP LOCKED and a lease (adapters.repository.claim_due). Rate limits are per replica.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from lotse_kit.retry import TRANSIENT_ERRORS, backoff
from lotse_kit.workers import PeriodicWorker, periodic, sleep_unless_stopping

from ..adapters import metrics
from ..adapters import repository as repo
from ..config import NotificationsSettings
from ..domain.model import Channel, TokenBucket
from ..handlers import Deps, rewrap_secrets, send_batch
from ..handlers.triggers import SERVICE

log = logging.getLogger(__name__)

# A lost database, and any database error while recording an attempt: the lease brings the row back.
DB_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)


class DeliveryWorker:
    def __init__(self, settings: NotificationsSettings, deps: Deps, *, unhealthy_after: int = 5) -> None:
        self.deps = deps
        limits = settings.rate_limits
        self.buckets = {c: TokenBucket(limits[c.value].rate_per_s, limits[c.value].burst) for c in Channel if c.value in limits}
        self.capacity = settings.worker_batch_size
        self.poll_interval_s = settings.worker_poll_interval_s
        self.lease_s = settings.sending_lease_s
        self.shutdown_grace_s = settings.shutdown_grace_s
        self.unhealthy_after = unhealthy_after
        self.failures = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[object]] = set()
        self._in_flight = 0  # claimed notifications whose batch has not finished

    def wake(self, *_: object) -> None:
        self._wake.set()

    def health(self) -> str:
        if self.failures >= self.unhealthy_after:
            return f"down: {self.failures} failed claims in a row"
        return "up"

    async def __call__(self, stopping: asyncio.Event) -> None:
        listener = await self._listen()
        try:
            while not stopping.is_set():
                try:
                    claimed = await self.pass_once()
                except Exception as exc:  # a failed claim never ends the worker; a bug is logged with its traceback
                    self.failures += 1
                    delay = backoff(self.failures, self.poll_interval_s, 30.0)
                    log.warning(
                        "delivery worker could not claim; retrying",
                        extra={"attempt": self.failures, "retry_in_s": round(delay, 2), "error": repr(exc)},
                        exc_info=not isinstance(exc, TRANSIENT_ERRORS),
                    )
                    await sleep_unless_stopping(stopping, delay)
                    continue
                self.failures = 0
                if claimed == 0 or self._in_flight >= self.capacity:
                    await self._idle(stopping, self._idle_wait())
        finally:
            try:
                if self._tasks:  # let attempts in flight finish and record their outcome (bounded by the send timeouts)
                    await asyncio.wait(set(self._tasks), timeout=self.shutdown_grace_s)
            finally:
                for t in list(self._tasks):
                    t.cancel()  # their rows stay `sending` and are claimed again when the lease ends
                await asyncio.gather(*self._tasks, return_exceptions=True)
                if listener is not None:
                    await listener.close()

    async def pass_once(self) -> int:
        """Claims what is due and fits the buckets and free capacity; starts sending it. Returns the number claimed."""
        total = 0
        for channel in Channel:
            free = self.capacity - self._in_flight
            if free <= 0:
                break
            bucket = self.buckets.get(channel)
            allowed = min(free, bucket.available()) if bucket else free
            if allowed <= 0:
                metrics.rate_limited.labels(SERVICE, channel.value).inc()
                continue
            rows = await repo.claim_due(self.deps.db.pool, channel, allowed, self.lease_s, self.deps.clock.now())
            if bucket and rows:
                bucket.take(len(rows))
            if rows:
                self._in_flight += len(rows)
                metrics.in_flight.labels(SERVICE).inc(len(rows))
                task = asyncio.create_task(self._send(rows), name=f"notify-{channel.value}-{rows[0]['id']}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            total += len(rows)
        return total

    async def _send(self, rows: list[asyncpg.Record]) -> None:
        try:
            await send_batch(rows, self.deps)
        except DB_ERRORS as exc:
            # The outcomes could not be recorded; the lease expires and the rows are attempted again.
            log.error(
                "could not record notification attempts", extra={"notification_ids": [str(r["id"]) for r in rows], "error": repr(exc)}
            )
        except Exception:  # a bug: logged; the lease brings the rows back
            log.error("notification batch crashed", extra={"notification_ids": [str(r["id"]) for r in rows]}, exc_info=True)
        finally:
            self._in_flight -= len(rows)
            metrics.in_flight.labels(SERVICE).dec(len(rows))
            self._wake.set()

    def _idle_wait(self) -> float:
        wait = self.poll_interval_s
        for bucket in self.buckets.values():
            if bucket.available() < 1:
                wait = min(wait, max(bucket.seconds_until(1), 0.01))
        return wait

    async def _idle(self, stopping: asyncio.Event, seconds: float) -> None:
        """Until a NOTIFY or a finished attempt wakes the worker, the service stops, or `seconds` pass."""
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        self._wake.clear()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn = await self.deps.db.connect("worker")
            await conn.add_listener(repo.wake_channel(self.deps.db.schema), self.wake)
            return conn
        except DB_ERRORS as exc:
            log.warning("no LISTEN connection; the worker polls only", extra={"error": repr(exc)})
            return None


def secret_rewrap(deps: Deps, interval_s: float) -> PeriodicWorker:
    """At start and every `interval_s`: secrets sealed under an old KEK are sealed again under the current one."""

    async def step() -> bool:
        return await rewrap_secrets(deps)

    return periodic("secret-rewrap", step, interval_s=interval_s)
