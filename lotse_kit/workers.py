"""Background workers: a coroutine that runs until the service stops.

`periodic` is the one "loop until stopping" in Lotse: deadline scans, consent expiry,
notification delivery and tree-head signing are each a `step` that it calls on a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from .retry import TRANSIENT_ERRORS, backoff

log = logging.getLogger(__name__)

# A worker gets the service's stopping event and returns soon after it is set.
Worker = Callable[[asyncio.Event], Awaitable[None]]

# One run of a periodic job. Returns True when more work is due right now (e.g. a full batch).
Step = Callable[[], Awaitable[bool]]


async def sleep_unless_stopping(stopping: asyncio.Event, seconds: float) -> None:
    """Sleeps `seconds`, returning early when the service starts stopping."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


class PeriodicWorker:
    """Calls `step` every `interval_s`, at once again while it reports more work due.

    A failing step is retried with `backoff`; it never ends the worker (a job that crashed for good
    would silently stop expiring consents or emitting deadline notices). Nothing is acknowledged by a
    failed step: each step is a transaction that either commits its effects or leaves them due.
    `failures` counts consecutive failed steps; readiness reports the worker down past `unhealthy_after`.
    """

    def __init__(
        self,
        name: str,
        step: Step,
        *,
        interval_s: float,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        unhealthy_after: int = 5,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.unhealthy_after = unhealthy_after
        self.failures = 0
        self.runs = 0
        self.last_success: float | None = None

    async def __call__(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                more = await self.step()
            except TRANSIENT_ERRORS as exc:
                more = False
                self.failures += 1
                delay = backoff(self.failures, self.retry_base_s, self.retry_max_s)
                log.warning(
                    "worker step failed; retrying",
                    extra={"worker": self.name, "attempt": self.failures, "retry_in_s": round(delay, 2), "error": repr(exc)},
                )
                await sleep_unless_stopping(stopping, delay)
                continue
            except Exception:  # a bug or an unexpected state: keep the worker alive, say so loudly
                self.failures += 1
                delay = backoff(self.failures, self.retry_base_s, self.retry_max_s)
                log.error(
                    "worker step failed; retrying",
                    extra={"worker": self.name, "attempt": self.failures, "retry_in_s": round(delay, 2)},
                    exc_info=True,
                )
                await sleep_unless_stopping(stopping, delay)
                continue
            self.failures = 0
            self.runs += 1
            self.last_success = time.monotonic()
            if not more:
                await sleep_unless_stopping(stopping, self.interval_s)

    def health(self) -> str:
        if self.failures >= self.unhealthy_after:
            return f"down: {self.failures} failed runs in a row"
        return "up"


def periodic(name: str, step: Step, *, interval_s: float, **kwargs: float) -> PeriodicWorker:
    return PeriodicWorker(name, step, interval_s=interval_s, **kwargs)  # type: ignore[arg-type]
