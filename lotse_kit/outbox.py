"""Transactional outbox and its relay.

`enqueue` writes the encoded event into the caller's transaction, so the event
exists exactly when the state change it announces does (inside a consumer batch
the rows of all its handlers are collected and written in one statement just
before the batch commits: `collecting`). The relay publishes
pending rows in id order; one relay per service is active at a time (advisory
lock), woken by LISTEN/NOTIFY and by a poll, and it retries every failed row
with backoff until Kafka acknowledges it. Published rows are deleted: some
carry personal data (disclosure requests) that must not linger here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import asyncpg

from contracts import Envelope, encode
from contracts.events import SCHEMAS

from . import metrics, tracing
from .declaration import ServiceDeclaration, UndeclaredEvent
from .logging import event_context
from .retry import TRANSIENT_ERRORS, backoff

log = logging.getLogger(__name__)

# (topic, key, value, headers, event id) -> the acknowledgement's awaitable, e.g. aiokafka's `producer.send`
# (see `OutboxRelay`); the topic is the logical name, the headers those `enqueue` stored.
Publish = Callable[[str, bytes | None, bytes, dict[str, str], str], Awaitable[Any]]


def notify_channel(schema: str) -> str:
    """The relay's wake-up channel (`enqueue` builds the same name in SQL from `current_schema()`)."""
    return f"lotse_outbox_{schema}"


async def enqueue(conn: asyncpg.Connection, env: Envelope[Any], topic: str) -> None:
    """Adds the event to the outbox inside the caller's transaction."""
    await enqueue_many(conn, [(env, topic)])


async def enqueue_many(conn: asyncpg.Connection, events: Sequence[tuple[Envelope[Any], str]]) -> None:
    """Adds the events, each for its topic, in the order given, inside the caller's transaction, in one round trip.

    Inside a consumer batch (`collecting`) and on its connection, the rows are encoded now and written with the
    batch's other rows just before its transaction commits (`Collected.flush`)."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.enqueue must run inside the transaction that changes the state")
    if not events:
        return
    rows = _Rows()
    _encode_into(rows, events)  # all or nothing: an event that does not encode fails the call before anything is kept
    collected = _collected.get()
    if collected is not None and collected.conn is conn and collected.open:
        collected.rows.extend(rows)
        return
    await _insert(conn, rows)


class _Rows:
    """Encoded outbox rows as the INSERT's column arrays."""

    __slots__ = ("cols",)

    def __init__(self) -> None:
        # event_id, event_type, client_id, topic, key, value, headers
        self.cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.cols[0])

    def extend(self, other: _Rows) -> None:
        for col, more in zip(self.cols, other.cols, strict=True):
            col.extend(more)


def _encode_into(rows: _Rows, events: Sequence[tuple[Envelope[Any], str]]) -> None:
    # An event without a trace context carries the current one (lotse_kit/tracing.py): its consumers join this trace.
    # Stamped here, at the enqueue, not when collected rows are written: the context is the enqueuing handler's.
    stamped = tracing.stamp([env for env, _ in events])
    cols = rows.cols
    for env, (_, topic) in zip(stamped, events, strict=True):
        rec = encode(env)
        for col, value in zip(
            cols, (env.id, env.type, env.subject, topic, rec.key, rec.value, json.dumps(rec.headers_dict())), strict=True
        ):
            col.append(value)


async def _insert(conn: asyncpg.Connection, rows: _Rows) -> None:
    # The rows, and the relay's wake-up on the schema's channel (notify_channel, computed in SQL from the
    # connection's schema). Notifications are delivered at commit, so the relay never wakes for a row it cannot
    # yet see, and PostgreSQL folds the identical ones of one transaction into one. Ids follow the given order
    # (the relay publishes in id order).
    await conn.execute(
        """WITH added AS (
               INSERT INTO outbox (event_id, event_type, client_id, topic, key, value, headers)
               SELECT e, t, c, tp, k, v, h::jsonb
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::text[])
                      WITH ORDINALITY AS x (e, t, c, tp, k, v, h, n)
                ORDER BY n
               RETURNING 1
           )
           SELECT pg_notify('lotse_outbox_' || current_schema(), '') FROM added LIMIT 1""",
        *rows.cols,
    )


class Collected:
    """The outbox rows enqueued on one connection while a consumer batch's transaction runs (`collecting`)."""

    __slots__ = ("conn", "open", "rows")

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.rows = _Rows()
        self.open = True

    async def flush(self) -> int:
        """Writes the collected rows, in the order they were enqueued, in one statement; enqueues after this write at
        once. Call it last in the transaction, before it commits. Returns how many rows were written."""
        self.open = False
        if len(self.rows):
            await _insert(self.conn, self.rows)
        return len(self.rows)


_collected: contextvars.ContextVar[Collected | None] = contextvars.ContextVar("lotse_outbox_collected", default=None)


@contextlib.contextmanager
def collecting(conn: asyncpg.Connection) -> Iterator[Collected]:
    """While the block runs, `enqueue`/`enqueue_many` on `conn` (this very object, as the handlers get it) encode and
    check the events at once but only collect their rows; the caller writes them with `Collected.flush` as the
    last statement of its transaction (the consumer, once per batch: one statement instead of one per call).

    Only `conn` is collected: a handler that writes in a transaction of its own, on another connection, writes
    its rows there at once, as everywhere else. Leaving the block unflushed (an error, `ConsumerStopping`: the
    transaction rolls back) drops the rows. Inside the block a handler does not see its own rows in `outbox`, and
    rows enqueued inside a savepoint (a nested `conn.transaction()`) stay collected even when that savepoint
    rolls back: a handler that catches such an error must enqueue outside the savepoint."""
    collected = Collected(conn)
    token = _collected.set(collected)
    try:
        yield collected
    finally:
        collected.open = False
        _collected.reset(token)


class Outbox:
    """The service's outbox: enqueues only what the service declared it produces."""

    def __init__(self, declaration: ServiceDeclaration) -> None:
        self.declaration = declaration

    async def enqueue(self, conn: asyncpg.Connection, env: Envelope[Any], topic: str | None = None) -> None:
        """Adds `env` for `topic` (default: its contract's topic) inside the caller's transaction."""
        await enqueue_many(conn, [(env, self._topic(env, topic))])

    async def enqueue_many(self, conn: asyncpg.Connection, envs: Sequence[Envelope[Any]], topic: str | None = None) -> None:
        """`enqueue` for each of `envs` in order, in one round trip (all for `topic`, or each for its contract's topic)."""
        await enqueue_many(conn, [(env, self._topic(env, topic)) for env in envs])

    def _topic(self, env: Envelope[Any], topic: str | None) -> str:
        topic = topic or SCHEMAS[env.dataschema].topic
        if topic is None:
            raise ValueError(f"{env.type} has no fixed topic; name the partner topic")
        if not self.declaration.may_publish(topic, env):
            raise UndeclaredEvent(f"{self.declaration.service} does not declare {env.type} ({env.dataschema}) on {topic}")
        return topic


# What makes the relay reconnect: the infrastructure's transient failures and any database error.
_RELAY_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncpg.PostgresError)


class OutboxRelay:
    """Publishes the outbox's due rows in id order through `publish`, deletes them once Kafka acknowledged them.

    `publish` hands one record to the producer and returns the future of its acknowledgement
    (aiokafka's `producer.send`: `kafka.broker_producer`); the relay awaits the calls one after the
    other, so the records enter the idempotent producer in id order and keep it per partition, and
    then awaits all acknowledgements together. A `publish` that awaits the acknowledgement itself and
    returns anything else (FastStream's `broker.publish`) also works, at one round trip per row.

    Per-client order survives failures: a drain takes at most one row per topic and key (the client
    id), and none whose key has an earlier row waiting for a retry, so a client's row is handed over
    only after the previous one was acknowledged (issue 15).

    `lotse_outbox_backlog` (rows not yet published) is derived from the drain where that is exact: a
    batch smaller than `batch_size` held every due row, so what is left is the rows waiting for a
    retry, which the relay tracks. Otherwise it is counted, at most every `backlog_count_interval_s`
    (a `count(*)` on every drain cost a round trip and a scan per batch at high rates).

    `linger_s`: after a wake-up the relay waits this long before it drains, so the commits of a burst
    share one drain (one query, one produce request, one delete); each event waits up to that much
    longer. Rows committed one at a time at 200/s (`bench/relay.py --rate 200`): 1.1-1.5 rows per
    drain without, 3-4 with 10 ms, and about 40 % less relay CPU per event. 0 drains at once.
    """

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
        backlog_count_interval_s: float = 5.0,
        linger_s: float = 0.0,
        ack_timeout_s: float = 30.0,
    ) -> None:
        self.service = service
        self.dsn = dsn
        self.schema = schema
        self.publish = publish
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.backlog_count_interval_s = backlog_count_interval_s
        self.linger_s = linger_s
        self.ack_timeout_s = ack_timeout_s
        self.is_leader = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Rows that failed at least once and are not published yet (attempts > 0); None until counted.
        self._waiting: int | None = None
        self._counted_at = -math.inf
        # Rows the last drain held back because an earlier row of their key was in it (drained again at once).
        self.deferred = 0
        self._backlog = metrics.outbox_backlog.labels(service)
        self._failures = metrics.outbox_publish_failures.labels(service)

    @property
    def lock_key(self) -> str:
        return f"lotse-outbox-relay:{self.schema}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}")
        self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        # Readiness shows a relay that ended ("not running"); the log must say why.
        if not self._stopping.is_set():
            exc = None if task.cancelled() else task.exception()
            log.error("outbox relay ended without a stop", exc_info=exc, extra={"cancelled": task.cancelled()})

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
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping.is_set() or (task is not None and task.cancelling()):
                    raise  # `stop` cancels only after setting _stopping
                # A cancellation nobody asked for (a library's timeout handling leaking one while PostgreSQL
                # restarts) must not end the relay like a stop would.
                self.is_leader = False
                failures += 1
                delay = backoff(failures, self.retry_base_s, self.retry_max_s)
                log.error("outbox relay was cancelled without a stop; leading again", exc_info=True, extra={"retry_in_s": round(delay, 2)})
                await self._sleep(delay)
            except Exception as exc:
                # Anything else (e.g. an error of the connection's teardown during a PostgreSQL restart) must not
                # end the relay: a stopped relay leaves every later event in the outbox. Logged loudly, retried.
                self.is_leader = False
                failures += 1
                delay = backoff(failures, self.retry_base_s, self.retry_max_s)
                log.error("outbox relay failed; leading again", exc_info=True, extra={"error": repr(exc), "retry_in_s": round(delay, 2)})
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
            self._waiting = None  # another leader may have left rows waiting for a retry: count afresh
            await conn.add_listener(notify_channel(self.schema), self._on_notify)
            while not self._stopping.is_set():
                # Cleared before the drain, not after: a row committed while the drain runs may miss its
                # snapshot, and its NOTIFY must then bring the next drain at once, not the next poll.
                self._wake.clear()
                published = await self.drain_once(conn)
                if published < self.batch_size and not self.deferred:
                    await self._sleep(self.poll_interval_s)
                    if self.linger_s > 0 and not self._stopping.is_set():
                        # Let the commits of a burst gather, so several rows share one drain: one query, one
                        # produce request, one delete (each costs the relay, PostgreSQL and Kafka per call).
                        await asyncio.sleep(self.linger_s)
        finally:
            self.is_leader = False
            # A connection the server already dropped (PostgreSQL restarting) may fail to close cleanly; it is gone
            # either way, and its error must not replace the one that ended the lead.
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except Exception:
                conn.terminate()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def drain_once(self, conn: asyncpg.Connection) -> int:
        """Publishes one batch of due rows. Returns how many were published."""
        # Per-client order (the key is the client id): a row waits while an earlier row of its topic and key
        # waits for a retry, and a drain hands over only the first due row of each key (below), so a row is
        # never handed to the producer before every earlier row of its key was acknowledged.
        rows = await conn.fetch(
            """SELECT id, event_id, event_type, client_id, topic, key, value, headers, attempts
                 FROM outbox o
                WHERE next_attempt_at <= now()
                  AND NOT EXISTS (SELECT 1 FROM outbox w
                                   WHERE w.attempts > 0 AND w.topic = o.topic AND w.key = o.key AND w.id < o.id
                                     AND w.next_attempt_at > now())
                ORDER BY id LIMIT $1""",
            self.batch_size,
        )
        self.deferred = 0
        if not rows:
            await self._track_backlog(conn, full=False, untried=0)
            return 0
        # Bounded, handing over and acknowledgements together: with Kafka unreachable the producer may wait
        # for metadata or retry for ever, and the rows must then be recorded as failed (retried with backoff,
        # visible in the gauge and logs), not wait silently. A record acknowledged after all is sent again
        # on retry; consumers skip it by event id.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout_s
        acks = await self._send(rows, deadline)
        # Every record is in the producer now; await their acknowledgements together.
        pending = {i: asyncio.ensure_future(a) for i, a in enumerate(acks) if inspect.isawaitable(a)}
        if pending:
            await asyncio.wait(pending.values(), timeout=max(0.0, deadline - loop.time()))
        for i, fut in pending.items():
            if not fut.done():
                fut.add_done_callback(_discard_outcome)
                acks[i] = TimeoutError(f"no acknowledgement from Kafka within {self.ack_timeout_s:g} s")
            else:
                acks[i] = fut.exception() or fut.result()
        done: list[int] = []
        failed: list[tuple[asyncpg.Record, BaseException]] = []
        untried = 0
        published: collections.Counter[tuple[str, str]] = collections.Counter()
        for r, outcome in zip(rows, acks, strict=True):
            if outcome is _UNTRIED:
                untried += 1
            elif isinstance(outcome, BaseException):
                failed.append((r, outcome))
            else:
                done.append(r["id"])
                published[r["topic"], r["event_type"]] += 1
                if r["attempts"] and self._waiting:
                    self._waiting -= 1
        if done:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", done)
        if failed:
            await self._record_failures(conn, failed)
        for (topic, event_type), n in published.items():
            metrics.events_published.labels(self.service, topic, event_type).inc(n)
        if done and log.isEnabledFor(logging.DEBUG):
            log.debug("events published", extra={"count": len(done), "topics": sorted({t for t, _ in published})})
        await self._track_backlog(conn, full=len(rows) == self.batch_size, untried=untried)
        return len(done)

    async def _send(self, rows: list[asyncpg.Record], deadline: float) -> list[Any]:
        """Hands the rows to the producer in id order. Per row: the acknowledgement's awaitable (or the
        acknowledgement itself), the exception `publish` raised, or `_UNTRIED` when an earlier row of
        the same topic could not be handed over (the producer has no metadata for it: the later rows
        would fail alike, one timeout each, and would overtake it) or when an earlier row of the same
        key is in this batch (`deferred`)."""
        acks: list[Any] = []
        blocked: set[str] = set()
        keys: set[tuple[str, bytes]] = set()
        for r in rows:
            topic = r["topic"]
            if topic in blocked:
                acks.append(_UNTRIED)
                continue
            if r["key"] is not None:
                if (topic, r["key"]) in keys:
                    # A later row of a key already in this batch: if the earlier one failed, this one would
                    # overtake it. It goes in the next drain, which follows at once.
                    acks.append(_UNTRIED)
                    self.deferred += 1
                    continue
                keys.add((topic, r["key"]))
            try:
                async with asyncio.timeout_at(deadline):
                    acks.append(await self.publish(topic, r["key"], r["value"], json.loads(r["headers"]), str(r["event_id"])))
            except TimeoutError:
                blocked.add(topic)
                acks.append(TimeoutError(f"Kafka did not take the record within {self.ack_timeout_s:g} s"))
            except Exception as exc:  # whatever the producer raises fails this row, which is retried
                blocked.add(topic)
                acks.append(exc)
        return acks

    async def _record_failures(self, conn: asyncpg.Connection, failed: list[tuple[asyncpg.Record, BaseException]]) -> None:
        ids: list[int] = []
        errors: list[str] = []
        delays: list[float] = []
        for r, exc in failed:
            delay = backoff(r["attempts"] + 1, self.retry_base_s, self.retry_max_s)
            ids.append(r["id"])
            errors.append(repr(exc)[:1000])
            delays.append(delay)
            if not r["attempts"] and self._waiting is not None:
                self._waiting += 1
            with event_context(r["event_id"], r["client_id"]):
                log.warning(
                    "outbox publish failed; will retry",
                    extra={
                        "topic": r["topic"],
                        "type": r["event_type"],
                        "attempt": r["attempts"] + 1,
                        "retry_in_s": round(delay, 2),
                        "error": errors[-1],
                    },
                )
        self._failures.inc(len(failed))
        await conn.execute(
            """UPDATE outbox o SET attempts = o.attempts + 1, last_error = f.error,
                      next_attempt_at = now() + make_interval(secs => f.delay)
                 FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS f(id, error, delay)
                WHERE o.id = f.id""",
            ids,
            errors,
            delays,
        )

    async def _track_backlog(self, conn: asyncpg.Connection, *, full: bool, untried: int) -> None:
        now = time.monotonic()
        if self._waiting is None or now - self._counted_at >= self.backlog_count_interval_s:
            counted = await conn.fetchrow("SELECT count(*) AS total, count(*) FILTER (WHERE attempts > 0) AS waiting FROM outbox")
            assert counted is not None  # an aggregate always returns one row
            self._waiting, self._counted_at = counted["waiting"], now
            self._backlog.set(counted["total"])
        elif not full:
            # The batch held every due row: what is left waits for a retry, or was not tried.
            self._backlog.set(self._waiting + untried)
        # A full batch while the last count is recent: the relay drains on at once; the gauge keeps that count.


def _discard_outcome(fut: asyncio.Future[Any]) -> None:
    # The row was already recorded as failed; a late outcome only must not be reported as never retrieved.
    if not fut.cancelled():
        fut.exception()


# A row `_send` did not hand to the producer; it stays due and is tried in the next drain.
_UNTRIED: Any = object()
