"""One service's lifecycle: database, broker, outbox relay, consumers, background workers, readiness.

A service's `bootstrap` builds a `Runtime` from its `ServiceDeclaration`, hands the parts its
handlers need (`runtime.db`, `runtime.outbox`, `runtime.topic_admin`, the `Naming`) to its `Deps`,
calls `runtime.subscribe(deps)`, adds its workers, and gives the runtime to `http.create_app`, whose
lifespan starts and stops it. Entrypoints and adapters never receive the runtime itself.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from contracts.topics import TopicSpec, dlq_spec, platform_topics

from . import db, tracing
from .consumer import EventConsumer, prune_processed_events
from .declaration import ServiceDeclaration
from .dlq import DeadLetterWriter
from .kafka import TopicAdmin, broker_producer, ensure_topics, make_broker
from .naming import Naming
from .outbox import Outbox, OutboxRelay
from .settings import KitSettings
from .workers import Worker, periodic

log = logging.getLogger(__name__)

Check = Callable[[], str]  # a readiness check: "up", "up: <warning>" or "down: <reason>"

# Young-generation size of a service process: see tune_gc_for_batches.
GC_GEN0_THRESHOLD = 50_000
_gc_frozen = False


def tune_gc_for_batches() -> None:
    """Sets up the cyclic garbage collector for a process that handles records by the batch.

    A batch allocates tens of container objects per record (aiokafka's records and their headers,
    envelopes, rows), nearly all acyclic and freed by reference counting when the batch is done.
    With the default young generation (700 allocations) the collector runs many times per batch
    while the batch is still alive, promotes it, and the promoted batches then trigger full passes
    over the whole heap: a quarter of the audit ingest's CPU (bench/audit_ingest.py). So what start-up
    built is frozen, once per process (a test process starting many services must not keep freezing
    its garbage), and the young generation is collected every GC_GEN0_THRESHOLD allocations (about
    once per large batch; a few MB more at most). A larger threshold already set is left alone."""
    global _gc_frozen
    if not _gc_frozen:
        gc.freeze()
        _gc_frozen = True
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < GC_GEN0_THRESHOLD:
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


class Runtime:
    def __init__(
        self,
        declaration: ServiceDeclaration,
        settings: KitSettings,
        *,
        migrations_dir: Path | None = None,
        schema: str | None = None,
        role: str | None = None,
        extra_topics: list[TopicSpec] | None = None,
    ) -> None:
        self.declaration = declaration
        self.service = declaration.service
        self.settings = settings
        schema = db.ident(schema or self.service.replace("-", "_"))
        role = db.ident(role or f"lotse_{schema}")
        self.naming = Naming(settings.topic_namespace, schema)
        migrations = db.load_migrations("kit", db.KIT_MIGRATIONS)
        if migrations_dir:
            migrations += db.load_migrations(self.service, migrations_dir)
        self.db = db.Database(
            settings.database_url,
            service=self.service,
            schema=schema,
            role=role,
            password=settings.db_role_password.get_secret_value(),
            migrations=migrations,
        )
        self.kafka = settings.kafka()  # this service's own principal
        self.broker = make_broker(
            self.kafka,
            self.service,
            metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
            produces=bool(declaration.publications),
        )
        self.topic_admin = TopicAdmin(self.kafka, self.naming, client_id=f"lotse-{self.service}", create=settings.kafka_create_topics)
        self.outbox = Outbox(declaration)
        self.dead_letters = DeadLetterWriter(self.kafka, service=self.service, create_topics=settings.kafka_create_topics)
        self.extra_topics = list(extra_topics or [])
        self.consumers: list[EventConsumer] = []
        self._workers: list[tuple[str, Worker]] = []
        self._checks: dict[str, Check] = {}
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.relay: OutboxRelay | None = None
        self.started = False
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------ wiring
    def subscribe(self, deps: Any) -> None:
        """Registers a consumer for every declared (non-custom) subscription; handlers get `deps`."""
        if self.started:
            raise RuntimeError("subscriptions must be made before start()")
        for sub in self.declaration.subscriptions:
            if sub.custom:
                continue
            consumer = EventConsumer(
                service=self.service,
                name=self.naming.consumer_group(sub.name),
                pool_getter=lambda: self.db.pool,
                bootstrap=self.kafka,
                handlers=sub.handlers,
                deps=deps,
                topics=[self.naming.topic(t) for t in sub.topics],
                pattern=self.naming.topic_pattern(sub.pattern) if sub.pattern else None,
                max_attempts=self.settings.consumer_max_attempts,
                stall_after_s=self.settings.consumer_stall_after_s,
                dead_letters=self.dead_letters,
                retry_base_s=self.settings.consumer_retry_base_s,
                retry_max_s=self.settings.consumer_retry_max_s,
                prepare=sub.prepare,
                lock=sub.lock,
                max_records=self.settings.consumer_max_records,
                batch_timeout_ms=self.settings.consumer_batch_timeout_ms,
                fetch_wait_ms=self.settings.consumer_background_fetch_wait_ms if sub.background else self.settings.consumer_fetch_wait_ms,
            )
            consumer.register(self.broker)
            self.consumers.append(consumer)
        if self.consumers:
            days = self.settings.processed_events_retention_days
            self.add_worker(
                "processed-events-pruning",
                periodic(
                    "processed-events-pruning",
                    lambda: prune_processed_events(self.db.pool, older_than_days=days),
                    interval_s=self.settings.processed_events_prune_interval_s,
                ),
            )

    def add_worker(self, name: str, worker: Worker) -> None:
        """A long-running coroutine given the stopping event; a `health()` method, if any, feeds readiness."""
        self._workers.append((name, worker))
        health = getattr(worker, "health", None)
        if callable(health):
            self._checks[f"worker:{name}"] = health

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Runs at shutdown, after consumers and workers stopped (e.g. closing an HTTP client)."""
        self._on_stop.append(callback)

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str], event_id: str) -> Any:
        """Hands one record for a logical topic to the broker's producer; returns the future of Kafka's
        acknowledgement (the outbox relay hands over a batch in id order, then awaits the acknowledgements)."""
        return await broker_producer(self.broker).send(
            self.naming.topic(topic), value=value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
        )

    def _topic_specs(self) -> list[TopicSpec]:
        known = {t.name: t for t in platform_topics()}
        specs = [known.get(t, TopicSpec(t)) for t in self.declaration.own_topics()] + self.extra_topics
        physical = [self.naming.spec(s) for s in specs]
        for c in self.consumers:  # consumer topics are physical names already
            physical += [dlq_spec(t) for t in c.topics]
        return physical

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        tune_gc_for_batches()
        tracing.setup_from_env(self.service)  # OTLP export if the OTEL_* environment asks for it (once per process)
        await self.db.start()
        await ensure_topics(
            self.kafka,
            self._topic_specs(),
            client_id=f"lotse-{self.service}",
            create=s.kafka_create_topics,
            replication_factor=s.kafka_replication_factor,
        )
        await self.broker.start()
        self.relay = OutboxRelay(
            service=self.service,
            dsn=self.db.dsn,
            schema=self.db.schema,
            publish=self.publish,
            poll_interval_s=s.outbox_poll_interval_s,
            batch_size=s.outbox_batch_size,
            retry_base_s=s.outbox_retry_base_s,
            retry_max_s=s.outbox_retry_max_s,
            linger_s=s.outbox_linger_ms / 1000,
            ack_timeout_s=s.outbox_ack_timeout_s,
        )
        self.relay.start()
        self._tasks = [asyncio.create_task(self._run_worker(n, w), name=f"{self.service}-worker-{n}") for n, w in self._workers]
        self.started = True
        log.info("service started", extra={"consumers": [c.name for c in self.consumers], "workers": [n for n, _ in self._workers]})

    async def _run_worker(self, name: str, worker: Worker) -> None:
        try:
            await worker(self.stopping)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical("worker crashed", extra={"worker": name}, exc_info=True)
            raise

    async def stop(self) -> None:
        """Graceful: stop taking new records, let in-flight handlers commit, then close.

        The relay stops before the broker: its in-flight batch needs the producer, and a publish
        whose producer was stopped underneath it never completed (seen as a hung shutdown in CI).
        Every step is bounded by `shutdown_step_timeout_s`; whatever is cut short stays durable
        (outbox rows, uncommitted offsets) and is redone after the restart."""
        limit = self.settings.shutdown_step_timeout_s
        self.stopping.set()
        for c in self.consumers:
            c.stopping = True
        if self.relay:
            await self.relay.stop(timeout_s=limit)
        await self._bounded("stopping the broker", self.broker.stop(), limit)
        await self._bounded("stopping the dead-letter producer", self.dead_letters.stop(), limit)
        # Workers see `stopping` and return; give them the same bound, then cancel what is left.
        if self._tasks:
            await self._bounded("stopping the workers", asyncio.gather(*self._tasks, return_exceptions=True), limit)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for callback in reversed(self._on_stop):
            try:
                await callback()
            except Exception:  # one failing hook must not keep the others from running
                log.warning("shutdown hook failed", exc_info=True)
        await self.db.close(limit)
        await tracing.flush(limit)
        self.started = False
        log.info("service stopped")

    @staticmethod
    async def _bounded(step: str, aw: Any, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(aw, timeout=timeout_s)
            return True
        except TimeoutError:
            log.error("shutdown step timed out; continuing", extra={"step": step, "timeout_s": timeout_s})
            return False

    async def readiness(self) -> dict[str, Any]:
        """Each component and whether it answers; the service is ready when none is down."""
        timeout = self.settings.readiness_timeout_s
        checks: dict[str, Any] = {}
        try:
            await self.db.ping(timeout)
            checks["postgres"] = "up"
        except Exception as exc:  # any failure means not ready
            checks["postgres"] = f"down: {type(exc).__name__}"
        try:
            ok = await self.broker.ping(timeout=timeout)
            checks["kafka"] = "up" if ok else "down: no answer"
        except Exception as exc:  # any failure means not ready
            checks["kafka"] = f"down: {type(exc).__name__}"
        for c in self.consumers:
            checks[f"consumer:{c.name}"] = await c.health()
        checks["outbox-relay"] = "up" if self.relay and self.relay.running else "down: not running"
        for t in self._tasks:
            if t.done():
                checks[f"task:{t.get_name()}"] = "down: stopped"
        for name, check in self._checks.items():
            checks[name] = check()
        return checks


def check_adapters(given: dict[str, Any], known: frozenset[str] | set[str], *, service: str) -> None:
    """A service's `bootstrap(**adapters)` accepts only the adapters it knows: a typo must not pass silently."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"{service} bootstrap() got unknown adapters {unknown}; known: {sorted(known)}")
