"""The fault scenarios. Each runs its fault while `ctx.load` offers steady load, and says how long recovery took.

A scenario is a class with a `name`, a `title`, `available(ctx)` (None, or why it cannot run here: scenarios 5 and
6 need bench/chaos/webhook_sink.py and bench/chaos/netfault.py) and `run(ctx)`, which starts the load with
`ctx.start_load(seconds)`, injects its fault at chosen moments and returns a `Outcome`. The runner then waits for
the load to finish and the system to be quiet, and the checker counts. New scenarios register with `@scenario`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.env import CONSUMING, Cluster, Instance, Postgres, Services, primary, replica
from bench.chaos.load import Load
from contracts import topics

REGISTRY: list[type[Scenario]] = []


def scenario(cls: type[Scenario]) -> type[Scenario]:
    REGISTRY.append(cls)
    return cls


@dataclass
class Profile:
    name: str
    load_s: float  # seconds of load around a single fault
    broker_down_s: float = 20.0
    webhook_503_s: float = 120.0
    netfault_s: float = 10.0
    malformed_per_topic: int = 1000
    ready_within_s: float = 90.0  # the stated recovery bound: every service ready again within this time


PROFILES = {
    # Each scenario once, the whole suite under 20 minutes on two cores (CI).
    "short": Profile("short", load_s=40.0, webhook_503_s=45.0),
    # By hand: longer load, the full 2 minutes of webhook failures.
    "full": Profile("full", load_s=90.0),
}


@dataclass
class Outcome:
    recovery_s: float | None  # from the end of the fault until every service instance was ready again
    notes: dict[str, Any] = field(default_factory=dict)
    injected: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # malformed records: topic -> [(partition, offset)]
    webhook: Any = None  # the webhook receiver, for the checker (deliveries by id)
    cleanup: Callable[[], Awaitable[None]] | None = None  # after the check
    since_recovery: float | None = None  # monotonic time the fault ended, when the checker should time the catch-up


@dataclass
class Context:
    services: Services
    cluster: Cluster
    postgres: Postgres
    profile: Profile
    load: Load
    log: Callable[[str], None]
    _load_task: asyncio.Task[None] | None = None

    def start_load(self, seconds: float) -> asyncio.Task[None]:
        self._load_task = asyncio.create_task(self.load.run_for(seconds))
        return self._load_task

    async def load_done(self) -> None:
        if self._load_task is not None:
            await self._load_task

    async def ready_after(self, what: str) -> float | None:
        """Seconds until every instance is ready again, logged; None if not within the profile's bound."""
        took, down = await self.services.wait_ready(self.profile.ready_within_s)
        if took is None:
            self.log(f"  not ready {self.profile.ready_within_s:.0f} s after {what}: {down}")
        else:
            self.log(f"  every service ready {took:.1f} s after {what}")
        return took


class Scenario:
    name = ""
    title = ""

    def available(self, ctx: Context) -> str | None:
        return None

    async def run(self, ctx: Context) -> Outcome:
        raise NotImplementedError


# ---------------------------------------------------------------- 1. the partition leader broker
@scenario
class BrokerLeaderKilled(Scenario):
    name = "broker-leader-kill"
    title = "kill -9 the partition leader broker, restart it after 20 s"

    async def run(self, ctx: Context) -> Outcome:
        p = ctx.profile
        ctx.start_load(p.load_s)
        await asyncio.sleep(min(10.0, p.load_s / 4))
        topic = topics.REFERRALS
        node = await ctx.cluster.leader(topic, 0)
        ctx.log(f"  kill -9 node {node} (leader of {topic}[0])")
        await ctx.cluster.kill(node)
        t_kill = time.monotonic()
        await asyncio.sleep(p.broker_down_s)
        ctx.log(f"  starting node {node} again")
        await ctx.cluster.start(node)
        rec = await ctx.ready_after(f"node {node} restarted")
        return Outcome(rec, {"node": node, "leader_of": f"{topic}[0]", "down_s": round(time.monotonic() - t_kill, 1)})


# ---------------------------------------------------------------- 2. each service in turn
@scenario
class ServicesKilled(Scenario):
    name = "service-kill"
    title = "kill -9 each service in turn mid-batch, restart it"

    async def run(self, ctx: Context) -> Outcome:
        p = ctx.profile
        targets = [primary(s) for s in _present(CONSUMING)]
        seconds = max(p.load_s, 12.0 * len(targets) + 10)
        ctx.start_load(seconds)
        await asyncio.sleep(5)
        notes: dict[str, Any] = {}
        worst: float | None = 0.0
        for inst in targets:
            pid = ctx.services.kill9(inst)
            t_kill = time.monotonic()
            ctx.log(f"  kill -9 {inst.name} (pid {pid}) under load")
            await asyncio.sleep(1.0)
            await ctx.services.start(inst)  # services.sh up: returns once it answers ready
            took = await ctx.ready_after(f"{inst.name} restarted")
            # Recovery: from the kill (1 s down, then the restart) until every instance is ready again.
            total = None if took is None else time.monotonic() - t_kill
            notes[inst.name] = {"kill_to_ready_s": None if total is None else round(total, 1)}
            worst = None if total is None or worst is None else max(worst, total)
            await asyncio.sleep(5)
        return Outcome(worst, notes)


# ---------------------------------------------------------------- 3. one of two replicas
@scenario
class ReplicaKilled(Scenario):
    name = "replica-kill"
    title = "two replicas of each consuming service in one group, kill -9 one"

    async def run(self, ctx: Context) -> Outcome:
        p = ctx.profile
        services = _present(CONSUMING)
        ctx.log(f"  starting a second replica of {', '.join(services)}")
        for s in services:
            await ctx.services.start(replica(s))
        await ctx.services.wait_ready(p.ready_within_s)
        ctx.start_load(max(p.load_s, 10.0 * len(services) + 15))
        await asyncio.sleep(8)
        notes: dict[str, Any] = {}
        worst: float | None = 0.0
        killed: list[Instance] = []
        for s in services:
            inst = replica(s)
            pid = ctx.services.kill9(inst)
            killed.append(inst)
            ctx.services.replicas.discard(inst)  # the survivors are what must stay ready
            ctx.log(f"  kill -9 {inst.name} (pid {pid}); {s} goes on with one replica")
            took = await ctx.ready_after(f"{inst.name} was killed")
            notes[inst.name] = {"others_ready_s": None if took is None else round(took, 1)}
            worst = None if took is None or worst is None else max(worst, took)
            await asyncio.sleep(8)
        await ctx.load_done()
        for inst in killed:
            inst.pid_file.unlink(missing_ok=True)
        return Outcome(worst, notes)


# ---------------------------------------------------------------- 4. PostgreSQL
@scenario
class PostgresRestarted(Scenario):
    name = "postgres-restart"
    title = "restart PostgreSQL (fast shutdown) under load"

    async def run(self, ctx: Context) -> Outcome:
        p = ctx.profile
        ctx.start_load(p.load_s)
        await asyncio.sleep(min(10.0, p.load_s / 4))
        ctx.log("  pg_ctl restart -m fast")
        t0 = time.monotonic()
        await ctx.postgres.restart_fast()
        restart_s = time.monotonic() - t0
        rec = await ctx.ready_after("PostgreSQL restarted")
        return Outcome(rec, {"pg_restart_s": round(restart_s, 1)})


# ---------------------------------------------------------------- 5. a partner's webhook endpoint fails
@scenario
class WebhookUnavailable(Scenario):
    name = "webhook-503"
    title = "a partner's webhook endpoint answers 503 for 2 minutes, then 200"
    port = 18600

    def available(self, ctx: Context) -> str | None:
        return _missing("bench.chaos.webhook_sink")

    async def run(self, ctx: Context) -> Outcome:
        from bench import e2e

        p = ctx.profile
        mod = importlib.import_module("bench.chaos.webhook_sink")
        sink = await mod.start_sink(port=self.port)
        try:
            # The Jobcenter's system hears of every acceptance of its referrals (the partners accept each one).
            await sink.register(e2e.SENDER, event_types=["lotse.referral.accepted"])
            ctx.start_load(p.webhook_503_s + 20.0)
            await asyncio.sleep(5)
            ctx.log(f"  the Jobcenter's webhook endpoint answers 503 for {p.webhook_503_s:.0f} s")
            await sink.down()
            await asyncio.sleep(p.webhook_503_s)
            # Deliveries may not have been attempted yet (the notifications worker serves the e-mail backlog of the
            # load first): stay down until the endpoint has refused some, for at most two minutes more.
            extra_until = time.monotonic() + 120
            refused = 0
            while time.monotonic() < extra_until:
                refused = sum(1 for d in await sink.deliveries() if d.status == 503)
                if refused >= 20:
                    break
                await asyncio.sleep(2)
            ctx.log(f"  the endpoint answered 503 to {refused} deliveries")
            await sink.up()
            ctx.log("  the endpoint answers 200 again")
            t_up = time.monotonic()
            rec = await ctx.ready_after("the endpoint recovered")
            await ctx.load_done()
        except BaseException:
            await _close_sink(sink)
            raise
        return Outcome(
            rec,
            {"failing_s": p.webhook_503_s, "answered_503": refused, "endpoint_id": sink.endpoint_id},
            webhook=sink,
            cleanup=lambda: _close_sink(sink),
            since_recovery=t_up,
        )


async def _close_sink(sink: Any) -> None:
    with contextlib.suppress(Exception):
        await sink.unregister()
    with contextlib.suppress(Exception):
        await sink.stop()


# ---------------------------------------------------------------- 6. network between services and brokers
@scenario
class NetworkDegraded(Scenario):
    name = "network-delay-loss"
    title = "network delay and loss between services and brokers for 10 s"

    def available(self, ctx: Context) -> str | None:
        return _missing("bench.chaos.netfault")

    async def run(self, ctx: Context) -> Outcome:
        p = ctx.profile
        mod = importlib.import_module("bench.chaos.netfault")
        nf = mod.NetFault()
        started = False
        if hasattr(nf, "start"):
            await nf.start()
            started = True
        try:
            ctx.start_load(p.load_s)
            await asyncio.sleep(min(10.0, p.load_s / 4))
            ctx.log(f"  {p.netfault_s:.0f} s of 300 ms ± 100 ms delay and 5 % loss between services and brokers")
            await nf.degrade(delay_ms=300, jitter_ms=100, loss=0.05)
            await asyncio.sleep(p.netfault_s)
            await nf.heal()
            rec = await ctx.ready_after("the network healed")
            await ctx.load_done()
            return Outcome(rec, {"delay_ms": 300, "jitter_ms": 100, "loss": 0.05, "seconds": p.netfault_s})
        finally:
            with contextlib.suppress(Exception):
                await nf.heal()
            if started and hasattr(nf, "stop"):
                with contextlib.suppress(Exception):
                    await nf.stop()


# ---------------------------------------------------------------- 7. malformed records
@scenario
class MalformedRecords(Scenario):
    name = "malformed-records"
    title = "1,000 malformed records into each consumed topic during the load"

    async def run(self, ctx: Context) -> Outcome:
        p = ctx.profile
        ctx.start_load(p.load_s)
        await asyncio.sleep(min(10.0, p.load_s / 4))
        t0 = time.monotonic()
        injected = await inject_malformed(consumed_topics(), p.malformed_per_topic)
        ctx.log(f"  {sum(map(len, injected.values()))} malformed records into {len(injected)} topics in {time.monotonic() - t0:.1f} s")
        rec = await ctx.ready_after("the malformed records")
        return Outcome(rec, {"per_topic": p.malformed_per_topic, "topics": sorted(injected)}, injected=injected)


def consumed_topics() -> list[str]:
    """Every topic a Lotse service consumes: the internal topics, disclosure requests and one partner's outbox."""
    from bench import e2e
    from lotse_kit.settings import KitSettings

    ns = KitSettings().topic_namespace
    return [ns + t for t in (*topics.INTERNAL_TOPICS, topics.DISCLOSURE_REQUESTS, topics.partner_outbox(e2e.PARTNERS[0]))]


def malformed_record(i: int, run: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Three kinds in turn: a value that is not JSON without CloudEvents headers; a known type whose data
    fails its schema; a well-formed envelope of a type nobody knows."""
    key = f"chaos-malformed-{run}-{i}".encode()
    if i % 3 == 0:
        return key, b"\xff\xfe not json {", []
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", b"/lotse/chaos"),
        ("ce_type", b"lotse.referral.sent" if i % 3 == 1 else b"lotse.chaos.unknown"),
        ("ce_time", b"2026-01-01T00:00:00Z"),
        ("content-type", b"application/json"),
    ]
    return key, b'{"referral_id": "not a uuid"}', headers


async def inject_malformed(topic_names: list[str], per_topic: int) -> dict[str, list[tuple[int, int]]]:
    from aiokafka import AIOKafkaProducer

    from bench.chaos.checker import admin_kafka

    run = uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=20, **admin_kafka())
    await producer.start()
    try:
        futures: dict[str, list[Any]] = {t: [] for t in topic_names}
        for t in topic_names:
            for i in range(per_topic):
                key, value, headers = malformed_record(i, run)
                futures[t].append(await producer.send(t, value=value, key=key, headers=headers))
        out: dict[str, list[tuple[int, int]]] = {}
        for t, fs in futures.items():
            metas = await asyncio.gather(*fs)
            out[t] = [(m.partition, m.offset) for m in metas]
        return out
    finally:
        await producer.stop()


# ---------------------------------------------------------------- helpers
def _present(services: tuple[str, ...]) -> list[str]:
    from bench.chaos.env import present_services

    have = present_services()
    return [s for s in services if s in have]


def _missing(module: str) -> str | None:
    path = os.path.join(os.path.dirname(__file__), module.rsplit(".", 1)[1] + ".py")
    if not os.path.exists(path):
        return f"{module} is not there yet"
    try:
        importlib.import_module(module)
    except Exception as exc:  # a half-written module must not stop the other scenarios
        return f"{module} does not import: {type(exc).__name__}: {exc}"
    return None


def by_name(names: list[str] | None) -> list[Scenario]:
    chosen = [cls() for cls in REGISTRY]
    if names:
        unknown = set(names) - {s.name for s in chosen}
        if unknown:
            raise SystemExit(f"unknown scenarios {sorted(unknown)}; known: {[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in names]
    return chosen
