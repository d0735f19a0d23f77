"""Outbox relay: CPU per published event against a bare aiokafka producer sending the same records, in the same run.

    python -m bench.relay                          # 4,000 events per variant, 2 rounds (under a minute)
    python -m bench.relay --n 20000 --rounds 3
    python -m bench.relay --rate 200 --seconds 10   # trickle: rows committed one at a time at 200/s
    python -m bench.relay --compare-rev HEAD        # also the relay of another git revision
    python -m bench.relay --linger-ms 5 --max-batch-size 16384   # other settings for the relay's producer

Own schema (the kit's migrations, so the real `outbox` table and index) and own topic (3 partitions,
as every lotse.* topic), created with the provisioning principal's credentials and removed
afterwards. Realistic events: `lotse.referral.sent`/`accepted` CloudEvents, 20 per client key.

Variants, each in this process (CPU from `time.process_time`: the relay's Python side, not the
database's); each round runs bare first and the others in a rotating order:

- **bare**: an `AIOKafkaProducer(acks="all", enable_idempotence=True)`, otherwise aiokafka's defaults, sends the same
  records (key, value, headers as the outbox holds them) in batches of the relay's size: sends in
  order, then awaits the batch's acknowledgements. No database. The baseline.
- **relay**: this checkout's `OutboxRelay` publishing through `kafka.broker_producer` (the broker's
  own producer, `producer.send`), the path the runtime uses.
- **relay+faststream**: the same relay publishing through FastStream's `broker.publish(...,
  no_confirm=True)` (which returns the acknowledgement's future): the cost of FastStream's publish
  command, middleware pass and re-encoding per record.
- **rev:<REV>** (`--compare-rev`): `lotse_kit/outbox.py` as of that git revision, with
  `broker.publish` awaiting each acknowledgement, as the runtime called it before this relay.

Backlog mode (default): the outbox is filled with N rows (not measured), then the relay drains it
batch by batch (`drain_once`, full batches of 200). Trickle mode (`--rate`): a separate process
commits one row per transaction (with the NOTIFY `enqueue` sends) at the given rate, and the relay
runs as in a service (LISTEN, advisory lock, poll), so each drain holds what arrived since the last
one: the per-drain costs (queries, the backlog gauge, produce requests) count as they do at that rate.

PostgreSQL's and the Kafka broker's CPU in the same windows are read from /proc and shown per event;
both are shared with whatever else runs on the machine, so read them as rough figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.audit_ingest import CpuMeter, envelopes
from contracts import Envelope, encode
from lotse_kit import db
from lotse_kit.kafka import admin_client, broker_producer, make_broker
from lotse_kit.settings import KitSettings

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 3
BATCH = 200  # LOTSE_OUTBOX_BATCH_SIZE's default
INSERT = """WITH added AS (
               INSERT INTO outbox (event_id, event_type, client_id, topic, key, value, headers)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING 1)
            SELECT pg_notify('lotse_outbox_' || current_schema(), '') FROM added"""


def rows_for(envs: list[Envelope[Any]], topic: str) -> list[tuple[Any, ...]]:
    rows = []
    for env in envs:
        rec = encode(env)
        rows.append((env.id, env.type, env.subject, topic, rec.key, rec.value, json.dumps(rec.headers_dict())))
    return rows


def load_rev_outbox(rev: str) -> ModuleType:
    """`lotse_kit/outbox.py` as of git revision `rev`, importable next to the current one."""
    source = subprocess.run(["git", "show", f"{rev}:lotse_kit/outbox.py"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    name = "lotse_kit._outbox_rev"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "lotse_kit"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:lotse_kit/outbox.py", "exec"), module.__dict__)
    return module


# ---------------------------------------------------------------- set-up and clean-up
def names(run: str) -> tuple[str, str]:
    return f"bench_relay_{run}", f"bench-relay-{run}"


async def setup(s: KitSettings, run: str) -> None:
    schema, topic = names(run)
    await db.provision(
        s.database_url,
        schema=schema,
        role=f"lotse_{schema}",
        password=uuid.uuid4().hex,
        migrations=db.load_migrations("kit", db.KIT_MIGRATIONS),
    )
    from aiokafka.admin import NewTopic

    admin = admin_client(kafka_admin(), client_id="bench-relay")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def cleanup(s: KitSettings, schema: str, topic: str) -> None:
    errors = []
    admin = admin_client(kafka_admin(), client_id="bench-relay")
    try:
        await admin.start()
        await admin.delete_topics([topic])
    except Exception as exc:
        errors.append(f"topic: {exc}")
    finally:
        await admin.close()
    try:
        conn = await asyncpg.connect(s.database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.execute(f"DROP ROLE IF EXISTS lotse_{schema}")
        finally:
            await conn.close()
    except Exception as exc:
        errors.append(f"schema: {exc}")
    if errors:
        print(f"(clean-up incomplete: {'; '.join(errors)})", file=sys.stderr)


# ---------------------------------------------------------------- the variants
Publish = Callable[[str, bytes | None, bytes, dict[str, str], str], Awaitable[Any]]


class Bench:
    def __init__(self, s: KitSettings, schema: str, topic: str, dsn: str, *, linger_ms: int, max_batch_size: int | None) -> None:
        self.s, self.schema, self.topic, self.dsn = s, schema, topic, dsn
        if max_batch_size:
            self.relay_broker = make_broker(kafka_admin(), "bench-relay", linger_ms=linger_ms, max_batch_size=max_batch_size)
        else:
            self.relay_broker = make_broker(kafka_admin(), "bench-relay", linger_ms=linger_ms)
        # The baseline is aiokafka as it comes, with the guarantees the relay must keep (idempotent, acks=all).
        self.bare = AIOKafkaProducer(acks="all", enable_idempotence=True, client_id="bench-relay-bare", **kafka_admin().aiokafka())
        self.rev: ModuleType | None = None

    async def start(self) -> None:
        await self.relay_broker.start()
        await self.bare.start()
        self.conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema, "application_name": "bench-relay"})

    async def stop(self) -> None:
        if hasattr(self, "conn"):
            await self.conn.close()
        await self.relay_broker.stop()
        await self.bare.stop()

    # The relay's publish callables: `topic` is already physical here (no namespace).
    async def send(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str], event_id: str) -> Any:
        return await broker_producer(self.relay_broker).send(
            topic, value=value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
        )

    async def faststream(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str], event_id: str) -> Any:
        # no_confirm: returns the acknowledgement's future instead of awaiting it, as the relay expects.
        return await self.relay_broker.publish(value, topic=topic, key=key, headers=headers, correlation_id=event_id, no_confirm=True)

    async def faststream_confirmed(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str], event_id: str) -> Any:
        return await self.relay_broker.publish(value, topic=topic, key=key, headers=headers, correlation_id=event_id)

    def relay(self, variant: str, **kw: Any) -> Any:
        if variant.startswith("rev:"):
            assert self.rev is not None
            publish = self.faststream_confirmed  # the runtime's publish before the relay awaited acknowledgements itself
            return self.rev.OutboxRelay(service="bench-relay", dsn=self.dsn, schema=self.schema, publish=publish, **kw)
        from lotse_kit.outbox import OutboxRelay

        publish = self.faststream if variant == "relay+faststream" else self.send
        linger_s = float(variant.removeprefix("relay linger ").removesuffix("ms")) / 1000 if variant.startswith("relay linger ") else 0.0
        return OutboxRelay(service="bench-relay", dsn=self.dsn, schema=self.schema, publish=publish, linger_s=linger_s, **kw)

    async def fill(self, rows: list[tuple[Any, ...]]) -> None:
        await self.conn.execute("TRUNCATE outbox")
        await self.conn.executemany(INSERT, rows)
        await self.conn.execute("VACUUM ANALYZE outbox")

    # -- backlog mode
    async def backlog(self, variant: str, rows: list[tuple[Any, ...]]) -> dict[str, float]:
        if variant == "bare":
            records = [(r[4], r[5], [(k, v.encode()) for k, v in json.loads(r[6]).items()]) for r in rows]
            producer = self.bare
            meter, t0, c0 = CpuMeter({_pid()}), time.perf_counter(), time.process_time()
            meter.start()
            for i in range(0, len(records), BATCH):
                acks = [await producer.send(self.topic, value=v, key=k, headers=h) for k, v, h in records[i : i + BATCH]]
                await asyncio.gather(*acks)
        else:
            await self.fill(rows)
            relay = self.relay(variant, batch_size=BATCH)
            meter, t0, c0 = CpuMeter({_pid()}), time.perf_counter(), time.process_time()
            meter.start()
            published = 0
            while published < len(rows):
                done = await relay.drain_once(self.conn)
                if not done:
                    raise RuntimeError(f"{variant}: a drain published nothing ({published} of {len(rows)})")
                published += done
        return _figures(meter, t0, c0, len(rows))

    # -- trickle mode
    async def trickle(self, variant: str, rows: list[tuple[Any, ...]], rate: float) -> dict[str, float]:
        if variant == "bare":
            records = [(r[4], r[5], [(k, v.encode()) for k, v in json.loads(r[6]).items()]) for r in rows]
            producer = self.bare
            meter, t0, c0 = CpuMeter({_pid()}), time.perf_counter(), time.process_time()
            meter.start()
            for i, (k, v, h) in enumerate(records):
                await _until(t0 + i / rate)
                await (await producer.send(self.topic, value=v, key=k, headers=h))
            return _figures(meter, t0, c0, len(rows))
        await self.conn.execute("TRUNCATE outbox")
        relay = self.relay(variant, batch_size=BATCH, poll_interval_s=1.0)
        drains = 0
        drain_once = relay.drain_once

        async def counted(conn: asyncpg.Connection) -> int:
            nonlocal drains
            published: int = await drain_once(conn)
            drains += published > 0
            return published

        relay.drain_once = counted  # the relay's loop looks it up on the instance
        relay.start()
        while not relay.is_leader:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # its first (empty) drain is done; it waits for a NOTIFY
        ctx = multiprocessing.get_context("spawn")
        inserter = ctx.Process(target=_insert_at_rate, args=(self.dsn, self.schema, rows, rate), daemon=True)
        meter, t0, c0 = CpuMeter({_pid()}), time.perf_counter(), time.process_time()
        meter.start()
        inserter.start()
        try:
            # Watch from this process at 5/s: a small, equal cost for every relay variant.
            while inserter.is_alive() or await self.conn.fetchval("SELECT count(*) FROM outbox"):
                await asyncio.sleep(0.2)
        finally:
            figures = _figures(meter, t0, c0, len(rows))
            figures["events_per_drain"] = len(rows) / max(1, drains)
            await relay.stop(timeout_s=10)
            inserter.join(5)
        if inserter.exitcode:
            raise RuntimeError(f"the inserter failed ({inserter.exitcode})")
        return figures


def _insert_at_rate(dsn: str, schema: str, rows: list[tuple[Any, ...]], rate: float) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema, "application_name": "bench-relay-inserter"})
        try:
            t0 = time.perf_counter()
            for i, row in enumerate(rows):
                await _until(t0 + i / rate)
                async with conn.transaction():
                    await conn.execute(INSERT, *row)
        finally:
            await conn.close()

    asyncio.run(go())


async def _until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def kafka_admin() -> Any:
    """The provisioning principal (as bench.floor and bench.audit_ingest use): it may create and delete topics."""
    from lotse_cli.admin import admin_connection

    return admin_connection()


def _pid() -> int:
    return os.getpid()


def _figures(meter: CpuMeter, t0: float, c0: float, n: int) -> dict[str, float]:
    cpu = time.process_time() - c0
    wall = time.perf_counter() - t0
    meter.stop()
    per = meter.per_record_us(n)
    return {"us_per_event": cpu / n * 1e6, "events_per_s": n / wall, "postgres_us": per["postgres"], "kafka_us": per["kafka"]}


# ---------------------------------------------------------------- main
async def main(
    n: int,
    rounds: int,
    rate: float | None,
    seconds: float,
    compare_rev: str | None,
    linger_ms: int,
    max_batch_size: int | None,
    only: list[str],
    relay_linger_ms: list[float],
) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    s = KitSettings()
    run = uuid.uuid4().hex[:8]
    schema, topic = names(run)
    if rate:
        n = int(rate * seconds)
    lingers = [f"relay linger {ms:g}ms" for ms in relay_linger_ms if ms > 0]
    variants = ["bare", "relay", *lingers, "relay+faststream"] + ([f"rev:{compare_rev}"] if compare_rev else [])
    variants = [v for v in variants if not only or v == "bare" or any(v.startswith(o) for o in only)]
    bench = Bench(s, schema, topic, s.database_url, linger_ms=linger_ms, max_batch_size=max_batch_size)
    if compare_rev:
        bench.rev = load_rev_outbox(compare_rev)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    try:
        await setup(s, run)
        await bench.start()
        # Warm-up: connections, metadata, producer ids, code paths.
        warm = rows_for(envelopes(BATCH), topic)
        for v in variants:
            await bench.backlog(v, warm)
        for r in range(rounds):
            rows = rows_for(envelopes(n), topic)
            # Bare first, then the others in a rotating order, so none always runs right after the outbox was filled.
            others = variants[1:]
            for v in ["bare", *others[r % len(others) :], *others[: r % len(others)]]:
                fig = await (bench.trickle(v, rows, rate) if rate else bench.backlog(v, rows))
                results[v].append(fig)
                print(
                    f"round {r + 1} {v:>22}: {fig['us_per_event']:7.1f} us/event (this process), {fig['events_per_s']:8.0f} events/s;"
                    f" postgres {fig['postgres_us']:.1f} us, kafka {fig['kafka_us']:.1f} us"
                    + (f"; {fig['events_per_drain']:.1f} events per drain" if "events_per_drain" in fig else ""),
                    flush=True,
                )
    finally:
        try:
            await bench.stop()
        finally:
            await cleanup(s, schema, topic)
    summary = {v: {k: statistics.median(f[k] for f in figs) for k in figs[0]} for v, figs in results.items()}
    per_drain = " | events per drain" if rate else ""
    base = summary["bare"]["us_per_event"]
    mode = f"trickle at {rate:g}/s for {seconds:g} s" if rate else f"backlog of {n} rows, batches of {BATCH}"
    print(f"\nmedian of {rounds} round(s), {mode}; relay's producer: linger_ms={linger_ms}, max_batch_size={max_batch_size or 'default'}")
    print(f"| variant | CPU us/event (this process) | ratio to bare | events/s | PostgreSQL us/event | Kafka us/event{per_drain} |")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if rate else ""))
    for v, f in summary.items():
        drains = (f" | {f['events_per_drain']:.1f}" if "events_per_drain" in f else " | -") if rate else ""
        print(
            f"| {v} | {f['us_per_event']:.1f} | {f['us_per_event'] / base:.2f} | {f['events_per_s']:.0f} | {f['postgres_us']:.1f} | {f['kafka_us']:.1f}{drains} |"
        )
    return {
        "mode": mode,
        "linger_ms": linger_ms,
        "max_batch_size": max_batch_size,
        "rounds": results,
        "median": summary,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="events per variant and round (backlog mode)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, help="trickle mode: rows committed per second")
    p.add_argument("--seconds", type=float, default=10.0, help="trickle mode: how long")
    p.add_argument("--compare-rev", help="also run lotse_kit/outbox.py of this git revision (with broker.publish)")
    p.add_argument("--linger-ms", type=int, default=0, help="the relay's producer linger (bare keeps aiokafka's defaults)")
    p.add_argument("--max-batch-size", type=int, help="the relay's producer batch size per partition (default: make_broker's)")
    p.add_argument(
        "--relay-linger-ms", default="", help="also this checkout's relay waiting this long after a wake-up before it drains (comma list)"
    )
    p.add_argument("--only", action="append", default=[], help="run only this variant (repeatable; bare always runs)")
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    a = p.parse_args()
    out = asyncio.run(
        main(
            a.n,
            a.rounds,
            a.rate,
            a.seconds,
            a.compare_rev,
            a.linger_ms,
            a.max_batch_size,
            a.only,
            [float(x) for x in a.relay_linger_ms.split(",") if x],
        )
    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
