"""Retrying: which errors heal by themselves, and how long to wait before the next attempt.

Every retry loop in Lotse (consumers, the outbox relay, the audit ingest, background workers,
outbound calls) uses these two, so a transient failure is treated the same everywhere; an HTTP
request that fails with one of `TRANSIENT_ERRORS` is answered 503 with Retry-After (`lotse_kit.problems`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import asyncpg
import httpx
from aiokafka.errors import KafkaError

# Failures of the infrastructure rather than of the event or request: retried until they heal.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # also ConnectionDoesNotExistError: the connection was lost mid-query
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,  # the server is shutting down or restarting (pg_ctl stop/restart, pg_terminate_backend)
    asyncpg.CrashShutdownError,  # another backend crashed; the server restarts
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    KafkaError,
    httpx.TransportError,  # a peer service (e.g. the consent decision API) is unreachable
)


def backoff(
    attempt: int,
    base_s: float,
    max_s: float,
    *,
    jitter: float = 0.5,
    rng: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential, capped, jittered.

    `jitter` is the fraction that may be taken off (0.5: between half and all of the step), so
    replicas that failed together do not retry together.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    # min() before the power would overflow: 2 ** 1100 is still an int, but a float of it is not.
    step: float = base_s * 2 ** min(attempt - 1, 64)
    return min(step, max_s) * rng(1.0 - jitter, 1.0)
