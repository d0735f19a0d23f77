"""Audit query latency on a large log: client filter and inclusion proof (p50/p95/p99).

    python -m bench.audit_queries            # 100,000 entries
    python -m bench.audit_queries --full     # 1,000,000 entries
    python -m bench.audit_queries --n 20000 --requests 500

Fills a fresh schema through the service's own append path (entries built from realistic
CloudEvents records, appended in batches with their tree nodes; Kafka is not involved, see
bench.audit_ingest for that), signs a tree head, then times HTTP requests through the ASGI app
(FastAPI, problem handling, JSON) one after another:

- `GET /v1/audit/entries?client_id=<random client>` (about 20 entries per client);
- `GET /v1/audit/entries/<random index>/inclusion-proof` against the latest signed head, once with
  the in-process node cache disabled (every node read from PostgreSQL) and once with it warm.

Goal from the issue: p99 < 50 ms for both at 1,000,000 entries. The schema and the topics the audit
runtime creates in the benchmark's namespace are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts import encode, new_event
from contracts.events import ReferralAccepted, ReferralSent
from lotse_kit.settings import KitSettings
from tests.fixtures import as_org

ORGS = ["jobcenter-paderborn", "caritas-paderborn", "diakonie-paderborn", "awo-paderborn", "invia-paderborn", "ki-paderborn"]
# Signed by an in-process issuer that the service trusts through LOTSE_OIDC_* (set when it is first used).
HEADERS = as_org("datenschutz-kreis", "auditor")


def templates(k: int = 200):
    """A few hundred encoded events; records reuse them with fresh positions (building is what costs)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    out = []
    for i in range(k):
        frm, to = ORGS[i % len(ORGS)], ORGS[(i + 1) % len(ORGS)]
        cid = uuid.uuid4()
        data = (
            ReferralAccepted(client_id=cid, referral_id=uuid.uuid4(), to_org=to, from_org=frm, accepted_at=now)
            if i % 3 == 2
            else ReferralSent(client_id=cid, referral_id=uuid.uuid4(), from_org=frm, to_org=to, service="beratung", sent_at=now)
        )
        out.append(encode(new_event(data, source="/lotse/intake", acting_org=frm)))
    return out


def records(start: int, count: int, clients: list[uuid.UUID], tmpl, topic: str):
    from services.audit.domain.entries import Record

    for i in range(start, start + count):
        t = tmpl[i % len(tmpl)]
        client = str(clients[i % len(clients)])
        headers = [(k, client.encode() if k == "ce_subject" else v) for k, v in t.headers]
        value = t.value.replace(t.key, client.encode()) if t.key else t.value
        yield Record(topic, i % 3, i, 1_700_000_000_000 + i, client.encode(), value, headers)


async def fill(deps, n: int, clients: list[uuid.UUID], batch: int = 5000) -> float:
    from services.audit.domain.commands import AppendEntries
    from services.audit.domain.entries import build_entries
    from services.audit.handlers import handle

    tmpl = templates()
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        recs = list(records(start, min(batch, n - start), clients, tmpl, "lotse.referrals.v1"))
        await handle(AppendEntries(build_entries(recs, namespace="")), deps)
        if start and start % 100_000 == 0:
            print(f"  {start:,} entries ({start / (time.perf_counter() - t0):,.0f}/s)", flush=True)
    return time.perf_counter() - t0


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


async def timed(client: httpx.AsyncClient, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t = time.perf_counter()
        r = await client.get(url, headers=HEADERS)
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return out


def summary(name: str, samples: list[float]) -> dict:
    d = {
        "p50_ms": round(pct(samples, 50), 2),
        "p95_ms": round(pct(samples, 95), 2),
        "p99_ms": round(pct(samples, 99), 2),
        "mean_ms": round(statistics.mean(samples) * 1000, 2),
        "requests": len(samples),
    }
    print(f"{name:34s} p50 {d['p50_ms']:6.2f} ms  p95 {d['p95_ms']:6.2f} ms  p99 {d['p99_ms']:6.2f} ms  (n={len(samples)})", flush=True)
    return d


async def main(n: int, requests: int, keep: bool) -> dict:
    from services.audit.bootstrap import bootstrap
    from services.audit.config import AuditSettings

    logging.basicConfig(level=logging.WARNING)
    run = uuid.uuid4().hex[:8]
    schema = f"audit_qbench_{run}"
    namespace = f"qbench{run}."
    clients = [uuid.uuid4() for _ in range(max(1, n // 20))]
    result: dict = {"n": n, "cpus": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for cache in (0, 200_000):
                settings = AuditSettings(
                    topic_namespace=namespace,
                    tree_head_interval_s=3600,
                    signing_key_file=Path(tmp) / "k.pem",
                    node_cache_size=cache,
                    log_level="WARNING",
                )
                app = bootstrap(settings, schema=schema, signing_key=Ed25519PrivateKey.generate())
                async with app.router.lifespan_context(app):
                    deps = app.state.deps
                    if cache == 0:
                        took = await fill(deps, n, clients)
                        print(f"filled {n:,} entries in {took:.1f}s ({n / took:,.0f}/s)", flush=True)
                        result["fill_per_s"] = round(n / took)
                        await deps.db.pool.execute("ANALYZE audit_log")
                    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
                        await client.post("/v1/audit/tree-head", headers=HEADERS)
                        rng = random.Random(42 + cache)
                        if cache == 0:
                            urls = [f"/v1/audit/entries?client_id={rng.choice(clients)}" for _ in range(requests)]
                            await timed(client, urls[:20])  # warm up connections and plans
                            result["client_filter"] = summary("client filter", await timed(client, urls))
                        urls = [f"/v1/audit/entries/{rng.randrange(n)}/inclusion-proof" for _ in range(requests)]
                        key = "inclusion_proof_no_cache" if cache == 0 else "inclusion_proof_cached"
                        if cache:
                            await timed(client, urls)  # warm the node cache with one pass
                        else:
                            await timed(client, urls[:20])
                        result[key] = summary(
                            f"inclusion proof ({'node cache warm' if cache else 'no node cache'})", await timed(client, urls)
                        )
    finally:
        if not keep:
            from bench.audit_ingest import delete_namespace_topics

            await delete_namespace_topics(KitSettings(), namespace)  # the platform topics the audit runtime created
            conn = await asyncpg.connect(KitSettings().database_url)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                await conn.execute(f"DROP ROLE IF EXISTS lotse_{schema}")
            finally:
                await conn.close()
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--full", action="store_true", help="1,000,000 entries")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--keep", action="store_true", help="keep the schema")
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    a = p.parse_args()
    res = asyncio.run(main(1_000_000 if a.full else a.n, a.requests, a.keep))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
