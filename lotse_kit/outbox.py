"""Transactional outbox and its relay.

`enqueue` writes the encoded event into the caller's transaction, so the event
exists exactly when the state change it announces does. The relay publishes
pending rows in id order; one relay per service is active at a time (advisory
lock), woken by LISTEN/NOTIFY and by a poll, and it retries every failed row
with backoff until Kafka acknowledges it. Published rows are deleted: some
carry personal data (disclosure requests) that must not linger here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from contracts import Envelope, encode
from contracts.events import SCHEMAS

from . import metrics
from .declaration import ServiceDeclaration, UndeclaredEvent
from .logging import event_context
from .retry import TRANSIENT_ERRORS, backoff

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes | None, bytes, dict[str, str], str], Awaitable[Any]]


def notify_channel(schema: str) -> str:
    """The relay's wake-up channel (`enqueue` builds the same name in SQL from `current_schema()`)."""
    return f"lotse_outbox_{schema}"


async def enqueue(conn: asyncpg.Connection, env: Envelope[Any], topic: str) -> None:
    """Adds the event to the outbox inside the caller's transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.enqueue must run inside the transaction that changes the state")
    rec = encode(env)
    # One round trip: the row, and the relay's wake-up on the schema's channel (notify_channel, computed in
    # SQL from the connection's schema). Notifications are delivered at commit, so the relay never wakes for a
    # row it cannot yet see, and PostgreSQL folds the identical ones of one transaction into one.
    await conn.execute(
        """WITH added AS (
               INSERT INTO outbox (event_id, event_type, client_id, topic, key, value, headers)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
               RETURNING 1
           )
           SELECT pg_notify('lotse_outbox_' || current_schema(), '') FROM added""",
        env.id,
        env.type,
        env.subject,
        topic,
        rec.key,
        rec.value,
        json.dumps(rec.headers_dict()),
    )


class Outbox:
    """The service's outbox: enqueues only what the service declared it produces."""

    def __init__(self, declaration: ServiceDeclaration) -> None:
        self.declaration = declaration

    async def enqueue(self, conn: asyncpg.Connection, env: Envelope[Any], topic: str | None = None) -> None:
        """Adds `env` for `topic` (default: its contract's topic) inside the caller's transaction."""
        topic = topic or SCHEMAS[env.dataschema].topic
        if topic is None:
            raise ValueError(f"{env.type} has no fixed topic; name the partner topic")
        if not self.declaration.may_publish(topic, env):
            raise UndeclaredEvent(f"{self.declaration.service} does not declare {env.type} ({env.dataschema}) on {topic}")
        await enqueue(conn, env, topic)


# What makes the relay reconnect: the infrastructure's transient failures and any database error.
_RELAY_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)


class OutboxRelay:
    def __init__(
        self,
        *,
        service: str,
        dsn: str,
        schema: str,
        publish: Publish,
        poll_interval_s: float = 1.0,
        batch_size: int = 200,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self.service = service
        self.dsn = dsn
        self.schema = schema
        self.publish = publish
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.is_leader = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def lock_key(self) -> str:
        return f"lotse-outbox-relay:{self.schema}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Lets the relay finish its batch, then stops it. After `timeout_s` the batch is abandoned:
        its rows stay in the outbox and are published again by the next leader (consumers are
        idempotent by event id), so cutting it short loses nothing."""
        self._stopping.set()
        self._wake.set()
        if not self._task:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout_s)
        except TimeoutError:
            log.warning("outbox relay did not finish its batch in time; rows left for the next leader", extra={"timeout_s": timeout_s})
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._lead()
                failures = 0
            except _RELAY_ERRORS as exc:
                self.is_leader = False
                failures += 1
                delay = backoff(failures, self.retry_base_s, self.retry_max_s)
                log.warning(
                    "outbox relay lost its database connection; reconnecting", extra={"error": repr(exc), "retry_in_s": round(delay, 2)}
                )
                await self._sleep(delay)

    async def _lead(self) -> None:
        # A dedicated connection holds the advisory lock for as long as this relay leads.
        conn = await asyncpg.connect(
            self.dsn, server_settings={"search_path": self.schema, "application_name": f"lotse-{self.service}-relay"}
        )
        try:
            while not self._stopping.is_set():
                if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.lock_key):
                    break
                await self._sleep(self.poll_interval_s)  # another replica leads; stand by
            else:
                return
            self.is_leader = True
            await conn.add_listener(notify_channel(self.schema), self._on_notify)
            while not self._stopping.is_set():
                published = await self.drain_once(conn)
                if published < self.batch_size:
                    self._wake.clear()
                    await self._sleep(self.poll_interval_s)
        finally:
            self.is_leader = False
            await conn.close()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def drain_once(self, conn: asyncpg.Connection) -> int:
        """Publishes one batch of due rows. Returns how many were published."""
        rows = await conn.fetch(
            """SELECT id, event_id, event_type, client_id, topic, key, value, headers, attempts
                 FROM outbox WHERE next_attempt_at <= now() ORDER BY id LIMIT $1""",
            self.batch_size,
        )
        metrics.outbox_backlog.labels(self.service).set(await conn.fetchval("SELECT count(*) FROM outbox"))
        if not rows:
            return 0
        # Send the whole batch before awaiting acks: the idempotent producer keeps per-partition order.
        results = await asyncio.gather(
            *(self.publish(r["topic"], r["key"], r["value"], json.loads(r["headers"]), str(r["event_id"])) for r in rows),
            return_exceptions=True,
        )
        done = [r["id"] for r, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)]
        if done:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", done)
        for r, res in zip(rows, results, strict=True):
            with event_context(r["event_id"], r["client_id"]):
                if isinstance(res, BaseException):
                    metrics.outbox_publish_failures.labels(self.service).inc()
                    delay = backoff(r["attempts"] + 1, self.retry_base_s, self.retry_max_s)
                    log.warning(
                        "outbox publish failed; will retry",
                        extra={
                            "topic": r["topic"],
                            "type": r["event_type"],
                            "attempt": r["attempts"] + 1,
                            "retry_in_s": round(delay, 2),
                            "error": repr(res),
                        },
                    )
                    await conn.execute(
                        """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                                  next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1""",
                        r["id"],
                        repr(res)[:1000],
                        delay,
                    )
                else:
                    metrics.events_published.labels(self.service, r["topic"], r["event_type"]).inc()
                    log.debug("event published", extra={"topic": r["topic"], "type": r["event_type"]})
        return len(done)
