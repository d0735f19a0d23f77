"""One service's wiring: database, broker, outbox relay, consumers, background workers.

Services build a `Runtime` in their `bootstrap`, register consumers and workers,
and hand it to `http.create_app`, whose lifespan starts and stops it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from contracts.topics import TopicSpec, dlq_spec, platform_topics

from . import db
from .consumer import EventConsumer, Handler
from .kafka import ensure_topics, make_broker
from .outbox import OutboxRelay
from .settings import KitSettings

log = logging.getLogger(__name__)

Worker = Callable[["Runtime"], Awaitable[None]]


@dataclass
class Runtime:
    service: str
    settings: KitSettings
    migrations_dir: Path | None = None
    schema: str | None = None  # defaults to the service name
    role: str | None = None  # defaults to lotse_<schema>
    topics: list[TopicSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.schema = db.ident(self.schema or self.service.replace("-", "_"))
        self.role = db.ident(self.role or f"lotse_{self.schema}")
        self.broker = make_broker(self.settings.kafka_bootstrap, self.service, metadata_max_age_ms=self.settings.kafka_metadata_max_age_ms)
        self.consumers: list[EventConsumer] = []
        self._workers: list[Worker] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: asyncpg.Pool | None = None
        self.relay: OutboxRelay | None = None
        self.started = False
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------ wiring
    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.service}: database pool used before start()")
        return self._pool

    @property
    def dsn(self) -> str:
        return db.service_dsn(self.settings.database_url, self.role, self.settings.db_role_password.get_secret_value())

    def migrations(self) -> list[db.Migration]:
        ms = db.load_migrations("kit", db.KIT_MIGRATIONS)
        if self.migrations_dir:
            ms += db.load_migrations(self.service, self.migrations_dir)
        return ms

    def topic(self, logical: str) -> str:
        """The physical name of a contract topic in this deployment's namespace."""
        return self.settings.topic_namespace + logical

    def topic_pattern(self, logical_regex: str) -> str:
        """Anchored at both ends, so `partner\\..*\\.outbox\\.v1` does not also match its own `.dlq`."""
        body = logical_regex.removeprefix("^").removesuffix("$")
        return "^" + re.escape(self.settings.topic_namespace) + f"(?:{body})$"

    def consumer_group(self, name: str) -> str:
        """Consumer group (and inbox) name: one per service schema, so test instances never share a group."""
        return f"{self.settings.topic_namespace}lotse-{self.schema}-{name}"

    def add_consumer(self, name: str, handlers: dict[str, Handler], *, topics: Iterable[str] = (), pattern: str | None = None) -> EventConsumer:
        """Subscribes `handlers` to contract topics (logical names) or a regex over logical names."""
        if self.started:
            raise RuntimeError("consumers must be added before start()")
        consumer = EventConsumer(
            service=self.service,
            name=self.consumer_group(name),
            pool_getter=lambda: self.pool,
            bootstrap=self.settings.kafka_bootstrap,
            handlers=handlers,
            topics=[self.topic(t) for t in topics],
            pattern=self.topic_pattern(pattern) if pattern else None,
            max_attempts=self.settings.consumer_max_attempts,
            retry_base_s=self.settings.consumer_retry_base_s,
            retry_max_s=self.settings.consumer_retry_max_s,
        )
        consumer.register(self.broker)
        self.consumers.append(consumer)
        return consumer

    def add_worker(self, worker: Worker) -> None:
        """A long-running coroutine (a scheduler, an expiry job); it should return when `stopping` is set."""
        self._workers.append(worker)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Runs at shutdown, after consumers and workers stopped (e.g. closing an HTTP client)."""
        self._on_stop.append(callback)

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str], event_id: str) -> Any:
        """Publishes to a logical topic; the outbox relay calls this for every row."""
        return await self.broker.publish(value, topic=self.topic(topic), key=key, headers=headers, correlation_id=event_id)

    async def ensure_topics(self, specs: Iterable[TopicSpec]) -> list[str]:
        physical = [TopicSpec(self.topic(s.name), s.partitions, s.config) for s in specs]
        return await ensure_topics(self.settings.kafka_bootstrap, physical, client_id=f"lotse-{self.service}")

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        await db.provision(s.database_url, schema=self.schema, role=self.role, password=s.db_role_password.get_secret_value(), migrations=self.migrations())
        self._pool = await db.create_pool(self.dsn, schema=self.schema, application_name=f"lotse-{self.service}")
        physical = [TopicSpec(self.topic(t.name), t.partitions, t.config) for t in self.topics]
        known = {self.topic(t.name): t for t in platform_topics()}
        for c in self.consumers:  # consumer topics are physical names already
            physical += [TopicSpec(t, known[t].partitions, known[t].config) if t in known else TopicSpec(t) for t in c.topics]
            physical += [dlq_spec(t) for t in c.topics]
        if physical:
            await ensure_topics(s.kafka_bootstrap, physical, client_id=f"lotse-{self.service}")
        await self.broker.start()
        self.relay = OutboxRelay(
            service=self.service, dsn=self.dsn, schema=self.schema, publish=self.publish,
            poll_interval_s=s.outbox_poll_interval_s, batch_size=s.outbox_batch_size,
            retry_base_s=s.outbox_retry_base_s, retry_max_s=s.outbox_retry_max_s,
        )
        self.relay.start()
        self._tasks = [asyncio.create_task(self._run_worker(w), name=f"{self.service}-worker-{i}") for i, w in enumerate(self._workers)]
        self.started = True
        log.info("service started", extra={"consumers": [c.name for c in self.consumers]})

    async def _run_worker(self, worker: Worker) -> None:
        try:
            await worker(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical("worker crashed", exc_info=True)
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
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for callback in reversed(self._on_stop):
            try:
                await callback()
            except Exception:  # noqa: BLE001 - one failing hook must not keep the others from running
                log.warning("shutdown hook failed", exc_info=True)
        if self._pool:
            if not await self._bounded("closing the database pool", self._pool.close(), limit):
                self._pool.terminate()
        self.started = False
        log.info("service stopped")

    @staticmethod
    async def _bounded(step: str, aw: Any, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(aw, timeout=timeout_s)
            return True
        except asyncio.TimeoutError:
            log.error("shutdown step timed out; continuing", extra={"step": step, "timeout_s": timeout_s})
            return False

    async def readiness(self) -> dict[str, Any]:
        """Each component and whether it answers; the service is ready when all do."""
        timeout = self.settings.readiness_timeout_s
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                await self.pool.fetchval("SELECT 1")
            checks["postgres"] = "up"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["postgres"] = f"down: {type(exc).__name__}"
        try:
            ok = await self.broker.ping(timeout=timeout)
            checks["kafka"] = "up" if ok else "down: no answer"
        except Exception as exc:  # noqa: BLE001
            checks["kafka"] = f"down: {type(exc).__name__}"
        for c in self.consumers:
            checks[f"consumer:{c.name}"] = "up" if c.running else "down: not running"
        checks["outbox-relay"] = "up" if self.relay and self.relay.running else "down: not running"
        for t in self._tasks:
            checks[f"worker:{t.get_name()}"] = "up" if not t.done() else "down: stopped"
        return checks
