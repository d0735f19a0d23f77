"""The consent gate's batch pre-check read (`prepare_gate_batch`): CPU and statements per batch, before/after issue 14.

    .venv/bin/python -m bench.consent_gate [--seconds 10] [--batch 10] [--slices 4]

In this process against PostgreSQL only (no service, no Kafka), on a fresh schema with the consent migrations,
seeded with clients, consents, stored keys and decided requests. Before: the three reads the prepare made until
issue 14 (decided requests, the clients' consents and erasure, the recipients' stored keys; their SQL as it was);
after: `repository.gate_batch_state`, one statement. Both decode into the same results (checked once), are
alternated in slices on one dedicated connection, and are reported per batch: statements, this process's CPU
(`time.process_time`), the PostgreSQL backend's CPU (utime + stime from /proc) and wall time, with the ratios
after/before. Bounded by --seconds; drops its schema afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from lotse_kit.db import load_migrations, provision
from services.consent.adapters import repository as repo
from services.consent.bootstrap import MIGRATIONS

ORGS = ["caritas-paderborn", "diakonie-paderborn-hoexter", "awo-kreis-paderborn", "in-via-paderborn", "ki-kreis-paderborn"]


async def before(conn: asyncpg.Connection, request_ids: list[uuid.UUID], client_ids: list[uuid.UUID], orgs: list[str]) -> Any:
    """The prepare's three reads as they were before issue 14."""
    rows = await conn.fetch("SELECT request_id FROM disclosures WHERE request_id = ANY($1::uuid[])", list(dict.fromkeys(request_ids)))
    decided = {r["request_id"] for r in rows}
    rows = await conn.fetch(
        f"""SELECT k.client_id AS k_client_id, v.erased_at AS v_erased_at, {repo._COLUMNS}
              FROM unnest($1::uuid[]) AS k (client_id)
              LEFT JOIN client_versions v ON v.client_id = k.client_id
              LEFT JOIN consents c ON c.client_id = k.client_id
             ORDER BY c.granted_at DESC, c.consent_id""",
        list(dict.fromkeys(client_ids)),
    )
    consents: dict[uuid.UUID, list[Any]] = {}
    erased: dict[uuid.UUID, Any] = {}
    for r in rows:
        erased[r["k_client_id"]] = r["v_erased_at"]
        found = consents.setdefault(r["k_client_id"], [])
        if r["consent_id"] is not None:
            found.append(repo._consent(r))
    rows = await conn.fetch(
        """SELECT org, kid, use, jwk::text AS jwk, source, registered_at, registered_by, retired_at
             FROM org_keys WHERE org = ANY($1::text[]) ORDER BY registered_at DESC, kid""",
        list(dict.fromkeys(orgs)),
    )
    stored: dict[str, list[Any]] = {org: [] for org in orgs}
    for r in rows:
        stored[r["org"]].append(repo._key(r))
    return repo.GateBatchState(decided, consents, erased, stored)


async def after(conn: asyncpg.Connection, request_ids: list[uuid.UUID], client_ids: list[uuid.UUID], orgs: list[str]) -> Any:
    return await repo.gate_batch_state(conn, request_ids, client_ids, orgs)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seed(conn: asyncpg.Connection, clients: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    ids = [uuid.uuid4() for _ in range(clients)]
    now = datetime.now(UTC)
    consents = [(uuid.uuid4(), c, random.sample(ORGS, 2), now) for c in ids]
    await conn.executemany(
        """INSERT INTO consents (consent_id, client_id, collecting_org, recipients, purposes, categories, legal_basis, form,
               informed_purpose, informed_consequences, informed_right_to_withdraw, information_language, interpreter_used,
               notice_version, granted_at, valid_until)
           VALUES ($1, $2, 'jobcenter-kreis-paderborn', $3, '{referral,case_coordination}', '{identity,contact,needs}',
               '{GDPR Art. 6(1)(a),§67b SGB X}', 'written', true, true, true, 'uk', false, 'bench',
               $4::timestamptz, $4::timestamptz + interval '365 days')""",
        consents,
    )
    await conn.executemany("INSERT INTO client_versions (client_id, version) VALUES ($1, 1)", [(c,) for c in ids])
    jwk = json.dumps(
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }
    )
    for org in ORGS:
        for k in range(2):
            await conn.execute(
                """INSERT INTO org_keys (org, kid, use, jwk, source, registered_at, registered_by)
                   VALUES ($1, $2, $3, $4::jsonb, 'api', now(), 'bench')""",
                org,
                f"{org}-{k}",
                "enc" if k == 0 else "sig",
                jwk,
            )
    # Decided requests: a ledger in use, and some of each batch's requests re-sent.
    decided = [uuid.uuid4() for _ in range(clients)]
    await conn.executemany(
        """INSERT INTO disclosures (request_id, client_id, from_org, recipient, purpose, categories, outcome, consent_id, reason,
               missing_categories, payload_sha256, decided_at)
           VALUES ($1, $2, 'jobcenter-kreis-paderborn', $3, 'referral', '{identity}', 'made', $4, 'granted', '{}', 'bench', now())""",
        [(rid, c[1], c[2][0], c[0]) for rid, c in zip(decided, consents, strict=True)],
    )
    await conn.execute("ANALYZE consents; ANALYZE client_versions; ANALYZE disclosures; ANALYZE org_keys")
    return ids, decided


async def main() -> int:
    ap = argparse.ArgumentParser(description="Consent gate batch pre-check read, before/after issue 14")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=10, help="requests per batch")
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--slices", type=int, default=4)
    args = ap.parse_args()
    admin_dsn = os.environ.get("LOTSE_DATABASE_URL", "postgresql://lotse:lotse@127.0.0.1:5432/lotse")
    schema = f"consent_bench_{uuid.uuid4().hex[:8]}"
    await provision(
        admin_dsn, schema=schema, role="lotse_consent_bench", password=uuid.uuid4().hex, migrations=load_migrations("consent", MIGRATIONS)
    )
    conn = await asyncpg.connect(admin_dsn, server_settings={"search_path": schema, "application_name": "bench-consent-gate"})
    try:
        clients, decided = await seed(conn, args.clients)
        rnd = random.Random(7)
        batches = []
        for _ in range(500):
            cs = rnd.sample(clients, args.batch)
            rids = [uuid.uuid4() for _ in cs]
            rids[0] = rnd.choice(decided)  # one re-sent request per batch
            batches.append((rids, cs, sorted({rnd.choice(ORGS) for _ in cs})))
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.fetch("SELECT $1::uuid[], $2::bigint[]", [], [])  # asyncpg's one-time type introspection, not measured
        for batch in batches[:20]:  # the same answers
            x, y = await before(conn, *batch), await after(conn, *batch)
            assert (x.decided, x.consents, x.erased, x.stored_keys) == (y.decided, y.consents, y.erased, y.stored_keys)
        sides = {"before": before, "after": after}
        statements: dict[str, int] = {}
        for side, read in sides.items():
            seen: list[str] = []

            def log(q: Any, seen: list[str] = seen) -> None:
                seen.append(q.query)

            conn.add_query_logger(log)
            await read(conn, *batches[0])
            await asyncio.sleep(0.05)  # asyncpg calls query loggers soon after, not during, the statement
            conn.remove_query_logger(log)
            statements[side] = len(seen)
        acc = {side: [0.0, 0.0, 0.0, 0] for side in sides}
        per_slice = max(50, int(args.seconds / (2 * args.slices) / 0.0006))  # ~0.6 ms a batch: --seconds in all
        for k in range(args.slices):
            for side in list(sides) if k % 2 == 0 else list(reversed(sides)):
                gc.collect()
                c0, b0, w0 = time.process_time(), _proc_cpu_s(backend), time.perf_counter()
                for i in range(per_slice):
                    await sides[side](conn, *batches[i % len(batches)])
                acc[side][0] += time.process_time() - c0
                acc[side][1] += _proc_cpu_s(backend) - b0
                acc[side][2] += time.perf_counter() - w0
                acc[side][3] += per_slice
        cpu = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
        )
        print(
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), batches of {args.batch} requests "
            f"({args.clients} clients), sequential on one connection, before/after alternated in {args.slices} slices.\n"
        )
        print("| side | batches | statements / batch | client CPU µs / batch | PostgreSQL backend CPU µs / batch | wall µs / batch |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for side, (c, b, w, n) in acc.items():
            print(f"| {side} | {n} | {statements[side]} | {c / n * 1e6:.0f} | {b / n * 1e6:.0f} | {w / n * 1e6:.0f} |")
        a, z = acc["after"], acc["before"]
        print(
            f"\nafter / before: client CPU {a[0] / z[0]:.2f}x, PostgreSQL CPU {a[1] / z[1]:.2f}x, wall {a[2] / z[2]:.2f}x, "
            f"statements {statements['before']} -> {statements['after']} per batch"
        )
    finally:
        await conn.close()
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
