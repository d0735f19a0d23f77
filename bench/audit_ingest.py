"""Audit ingest rate vs a bare aiokafka consumer draining the same backlog, in the same run.

    python -m bench.audit_ingest            # 100,000 events (a few minutes on 2 cores)
    python -m bench.audit_ingest --full     # 1,000,000 events
    python -m bench.audit_ingest --n 20000 --partitions 3

Fills one topic (`<ns>lotse.referrals.v1`, realistic CloudEvents: referral sent/accepted) with N
records, then
1. a bare AIOKafkaConsumer (own group, earliest, getmany, no processing) drains it;
2. the audit service (bootstrap, real PostgreSQL, fresh schema) ingests it: entry building,
   SHA-256 leaves, append with tree nodes, offset commits.
Rates are counted from the first record seen to the last (consumer-group join excluded for both).
Goal from the issue: audit rate >= 0.5 x bare rate. Topics, schema and role are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from contracts import encode, new_event, topics
from contracts.events import ReferralAccepted, ReferralSent
from lotse_kit.kafka import ensure_topics
from lotse_kit.settings import KitSettings

ORGS = ["jobcenter-paderborn", "caritas-paderborn", "diakonie-paderborn", "awo-paderborn", "invia-paderborn", "ki-paderborn"]


def events(n: int):
    clients = [uuid.uuid4() for _ in range(max(1, n // 20))]
    now = datetime.now(UTC)
    for i in range(n):
        client = clients[i % len(clients)]
        frm, to = ORGS[i % len(ORGS)], ORGS[(i + 1) % len(ORGS)]
        if i % 3 == 2:
            data = ReferralAccepted(client_id=client, referral_id=uuid.uuid4(), to_org=to, from_org=frm, accepted_at=now)
        else:
            data = ReferralSent(client_id=client, referral_id=uuid.uuid4(), from_org=frm, to_org=to, service="migrationsberatung",
                                need="language_course", requested_categories=["identity", "needs"], sent_at=now)
        yield encode(new_event(data, source="/lotse/intake", acting_org=frm))


async def fill(bootstrap: str, topic: str, n: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024, compression_type=None)
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


async def bare_drain(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
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
        await consumer.stop()
    return time.perf_counter() - (first or time.perf_counter())


async def audit_ingest(settings, schema: str, n: int, key_dir: Path) -> tuple[float, dict]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.audit.bootstrap import bootstrap

    app = bootstrap(settings, schema=schema, signing_key=Ed25519PrivateKey.generate(), org_names={})
    async with app.router.lifespan_context(app):
        pool = app.state.runtime.pool
        first = None
        while True:
            size = await pool.fetchval("SELECT coalesce(max(idx) + 1, 0) FROM audit_log")
            if size and first is None:
                first = time.perf_counter()
            if size >= n:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - (first or time.perf_counter())
        ing = app.state.ingest
        stats = {"batches": ing.batches, "build_s": round(ing.build_seconds, 2), "append_s": round(ing.append_seconds, 2), "table_mb": round(await pool.fetchval("SELECT pg_total_relation_size('audit_log')") / 1e6, 1)}
    return elapsed, stats


async def cleanup(s: KitSettings, topic: str, schema: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    except Exception as exc:  # noqa: BLE001
        print(f"(could not delete topic {topic}: {exc})", file=sys.stderr)
    finally:
        await admin.close()
    conn = await asyncpg.connect(s.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(f"DROP ROLE IF EXISTS lotse_{schema}")
    finally:
        await conn.close()


async def main(n: int, partitions: int, keep: bool) -> dict:
    from services.audit.config import AuditSettings

    logging.basicConfig(level=logging.WARNING)
    run = uuid.uuid4().hex[:8]
    namespace = f"bench{run}."
    schema = f"audit_bench_{run}"
    base = KitSettings()
    topic = namespace + topics.REFERRALS
    await ensure_topics(base.kafka_bootstrap, [topics.TopicSpec(topic, partitions=partitions)])
    try:
        fill_s = await fill(base.kafka_bootstrap, topic, n)
        print(f"filled {n:,} records in {fill_s:.1f}s", flush=True)
        bare_s = await bare_drain(base.kafka_bootstrap, topic, n)
        print(f"bare aiokafka consumer: {n / bare_s:,.0f} records/s ({bare_s:.1f}s)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            settings = AuditSettings(topic_namespace=namespace, tree_head_interval_s=3600, network_file=None,
                                     signing_key_file=Path(tmp) / "k.pem", log_level="WARNING")
            audit_s, stats = await audit_ingest(settings, schema, n, Path(tmp))
        print(f"audit ingest:           {n / audit_s:,.0f} entries/s ({audit_s:.1f}s, {stats['batches']} batches; building {stats['build_s']}s, appending {stats['append_s']}s; audit_log {stats['table_mb']} MB)", flush=True)
        ratio = (n / audit_s) / (n / bare_s)
        print(f"ratio audit/bare: {ratio:.2f} (goal >= 0.5)", flush=True)
        return {"n": n, "partitions": partitions, "bare_per_s": round(n / bare_s), "audit_per_s": round(n / audit_s),
                "ratio": round(ratio, 3), "cpus": os.cpu_count(), **stats}
    finally:
        if not keep:
            await cleanup(base, topic, schema)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--full", action="store_true", help="1,000,000 events")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the topic and schema")
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    a = p.parse_args()
    result = asyncio.run(main(1_000_000 if a.full else a.n, a.partitions, a.keep))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
