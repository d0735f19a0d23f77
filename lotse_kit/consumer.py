"""Idempotent event consumer with dead-lettering, taking records in batches.

Records come in batches (one `getmany`: whatever is buffered, at most `max_records`). A batch is
applied in one database transaction that stores every event id in `processed_events` and runs the
handlers in delivery order, so a redelivery (crash between DB commit and offset commit) is
recognised and skipped, and per-partition (per-client) order is kept. The offsets are committed
only after that transaction has committed. Under light load a batch is one record; under heavy load
the transaction, the offset commit and the subscription's optional `prepare` (e.g. one request to
another service for the whole batch) are shared by many events.

If anything in a batch fails (a record that does not decode, a handler error, a rejection, the
database), the batch's transaction rolls back and its records are handled one at a time, each in
a transaction of its own, exactly as follows. A record that is undecodable, schema-invalid or of
an unknown type goes to `<topic>.dlq` with headers naming the error and its origin, and the
consumer carries on. Handler failures are retried with backoff; infrastructure failures (database
or network down) are retried until they heal, others are dead-lettered after `max_attempts`. A
handler raises `Rejected` to dead-letter at once, e.g. for an answer from an organisation that may
not give it. Nothing is log-and-acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import asyncpg
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from opentelemetry.trace import Span

from contracts import DecodeError, Envelope, decode

from . import metrics, outbox, tracing
from .declaration import EventHandler, LockBatch, Prepare
from .dlq import DeadLetterWriter
from .kafka import KafkaConnection
from .logging import event_context
from .retry import TRANSIENT_ERRORS, backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """Where the event being handled came from. `topic` is the physical topic name."""

    topic: str
    partition: int
    offset: int


_delivery: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("lotse_delivery", default=None)


def current_delivery() -> Delivery:
    """The record position of the event the current handler runs for.

    Handlers use it where the topic itself carries meaning, e.g. which partner's outbox an answer
    arrived on: ce_source is self-declared, the topic is enforced by Kafka ACLs.
    """
    d = _delivery.get()
    if d is None:
        raise RuntimeError("current_delivery() called outside an event handler")
    return d


_prepared: contextvars.ContextVar[Any] = contextvars.ContextVar("lotse_prepared", default=None)


def prepared() -> Any:
    """What the subscription's `prepare` returned for the batch the current handler runs in; None when the
    subscription has no `prepare`, when it failed, or when the event is handled one at a time (fallback)."""
    return _prepared.get()


class Rejected(Exception):
    """A permanent, business-level refusal: the event is dead-lettered with this reason."""

    kind = "rejected"


class ConsumerStopping(Exception):
    """Raised to leave a record uncommitted while the service shuts down."""


async def parse_batch(records: tuple[ConsumerRecord, ...], original: Any) -> Any:
    """FastStream's batch parser decodes every header of every record as UTF-8 (failing on anything else,
    which would stall the subscription before our handler could dead-letter the record) and copies every
    body; we need neither. Its message is built from a header-less duplicate of the first record, and
    the handler reads the untouched records from `msg.raw_message`."""
    msg = await original((dataclasses.replace(records[0], headers=[]),))
    msg.raw_message = records
    return msg


async def raw_records(msg: Any) -> Any:
    # We decode CloudEvents ourselves; FastStream's JSON decoding would fail before us on poison records.
    return msg.raw_message


async def prune_processed_events(pool: asyncpg.Pool, *, older_than_days: float, batch: int = 5000) -> bool:
    """Deletes one batch of `processed_events` rows older than `older_than_days`; True if more are due.

    A row only has to outlive every way its event could come again: a redelivery from its topic (the
    longest retention of a consumed topic, 30 days) or a replay from the dead-letter topic (30 days).
    The setting's default keeps a margin beyond both; without pruning the table grows by one row per
    event and consumer for ever, and with it the index every batch inserts into."""
    deleted = await pool.fetchval(
        """WITH gone AS (
               DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM processed_events
                    WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2))
               RETURNING 1)
           SELECT count(*) FROM gone""",
        older_than_days * 86400.0,
        batch,
    )
    return bool(deleted and deleted >= batch)


@dataclass
class DeadLetter:
    kind: str
    reason: str


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        name: str,
        pool_getter: Callable[[], asyncpg.Pool],
        bootstrap: str | KafkaConnection,
        handlers: Mapping[str, EventHandler],
        deps: Any = None,
        topics: Iterable[str] = (),
        pattern: str | None = None,
        max_attempts: int = 5,
        retry_base_s: float = 0.2,
        retry_max_s: float = 30.0,
        auto_offset_reset: Literal["latest", "earliest", "none"] = "earliest",
        dead_letters: DeadLetterWriter | None = None,
        stall_after_s: float = 60.0,
        prepare: Prepare | None = None,
        lock: LockBatch | None = None,
        max_records: int = 100,
        batch_timeout_ms: int = 10,
        fetch_wait_ms: int = 20,
        collect_outbox: bool = True,
    ) -> None:
        if not topics and not pattern:
            raise ValueError("a consumer needs topics or a pattern")
        self.service = service
        self.name = name  # also the consumer group id
        self.pool_getter = pool_getter
        self.bootstrap = bootstrap
        self.dead_letters = dead_letters or DeadLetterWriter(bootstrap, service=service)
        self.stall_after_s = stall_after_s
        self._progress: dict[tuple[str, int], tuple[int | None, float]] = {}  # last offset done, when
        self._inflight: dict[tuple[str, int], int] = {}
        # Per partition: when health() first saw records waiting (lag above zero) since it last saw none.
        self._waiting_since: dict[tuple[str, int], float] = {}
        self.handlers = dict(handlers)
        self.deps = deps
        self.topics = list(topics)
        self.pattern = pattern
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.auto_offset_reset = auto_offset_reset
        self.prepare = prepare
        self.lock = lock
        self.max_records = max_records
        self.batch_timeout_ms = batch_timeout_ms
        self.fetch_wait_ms = fetch_wait_ms
        # The outbox rows of a batch's handlers are written in one statement before it commits (outbox.collecting);
        # False writes each enqueue at once (bench/consumer_batch.py compares the two).
        self.collect_outbox = collect_outbox
        self.batches = 0  # transactions of more than one event that committed (diagnostics, tests)
        self.fallbacks = 0  # batches handled one at a time after a failure
        self.stopping = False
        self.subscriber: Any = None
        self._broker: KafkaBroker | None = None

    @property
    def group_id(self) -> str:
        return self.name

    def register(self, broker: KafkaBroker) -> None:
        self._broker = broker
        self.subscriber = broker.subscriber(
            *self.topics,
            pattern=self.pattern,
            group_id=self.group_id,
            # Success commits the consumer's position, i.e. past the whole batch; a failure (only
            # ConsumerStopping gets out) seeks back to each partition's first record of the batch.
            ack_policy=AckPolicy.NACK_ON_ERROR,
            auto_offset_reset=self.auto_offset_reset,
            batch=True,
            max_records=self.max_records,
            batch_timeout_ms=self.batch_timeout_ms,
            # Fetches gather records for up to fetch_wait_ms instead of one fetch per arriving record (see settings).
            fetch_max_wait_ms=self.fetch_wait_ms,
            fetch_min_bytes=64 * 1024 if self.fetch_wait_ms else 1,
            parser=parse_batch,
            decoder=raw_records,
            max_poll_interval_ms=10 * 60 * 1000,
        )
        self.subscriber(self._on_batch)

    @property
    def running(self) -> bool:
        return bool(self.subscriber is not None and getattr(self.subscriber, "running", False))

    async def _on_batch(self, body: Any, msg: KafkaMessage) -> None:
        records: list[ConsumerRecord] = list(msg.raw_message)
        if records:
            await self.handle_batch(records)

    async def handle_batch(self, records: list[ConsumerRecord]) -> None:
        """Applies `records` (one poll, in delivery order) in one transaction; on any failure, one at a time."""
        if self.stopping:
            raise ConsumerStopping("shutting down before the batch was processed")
        work: list[tuple[ConsumerRecord, Envelope[Any], EventHandler]] = []
        ignored: list[tuple[ConsumerRecord, Envelope[Any]]] = []
        for record in records:
            try:
                env = decode(record.headers or [], record.value)
            except Exception:  # dead-lettered with its reason by the one-at-a-time path
                await self._one_at_a_time(records)
                return
            handler = self.handlers.get(env.type)
            if handler is None:
                ignored.append((record, env))
            else:
                work.append((record, env, handler))
        for record in records:
            self._inflight.setdefault((record.topic, record.partition), record.offset)
        try:
            outcomes = await self._apply_batch(work) if work else []
        except ConsumerStopping:
            raise
        except Exception as exc:
            # Rolled back as a whole: find and treat the failing event on its own, with retries and dead-lettering.
            self.fallbacks += 1
            log.info(
                "batch failed; handling its records one at a time",
                extra={"records": len(records), "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            await self._one_at_a_time(records)
            return
        if len(work) > 1:
            self.batches += 1
        for (record, env, _), (outcome, seconds) in zip(work, outcomes, strict=True):
            metrics.events_consumed.labels(self.service, self.name, record.topic, env.type, outcome).inc()
            metrics.handler_seconds.labels(self.service, self.name, env.type).observe(seconds)
            with event_context(env.id, env.subject):
                log.info(
                    "event processed" if outcome == "applied" else "duplicate event skipped",
                    extra={"type": env.type, "topic": record.topic},
                )
        for record, env in ignored:
            # A known event this consumer does not act on: tolerant readers skip it.
            metrics.events_consumed.labels(self.service, self.name, record.topic, env.type, "ignored").inc()
        self._done(records)

    async def _apply_batch(self, work: list[tuple[ConsumerRecord, Envelope[Any], EventHandler]]) -> list[tuple[str, float]]:
        # A span for the batch; each handler call gets one of its own, a child of its event's traceparent linked to it.
        with tracing.batch(self.service, self.name, [env for _, env, _ in work]) as batch_span:
            return await self._apply_batch_traced(work, batch_span)

    async def _apply_batch_traced(
        self, work: list[tuple[ConsumerRecord, Envelope[Any], EventHandler]], batch_span: Span | None
    ) -> list[tuple[str, float]]:
        prep = None
        if self.prepare is not None:
            try:
                prep = await self.prepare([env for _, env, _ in work], self.deps)
            except Exception as exc:  # only an optimisation: the handlers fetch for themselves
                log.warning("prepare failed; the handlers work without it", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        outcomes: list[tuple[str, float]] = []
        prepared_token = _prepared.set(prep)
        try:
            pool = self.pool_getter()
            async with pool.acquire() as conn, conn.transaction():
                # The pool hands out a proxy that behaves as the connection it wraps; the handlers get this object.
                tx = cast(asyncpg.Connection, conn)
                fresh = {
                    row["event_id"]
                    for row in await conn.fetch(
                        """INSERT INTO processed_events (consumer, event_id, event_type, topic, "partition", "offset")
                           SELECT $1, e.* FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[]) AS e
                           ON CONFLICT DO NOTHING RETURNING event_id""",
                        self.name,
                        [env.id for _, env, _ in work],
                        [env.type for _, env, _ in work],
                        [r.topic for r, _, _ in work],
                        [r.partition for r, _, _ in work],
                        [r.offset for r, _, _ in work],
                    )
                }
                if self.lock is not None and len(fresh) > 1:
                    # The rows this batch's handlers will lock, locked first in one order (declaration.LockBatch).
                    await self.lock([env for _, env, _ in work if uuid.UUID(str(env.id)) in fresh], tx, self.deps)
                with outbox.collecting(tx) if self.collect_outbox else contextlib.nullcontext() as collected:
                    for record, env, handler in work:
                        await self._apply_one(record, env, handler, tx, fresh, outcomes, batch_span)
                    # The handlers' outbox rows, in the order they enqueued them, as the transaction's last statement.
                    if collected is not None:
                        await collected.flush()
        finally:
            _prepared.reset(prepared_token)
        return outcomes

    async def _apply_one(
        self,
        record: ConsumerRecord,
        env: Envelope[Any],
        handler: EventHandler,
        conn: asyncpg.Connection,
        fresh: set[uuid.UUID],
        outcomes: list[tuple[str, float]],
        batch_span: Span | None,
    ) -> None:
        if self.stopping:
            raise ConsumerStopping("shutting down in the middle of a batch; it is rolled back")
        event_id = uuid.UUID(str(env.id))
        if event_id not in fresh:  # applied before, or earlier in this very batch
            outcomes.append(("duplicate", 0.0))
            return
        fresh.discard(event_id)
        started = time.perf_counter()
        token = _delivery.set(Delivery(record.topic, record.partition, record.offset))
        try:
            with (
                event_context(env.id, env.subject),
                tracing.consuming(self.service, self.name, env, record.topic, record.partition, record.offset, batch_span),
            ):
                await handler(env, conn, self.deps)
        finally:
            _delivery.reset(token)
        outcomes.append(("applied", time.perf_counter() - started))

    async def _one_at_a_time(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            await self._on_record(record)

    async def _on_record(self, record: ConsumerRecord) -> None:
        tp = (record.topic, record.partition)
        self._inflight[tp] = record.offset
        try:
            await self._handle_record(record)
        except ConsumerStopping:
            raise  # left uncommitted on purpose: redelivered after the restart
        except Exception as exc:
            log.error(
                "unexpected failure around a record; dead-lettering",
                exc_info=True,
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
            )
            await self.dead_letter(record, "consumer-failed", f"{type(exc).__name__}: {exc}")
        self._done([record])

    def _done(self, records: list[ConsumerRecord]) -> None:
        now = time.monotonic()
        for record in records:
            tp = (record.topic, record.partition)
            self._inflight.pop(tp, None)
            self._progress[tp] = (record.offset, now)

    async def _handle_record(self, record: ConsumerRecord) -> None:
        try:
            env = decode(record.headers or [], record.value)
        except DecodeError as exc:
            await self.dead_letter(record, exc.kind, exc.reason)
            return
        except Exception as exc:
            await self.dead_letter(record, DecodeError.UNDECODABLE, f"decoder failed: {type(exc).__name__}: {exc}")
            return
        handler = self.handlers.get(env.type)
        if handler is None:
            # A known event this consumer does not act on: tolerant readers skip it.
            metrics.events_consumed.labels(self.service, self.name, record.topic, env.type, "ignored").inc()
            return
        token = _delivery.set(Delivery(record.topic, record.partition, record.offset))
        try:
            with (
                event_context(env.id, env.subject),
                tracing.consuming(self.service, self.name, env, record.topic, record.partition, record.offset) as span,
            ):
                outcome = await self._process(record, env, handler)
                if span is not None:
                    span.set_attribute(tracing.ATTR_OUTCOME, outcome)
        finally:
            _delivery.reset(token)

    async def health(self) -> str:
        """ "up", or "down: <why>", naming every partition with records waiting (lag above zero) on which this
        consumer has not made progress for `stall_after_s` seconds.

        The time counts from the later of the partition's last progress and the moment records were first seen
        waiting on it: a partition that was idle for an hour is not stalled the moment records arrive."""
        if not self.running:
            return "down: not running"
        kafka = getattr(self.subscriber, "consumer", None)
        if kafka is None:
            return "up"
        now = time.monotonic()
        stalled = []
        assigned = {(tp.topic, tp.partition): tp for tp in kafka.assignment()}
        for key in self._waiting_since.keys() - assigned.keys():
            del self._waiting_since[key]  # revoked: if it comes back, its waiting starts afresh
        for key in sorted(assigned):
            tp = assigned[key]
            high = kafka.highwater(tp)
            if high is None:
                continue  # nothing fetched yet: no lag known
            position = self._inflight.get(key)
            if position is None:
                try:
                    position = await asyncio.wait_for(kafka.position(tp), timeout=1.0)
                except Exception:
                    continue
            lag = high - position
            if lag <= 0:
                self._waiting_since.pop(key, None)
                continue
            since = self._waiting_since.setdefault(key, now)
            last = self._progress.get(key)
            if last is not None:
                since = max(since, last[1])
            if now - since > self.stall_after_s:
                stalled.append(f"{tp.topic}[{tp.partition}] at offset {position} (lag {lag}, no progress for {now - since:.0f} s)")
        return "down: stalled on " + "; ".join(stalled) if stalled else "up"

    async def _process(self, record: ConsumerRecord, env: Envelope[Any], handler: EventHandler) -> str:
        """Applies the event with retries; returns the outcome: applied, duplicate or dead-lettered."""
        attempt = 0
        started = time.perf_counter()
        while True:
            if self.stopping:
                raise ConsumerStopping("shutting down before the event was processed")
            attempt += 1
            try:
                outcome = await self._apply(record, env, handler)
            except Rejected as exc:
                log.warning("event rejected", extra={"type": env.type, "reason": str(exc)})
                await self.dead_letter(record, exc.kind, str(exc), env=env)
                await self._remember(record, env)
                return "dead-lettered"
            except TRANSIENT_ERRORS as exc:
                delay = self._delay(attempt)
                log.warning(
                    "transient failure; retrying",
                    extra={"type": env.type, "attempt": attempt, "retry_in_s": round(delay, 2), "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # a handler bug or an unexpected state: retry, then dead-letter
                if attempt >= self.max_attempts:
                    log.error("handler failed; dead-lettering", extra={"type": env.type, "attempts": attempt}, exc_info=True)
                    await self.dead_letter(record, "handler-failed", f"{type(exc).__name__}: {exc}", env=env)
                    await self._remember(record, env)
                    return "dead-lettered"
                delay = self._delay(attempt)
                log.warning(
                    "handler failed; retrying",
                    extra={"type": env.type, "attempt": attempt, "retry_in_s": round(delay, 2), "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                continue
            metrics.events_consumed.labels(self.service, self.name, record.topic, env.type, outcome).inc()
            metrics.handler_seconds.labels(self.service, self.name, env.type).observe(time.perf_counter() - started)
            log.info(
                "event processed" if outcome == "applied" else "duplicate event skipped", extra={"type": env.type, "topic": record.topic}
            )
            return outcome

    async def _apply(self, record: ConsumerRecord, env: Envelope[Any], handler: EventHandler) -> str:
        pool = self.pool_getter()
        async with pool.acquire() as conn, conn.transaction():
            first_time = await conn.fetchval(
                """INSERT INTO processed_events (consumer, event_id, event_type, topic, "partition", "offset")
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true""",
                self.name,
                env.id,
                env.type,
                record.topic,
                record.partition,
                record.offset,
            )
            if not first_time:
                return "duplicate"
            # The pool hands out a proxy that behaves as the connection it wraps.
            await handler(env, cast(asyncpg.Connection, conn), self.deps)
        return "applied"

    async def _remember(self, record: ConsumerRecord, env: Envelope[Any]) -> None:
        """Marks a dead-lettered event as processed so that a redelivery is not dead-lettered twice."""
        try:
            async with self.pool_getter().acquire() as conn:
                await conn.execute(
                    """INSERT INTO processed_events (consumer, event_id, event_type, topic, "partition", "offset")
                       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                    self.name,
                    env.id,
                    env.type,
                    record.topic,
                    record.partition,
                    record.offset,
                )
        except TRANSIENT_ERRORS as exc:
            # The record is already in the DLQ; at worst a redelivery dead-letters it a second time.
            log.warning("could not mark dead-lettered event as processed", extra={"error": repr(exc)})

    def _delay(self, attempt: int) -> float:
        return backoff(attempt, self.retry_base_s, self.retry_max_s)

    async def dead_letter(self, record: ConsumerRecord, kind: str, reason: str, env: Envelope[Any] | None = None) -> None:
        """Moves the record unchanged to `<topic>.dlq` with the reason (a reference record if the copy is too large).

        If Kafka refuses even that (the broker is away), retries with backoff, one log line per attempt with
        its count; the offset stays where it is until the reason is on the DLQ, or the service stops."""
        attempt = 0
        while True:
            attempt += 1
            try:
                full = await self.dead_letters.write(record, kind=kind, reason=reason, consumer=self.name)
                break
            except Exception as exc:
                if self.stopping:
                    raise ConsumerStopping("shutting down before the record was dead-lettered") from exc
                delay = self._delay(attempt)
                log.warning(
                    "dead-lettering failed; retrying",
                    extra={
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "attempt": attempt,
                        "retry_in_s": round(delay, 2),
                        "error": repr(exc),
                    },
                )
                await asyncio.sleep(delay)
        metrics.events_dead_lettered.labels(self.service, self.name, record.topic, kind if full else f"{kind}:reference").inc()
        headers = {k: bytes(v).decode("utf-8", errors="replace") for k, v in (record.headers or [])}
        with event_context(env.id if env else headers.get("ce_id"), env.subject if env else headers.get("ce_subject")):
            log.warning(
                "record dead-lettered" if full else "record dead-lettered as a reference (too large to copy)",
                extra={"kind": kind, "reason": reason[:500], "topic": record.topic, "partition": record.partition, "offset": record.offset},
            )
