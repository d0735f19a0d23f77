"""Audit ingest rate vs a bare asyncpg COPY of the same rows (and vs a bare Kafka consumer), in the same run.

    python -m bench.audit_ingest            # 100,000 events (a few minutes on 2 cores)
    python -m bench.audit_ingest --full     # 1,000,000 events
    python -m bench.audit_ingest --n 20000 --partitions 3
    python -m bench.audit_ingest --replicas 2  # two audit processes in one consumer group

Fills one topic (`<ns>lotse.referrals.v1`, realistic CloudEvents: referral sent/accepted) with N
records, then
1. a bare AIOKafkaConsumer (own group, earliest, getmany, no processing) drains it;
2. the audit service (bootstrap, real PostgreSQL, fresh schema) ingests it: entry building,
   SHA-256 leaves, append with tree nodes, offset commits. With `--replicas R`, R audit processes
   share the consumer group, as R replicas of the service would.
3. the COPY baseline: the rows the audit wrote (every `audit_log` row and every `tree_nodes` row
   its appends completed, read back from its schema) are COPY'd by one asyncpg connection
   (`copy_records_to_table`) into fresh tables created `LIKE ... INCLUDING ALL` (same columns,
   defaults, constraints and indexes), in batches of `ingest_max_records` entries, each batch with
   the tree nodes it completes in one committed transaction: the floor for a durable log writer.
Rates are counted from the first record seen to the last (consumer-group join excluded for both).
For every phase the CPU time of this benchmark's Python processes, of PostgreSQL and of the Kafka
broker is read from /proc (Linux) and reported per record: that shows where the time goes and how
many cores the machine had to offer.
Goal from the issue: audit rate >= 0.5 x COPY rate (audit/bare is printed as extra information). The
namespace's topics (the benchmark's and the platform topics the audit runtime creates at start),
schemas and role are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts import Envelope, encode, new_event, topics
from contracts.events import ReferralAccepted, ReferralSent
from contracts.vocab import DataCategory, Need
from lotse_kit.kafka import admin_client, connection, ensure_topics
from lotse_kit.settings import KitSettings

ORGS = ["jobcenter-paderborn", "caritas-paderborn", "diakonie-paderborn", "awo-paderborn", "invia-paderborn", "ki-paderborn"]


def envelopes(n: int) -> list[Envelope[Any]]:
    """Realistic referral events (sent, sent, accepted, ...) about n/20 clients, as the platform writes them."""
    clients = [uuid.uuid4() for _ in range(max(1, n // 20))]
    now = datetime.now(UTC)
    out: list[Envelope[Any]] = []
    for i in range(n):
        client = clients[i % len(clients)]
        frm, to = ORGS[i % len(ORGS)], ORGS[(i + 1) % len(ORGS)]
        data: Any
        if i % 3 == 2:
            data = ReferralAccepted(client_id=client, referral_id=uuid.uuid4(), to_org=to, from_org=frm, accepted_at=now)
        else:
            data = ReferralSent(
                client_id=client,
                referral_id=uuid.uuid4(),
                from_org=frm,
                to_org=to,
                service="migrationsberatung",
                need=Need("language_course"),
                requested_categories=[DataCategory("identity"), DataCategory("needs")],
                sent_at=now,
            )
        out.append(new_event(data, source="/lotse/intake", acting_org=frm))
    return out


def events(n: int):
    for env in envelopes(n):
        yield encode(env)


async def fill(bootstrap: str, topic: str, n: int) -> float:
    producer = AIOKafkaProducer(
        acks="all", linger_ms=20, max_batch_size=512 * 1024, compression_type=None, **connection(bootstrap).aiokafka()
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for rec in events(n):
            pending.append(await producer.send(topic, value=rec.value, key=rec.key, headers=rec.headers))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


class CpuMeter:
    """CPU seconds used by groups of processes between start() and stop(), read from /proc."""

    GROUPS = ("python", "postgres", "kafka")

    def __init__(self, python_pids: set[int]) -> None:
        self.python_pids = python_pids
        self.clock_ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start_s: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _group(self, pid: int) -> str | None:
        if pid in self.python_pids:
            return "python"
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"kafka.Kafka" in cmd:
            return "kafka"
        if cmd.startswith(b"postgres") or b"/postgres\0" in cmd or b"bin/postgres" in cmd:
            return "postgres"
        return None

    def sample(self) -> dict[str, float]:
        totals = dict.fromkeys(self.GROUPS, 0.0)
        if not Path("/proc/self/stat").exists():
            return totals
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            group = self._group(int(entry.name))
            if group is None:
                continue
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            totals[group] += (int(fields[11]) + int(fields[12])) / self.clock_ticks  # utime + stime
        return totals

    def start(self) -> None:
        self.start_s = self.sample()

    def stop(self) -> dict[str, float]:
        end = self.sample()
        self.used = {g: max(0.0, end[g] - self.start_s.get(g, 0.0)) for g in self.GROUPS}
        return self.used

    def per_record_us(self, n: int) -> dict[str, float]:
        return {g: round(v / n * 1e6, 1) for g, v in self.used.items()}


async def bare_drain(bootstrap: str, topic: str, n: int) -> tuple[float, CpuMeter]:
    consumer = AIOKafkaConsumer(
        topic,
        **connection(bootstrap).aiokafka(),
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    meter = CpuMeter({os.getpid()})
    meter.start()
    seen = 0
    first = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            for recs in batch.values():
                if recs and first is None:
                    first = time.perf_counter()
                seen += len(recs)
            if batch:
                await consumer.commit()  # a fair baseline commits too, once per batch
    finally:
        meter.stop()
        await consumer.stop()
    return time.perf_counter() - (first or time.perf_counter()), meter


def audit_settings(namespace: str, key_dir: Path):
    from services.audit.config import AuditSettings

    return AuditSettings(topic_namespace=namespace, tree_head_interval_s=3600, signing_key_file=key_dir / "k.pem", log_level="WARNING")


async def _run_audit_until(settings, schema: str, n: int, on_first=None, on_done=None) -> Any:
    """One audit replica, running until the log holds n entries. Returns the app (stopped).

    `on_done` runs before the replica stops: PostgreSQL backends take their CPU time with them."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.audit.bootstrap import bootstrap

    app = bootstrap(settings, schema=schema, signing_key=Ed25519PrivateKey.generate())
    async with app.router.lifespan_context(app):
        pool = app.state.deps.db.pool
        first = None
        while True:
            size = await pool.fetchval("SELECT coalesce(max(idx) + 1, 0) FROM audit_log")
            if size and first is None:
                first = time.perf_counter()
                if on_first:
                    on_first()
            if size >= n:
                break
            await asyncio.sleep(0.05)
        if on_done:
            on_done()
        app.state.bench_elapsed = time.perf_counter() - (first or time.perf_counter())
        app.state.bench_table_mb = round(await pool.fetchval("SELECT pg_total_relation_size('audit_log')") / 1e6, 1)
    return app


def _replica_process(namespace: str, schema: str, n: int, key_dir: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_run_audit_until(audit_settings(namespace, Path(key_dir)), schema, n))


async def audit_ingest(namespace: str, schema: str, n: int, key_dir: Path, replicas: int) -> tuple[float, dict, CpuMeter]:
    # The other replicas are separate processes (one Python process is one core at most).
    ctx = multiprocessing.get_context("spawn")
    others = [ctx.Process(target=_replica_process, args=(namespace, schema, n, str(key_dir)), daemon=True) for _ in range(replicas - 1)]
    for p in others:
        p.start()
    meter = CpuMeter({os.getpid(), *(p.pid for p in others if p.pid)})
    try:
        app = await _run_audit_until(audit_settings(namespace, key_dir), schema, n, on_first=meter.start, on_done=meter.stop)
    finally:
        for p in others:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    ing = app.state.ingest
    stats = {
        "batches_here": ing.batches,
        "build_s_here": round(ing.build_seconds, 2),
        "append_s_here": round(ing.append_seconds, 2),
        "table_mb": app.state.bench_table_mb,
    }
    return app.state.bench_elapsed, stats, meter


async def copy_baseline(database_url: str, schema: str, batch: int) -> tuple[float, int, int, CpuMeter]:
    """COPYs the rows the audit wrote into identically indexed fresh tables, `batch` entries (and the
    tree nodes they complete) per committed transaction, over one connection. Returns (seconds,
    entries, nodes, CPU meter). The rows are read before the clock starts."""
    from services.audit.adapters.repository import ENTRY_COLUMNS

    target = f"{schema}_copy"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {target}")
        for table in ("audit_log", "tree_nodes"):
            await conn.execute(f"CREATE TABLE {target}.{table} (LIKE {schema}.{table} INCLUDING ALL)")
        cols = ", ".join(f'"{c}"' for c in ENTRY_COLUMNS)
        entries = [tuple(r) for r in await conn.fetch(f"SELECT {cols} FROM {schema}.audit_log ORDER BY idx")]
        nodes = [tuple(r) for r in await conn.fetch(f"SELECT level, idx, hash FROM {schema}.tree_nodes")]
        # A node is written with the batch holding its last leaf, as the audit's append does.
        by_batch: dict[int, list[tuple[Any, ...]]] = {}
        for level, idx, h in nodes:
            by_batch.setdefault((((idx + 1) << level) - 1) // batch, []).append((level, idx, h))
        meter = CpuMeter({os.getpid()})
        meter.start()
        t0 = time.perf_counter()
        for b, i in enumerate(range(0, len(entries), batch)):
            async with conn.transaction():
                await conn.copy_records_to_table("audit_log", schema_name=target, columns=ENTRY_COLUMNS, records=entries[i : i + batch])
                if b in by_batch:
                    await conn.copy_records_to_table(
                        "tree_nodes", schema_name=target, columns=("level", "idx", "hash"), records=by_batch[b]
                    )
        took = time.perf_counter() - t0
        meter.stop()
        return took, len(entries), len(nodes), meter
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {target} CASCADE")
        await conn.close()


async def delete_namespace_topics(s: KitSettings, namespace: str) -> None:
    """The benchmark's topic and the platform topics the audit runtime created in its namespace."""
    admin = admin_client(s.kafka())
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(namespace)]
        if names:
            await admin.delete_topics(names)
    except Exception as exc:
        print(f"(could not delete the topics of {namespace}: {exc})", file=sys.stderr)
    finally:
        await admin.close()


async def cleanup(s: KitSettings, namespace: str, schema: str) -> None:
    await delete_namespace_topics(s, namespace)
    conn = await asyncpg.connect(s.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(f"DROP ROLE IF EXISTS lotse_{schema}")
    finally:
        await conn.close()


async def main(n: int, partitions: int, replicas: int, keep: bool) -> dict:
    logging.basicConfig(level=logging.WARNING)
    run = uuid.uuid4().hex[:8]
    namespace = f"bench{run}."
    schema = f"audit_bench_{run}"
    base = KitSettings()
    topic = namespace + topics.REFERRALS
    await ensure_topics(base.kafka_bootstrap, [topics.TopicSpec(topic, partitions=partitions)])
    cores = os.cpu_count() or 1
    try:
        fill_s = await fill(base.kafka_bootstrap, topic, n)
        print(f"filled {n:,} records into {partitions} partitions in {fill_s:.1f}s ({cores} CPU cores)", flush=True)
        bare_s, bare_cpu = await bare_drain(base.kafka_bootstrap, topic, n)
        print(f"bare aiokafka consumer: {n / bare_s:,.0f} records/s ({bare_s:.1f}s); CPU per record {fmt_cpu(bare_cpu, n)}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            audit_s, stats, audit_cpu = await audit_ingest(namespace, schema, n, Path(tmp), replicas)
        print(
            f"audit ingest ({replicas} replica{'s' if replicas > 1 else ''}): {n / audit_s:,.0f} entries/s ({audit_s:.1f}s); CPU per entry {fmt_cpu(audit_cpu, n)}",
            flush=True,
        )
        print(
            f"  this process: {stats['batches_here']} batches; "
            f"building {stats['build_s_here']}s, appending {stats['append_s_here']}s; audit_log {stats['table_mb']} MB",
            flush=True,
        )
        busy = sum(audit_cpu.used.values()) / audit_s
        print(f"  cores busy during ingest: {busy:.2f} of {cores}", flush=True)
        copy_s, copied, nodes, copy_cpu = await copy_baseline(
            base.database_url, schema, audit_settings(namespace, Path(".")).ingest_max_records
        )
        print(
            f"bare asyncpg COPY of the same rows ({copied:,} entries + {nodes:,} tree nodes): {copied / copy_s:,.0f} entries/s ({copy_s:.1f}s); "
            f"CPU per entry {fmt_cpu(copy_cpu, copied)}",
            flush=True,
        )
        ratio_copy = (n / audit_s) / (copied / copy_s)
        ratio = (n / audit_s) / (n / bare_s)
        print(f"ratio audit/COPY: {ratio_copy:.2f} (goal >= 0.5); audit/bare consumer: {ratio:.2f}", flush=True)
        return {
            "n": n,
            "partitions": partitions,
            "replicas": replicas,
            "cpus": cores,
            "bare_per_s": round(n / bare_s),
            "audit_per_s": round(n / audit_s),
            "copy_per_s": round(copied / copy_s),
            "copy_tree_nodes": nodes,
            "ratio_audit_to_copy": round(ratio_copy, 3),
            "ratio_audit_to_bare": round(ratio, 3),
            "bare_cpu_us_per_record": bare_cpu.per_record_us(n),
            "audit_cpu_us_per_entry": audit_cpu.per_record_us(n),
            "copy_cpu_us_per_entry": copy_cpu.per_record_us(copied),
            "cores_busy_during_ingest": round(busy, 2),
            **stats,
        }
    finally:
        if not keep:
            await cleanup(base, namespace, schema)


def fmt_cpu(meter: CpuMeter, n: int) -> str:
    us = meter.per_record_us(n)
    return ", ".join(f"{g} {v:.1f} us" for g, v in us.items()) + f" (total {sum(us.values()):.1f} us)"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--full", action="store_true", help="1,000,000 events")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--replicas", type=int, default=1, help="audit processes sharing the consumer group")
    p.add_argument("--keep", action="store_true", help="keep the topic and schema")
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    a = p.parse_args()
    result = asyncio.run(main(1_000_000 if a.full else a.n, a.partitions, max(1, a.replicas), a.keep))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
