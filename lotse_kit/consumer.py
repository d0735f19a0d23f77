"""Idempotent event consumer with dead-lettering.

For every record: decode the CloudEvent; a record that is undecodable,
schema-invalid or of an unknown type goes to `<topic>.dlq` with headers naming
the error and its origin, and the consumer carries on. A valid event runs its
handler inside one database transaction that also stores the event id, so a
redelivery (crash between DB commit and offset commit) is recognised and
skipped. The offset is committed only after that transaction has committed.

Handler failures are retried with backoff; infrastructure failures (database or
network down) are retried until they heal, others are dead-lettered after
`max_attempts`. A handler raises `Rejected` to dead-letter at once, e.g. for an
answer from an organisation that may not give it. Nothing is log-and-acked.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import asyncpg
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from contracts import DecodeError, Envelope, decode
from contracts.topics import dlq, dlq_spec

from . import metrics
from .declaration import EventHandler
from .kafka import ensure_topics
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


class Rejected(Exception):
    """A permanent, business-level refusal: the event is dead-lettered with this reason."""

    kind = "rejected"


class ConsumerStopping(Exception):
    """Raised to leave a record uncommitted while the service shuts down."""


async def _tolerant_parse(record: ConsumerRecord, original: Any) -> Any:
    """FastStream's parser decodes every header as UTF-8 and fails on anything else, before our
    handler could dead-letter the record: the subscription would stall on it. FastStream gets a
    header-less copy; the handler reads the untouched record from `msg.raw_message`."""
    msg = await original(dataclasses.replace(record, headers=[]))
    msg.raw_message = record
    return msg


async def _raw_body(msg: Any) -> bytes:
    # We decode CloudEvents ourselves; FastStream's JSON decoding would fail before us on poison records.
    body: bytes = msg.body
    return body


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
        bootstrap: str,
        handlers: Mapping[str, EventHandler],
        deps: Any = None,
        topics: Iterable[str] = (),
        pattern: str | None = None,
        max_attempts: int = 5,
        retry_base_s: float = 0.2,
        retry_max_s: float = 30.0,
        auto_offset_reset: Literal["latest", "earliest", "none"] = "earliest",
    ) -> None:
        if not topics and not pattern:
            raise ValueError("a consumer needs topics or a pattern")
        self.service = service
        self.name = name  # also the consumer group id
        self.pool_getter = pool_getter
        self.bootstrap = bootstrap
        self._dlq_ready: set[str] = set()
        self.handlers = dict(handlers)
        self.deps = deps
        self.topics = list(topics)
        self.pattern = pattern
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.auto_offset_reset = auto_offset_reset
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
            ack_policy=AckPolicy.NACK_ON_ERROR,
            auto_offset_reset=self.auto_offset_reset,
            parser=_tolerant_parse,
            decoder=_raw_body,
            max_poll_interval_ms=10 * 60 * 1000,
        )
        self.subscriber(self._on_message)

    @property
    def running(self) -> bool:
        return bool(self.subscriber is not None and getattr(self.subscriber, "running", False))

    async def _on_message(self, body: bytes, msg: KafkaMessage) -> None:
        record: ConsumerRecord = msg.raw_message
        try:
            env = decode(record.headers or [], record.value)
        except DecodeError as exc:
            await self.dead_letter(record, exc.kind, exc.reason)
            return
        handler = self.handlers.get(env.type)
        if handler is None:
            # A known event this consumer does not act on: tolerant readers skip it.
            metrics.events_consumed.labels(self.service, self.name, record.topic, env.type, "ignored").inc()
            return
        token = _delivery.set(Delivery(record.topic, record.partition, record.offset))
        try:
            with event_context(env.id, env.subject):
                await self._process(record, env, handler)
        finally:
            _delivery.reset(token)

    async def _process(self, record: ConsumerRecord, env: Envelope[Any], handler: EventHandler) -> None:
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
                return
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
                    return
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
            return

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
        """Publishes the record unchanged to `<topic>.dlq` with the reason; raises if Kafka refuses, so it is retried."""
        assert self._broker is not None
        headers = {k: v.decode("utf-8", errors="replace") for k, v in (record.headers or [])}
        headers.update(
            {
                "lotse_dlq_error_kind": kind,
                "lotse_dlq_reason": reason[:2000],
                "lotse_dlq_original_topic": record.topic,
                "lotse_dlq_original_partition": str(record.partition),
                "lotse_dlq_original_offset": str(record.offset),
                "lotse_dlq_consumer": self.name,
                "lotse_dlq_service": self.service,
                "lotse_dlq_failed_at": datetime.now(UTC).isoformat(),
            }
        )
        target = dlq(record.topic)
        if target not in self._dlq_ready:
            # Pattern subscriptions meet topics created after start; their DLQ may not exist yet.
            await ensure_topics(self.bootstrap, [dlq_spec(record.topic)], client_id=f"lotse-{self.service}")
            self._dlq_ready.add(target)
        await self._broker.publish(record.value or b"", topic=target, key=record.key, headers=headers)
        metrics.events_dead_lettered.labels(self.service, self.name, record.topic, kind).inc()
        with event_context(env.id if env else headers.get("ce_id"), env.subject if env else headers.get("ce_subject")):
            log.warning(
                "record dead-lettered",
                extra={"kind": kind, "reason": reason[:500], "topic": record.topic, "partition": record.partition, "offset": record.offset},
            )
