"""Decision API latency at a fixed request rate, over real HTTP on loopback.

    .venv/bin/python -m bench.consent_decisions [--rate 500] [--seconds 20] [--write-docs]

Starts the consent service twice as `python -m services.consent` under uvicorn
(one process with the decision cache, one without, both on the same fresh
schema and topic namespace, like two replicas), seeds consents, asks once
for every client (steady-state cache), and drives each endpoint open-loop at
`--rate` requests/s, alternating baseline and decisions in slices: request i is due at t0 + i/rate
and its latency is measured from that due time, so a client or server that
falls behind shows up in the numbers instead of hiding (no coordinated
omission). Baseline: /health/live of the same process, which goes through the
same uvicorn/FastAPI stack without touching the database.

Bounded: every phase sends at most rate × seconds requests and stops after
seconds + 10 s whatever happens. Cleans up its schema and topics afterwards.
Needs the local stack (Kafka, PostgreSQL) running.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from contracts import topics
from lotse_kit.kafka import admin_client, ensure_topics
from tests.fixtures import as_org, service_token

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "consent.md"
MARK_BEGIN = "<!-- bench:consent_decisions:begin -->"
MARK_END = "<!-- bench:consent_decisions:end -->"
# Signed by an in-process issuer; the service processes started below trust it through LOTSE_OIDC_* (inherited).
AS_JOBCENTER = as_org("jobcenter-kreis-paderborn")
# The decision API answers service tokens only; every measured request carries intake's (the health
# baseline too, which ignores it), so token verification is part of what is measured.
AS_INTAKE = service_token("intake")
RECIPIENTS = ["caritas-paderborn", "diakonie-paderborn-hoexter", "awo-kreis-paderborn", "in-via-paderborn", "ki-kreis-paderborn"]


@dataclass
class Result:
    name: str
    sent: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies_ms)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, round(p / 100 * len(xs) + 0.5) - 1)]

    def merge(self, other: Result) -> None:
        self.sent += other.sent
        self.errors += other.errors
        self.elapsed_s += other.elapsed_s
        self.latencies_ms += other.latencies_ms

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0


def env_for(port: int, namespace: str, schema: str, cache_size: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LOTSE_TOPIC_NAMESPACE=namespace,
        LOTSE_CONSENT_DB_SCHEMA=schema,
        LOTSE_CONSENT_DB_ROLE="lotse_consent_bench",
        LOTSE_CONSENT_HTTP_PORT=str(port),
        LOTSE_CONSENT_DECISION_CACHE_SIZE=str(cache_size),
        LOTSE_NETWORK_FILE=str(REPO / "deploy" / "demo" / "network.yaml"),
        LOTSE_LOG_LEVEL="WARNING",
        LOTSE_CONSENT_EXPIRY_INTERVAL_S="60",
    )
    return env


def start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.consent"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """The server gets SIGTERM when the benchmark process ends, however it ends (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


async def wait_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as c:
        while time.monotonic() < deadline:
            try:
                if (await c.get("/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{base} not ready within {timeout}s")


async def seed(base: str, clients: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(clients)]
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        sem = asyncio.Semaphore(8)

        async def grant(cid: uuid.UUID) -> None:
            body = {
                "client_id": str(cid),
                "recipients": random.sample(RECIPIENTS, 2),
                "purposes": ["referral", "case_coordination"],
                "categories": ["identity", "contact", "needs"],
                "form": "written",
                "information_language": "uk",
                "information": {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True},
            }
            async with sem:
                r = await c.post("/v1/consents", json=body, headers=AS_JOBCENTER)
                r.raise_for_status()

        await asyncio.gather(*(grant(cid) for cid in ids))
    return ids


class Http11Pool:
    """A minimal keep-alive HTTP/1.1 GET client: a general-purpose client's overhead would be measured instead of the server's."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._all: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        for _ in range(self.size):
            r, w = await asyncio.open_connection(self.host, self.port)
            self._all.append(w)
            self._idle.put_nowait((r, w))

    async def get(self, path: str) -> int:
        r, w = await self._idle.get()
        try:
            w.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: {AS_INTAKE['Authorization']}\r\n\r\n".encode())
            head = await r.readuntil(b"\r\n\r\n")
            m = _CONTENT_LENGTH.search(head)
            await r.readexactly(int(m.group(1)) if m else 0)
            status = int(head[9:12])
        except BaseException:
            w.close()
            r, w = await asyncio.open_connection(self.host, self.port)
            self._all.append(w)
            raise
        finally:
            self._idle.put_nowait((r, w))
        return status

    async def close(self) -> None:
        for w in self._all:
            w.close()


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


async def drive(name: str, port: int, paths: list[str], rate: float, seconds: float) -> Result:
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    pool = Http11Pool("127.0.0.1", port, 32)
    await pool.open()
    try:
        # Warm the connections and the code path without measuring.
        await asyncio.gather(*(pool.get(paths[i % len(paths)]) for i in range(200)))
        clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution only
        t0 = clock() + 0.05
        hard_stop = t0 + seconds + 10

        async def one(i: int) -> None:
            nonlocal errors
            due = t0 + i / rate
            try:
                ok = await pool.get(paths[i % len(paths)]) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
            if ok:
                latencies.append((clock() - due) * 1000)
            else:
                errors += 1

        tasks = []
        # The load generator must not pause itself: no garbage collection while it measures (bounded run).
        gc.collect()
        gc.disable()
        for i in range(total):
            delay = t0 + i / rate - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if clock() > hard_stop:
                break
            tasks.append(asyncio.create_task(one(i)))
        _, pending = await asyncio.wait(tasks, timeout=max(0.1, hard_stop - clock()))
        for t in pending:
            t.cancel()
        elapsed = clock() - t0
        gc.enable()
    finally:
        await pool.close()
    return Result(name, len(tasks), errors + len(pending), elapsed, latencies)


async def warm(port: int, paths: list[str]) -> None:
    pool = Http11Pool("127.0.0.1", port, 8)
    await pool.open()
    try:
        for i in range(0, len(paths), 8):
            await asyncio.gather(*(pool.get(p) for p in paths[i : i + 8]))
    finally:
        await pool.close()


def decision_paths(clients: list[uuid.UUID], n: int = 5000) -> list[str]:
    rnd = random.Random(7)
    paths = []
    for _ in range(n):
        cid = rnd.choice(clients)
        recipient = rnd.choice(RECIPIENTS)  # 2 of 5 recipients are covered: a mix of allowed and refused
        paths.append(f"/v1/decisions?client_id={cid}&recipient={recipient}&purpose=referral&category=identity&category=contact")
    return paths


async def cleanup(admin_dsn: str, bootstrap: str, schema: str, namespace: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(namespace)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(results: list[tuple[str, Result, Result]]) -> str:
    lines = [
        "| server | endpoint | requests | achieved req/s | errors | p50 ms | p90 ms | p99 ms | max ms | p99 / baseline p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, base, dec in results:
        for r in (base, dec):
            ratio = r.pct(99) / base.pct(99)
            lines.append(
                f"| {server} | {r.name} | {r.sent} | {r.rate:.0f} | {r.errors} | {r.pct(50):.2f} | {r.pct(90):.2f} | "
                f"{r.pct(99):.2f} | {max(r.latencies_ms, default=float('nan')):.2f} | {ratio:.2f} |"
            )
    return "\n".join(lines)


async def main() -> int:
    ap = argparse.ArgumentParser(description="Consent decision API latency benchmark")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--slices", type=int, default=4, help="alternate baseline and decisions this many times")
    ap.add_argument("--port", type=int, default=18002)
    ap.add_argument("--write-docs", action="store_true", help="write the results into docs/consent.md")
    args = ap.parse_args()
    if args.rate * args.seconds > 50_000:
        ap.error("at most 50,000 requests per phase")

    admin_dsn = os.environ.get("LOTSE_DATABASE_URL", "postgresql://lotse:lotse@127.0.0.1:5432/lotse")
    bootstrap = os.environ.get("LOTSE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    run = uuid.uuid4().hex[:8]
    namespace, schema = f"bench-consent-{run}.", f"consent_bench_{run}"
    await ensure_topics(bootstrap, [topics.TopicSpec(namespace + t.name, 1, t.config) for t in topics.platform_topics()])

    results: list[tuple[str, Result, Result]] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for server, cache_size, port in (("cache on", 50_000, args.port), ("cache off", 0, args.port + 1)):
            proc = start_server(env_for(port, namespace, schema, cache_size))
            procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base)
            if not results:
                print(f"seeding {args.clients} consents ...", flush=True)
                clients = await seed(base, args.clients)
                paths = decision_paths(clients)
            # Every client once, so the cache-on rows measure the steady state rather than first contact.
            await warm(port, paths)
            # Alternate baseline and decisions in slices so that background load on the shared machine
            # falls on both alike, rather than on whichever happened to run at the wrong moment.
            slice_s = args.seconds / args.slices
            baseline, decisions = Result("GET /health/live", 0, 0, 0.0, []), Result("GET /v1/decisions", 0, 0, 0.0, [])
            for k in range(args.slices):
                print(
                    f"[{server}] slice {k + 1}/{args.slices}: {slice_s:.1f}s each of /health/live and /v1/decisions at {args.rate:.0f} req/s",
                    flush=True,
                )
                baseline.merge(await drive(baseline.name, port, ["/health/live"], args.rate, slice_s))
                decisions.merge(await drive(decisions.name, port, paths, args.rate, slice_s))
            results.append((server, baseline, decisions))
            stop(proc)
    finally:
        for p in procs:
            stop(p)
        await cleanup(admin_dsn, bootstrap, schema, namespace)

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
    )
    header = (
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{args.rate:.0f} req/s open-loop for {args.seconds:.0f} s per row (in {args.slices} alternating slices), "
        f"{args.clients} clients with consents, "
        "client and server on the same machine as Kafka and PostgreSQL. Latency is measured from each request's due time."
    )
    out = header + "\n\n" + table(results)
    cached = results[0][2]
    verdict = f"\n\nDecision API p99 with the cache: **{cached.pct(99):.2f} ms** (target: under 5 ms at 500 req/s)."
    out += verdict
    print(out)
    if args.write_docs:
        text = DOC.read_text()
        block = f"{MARK_BEGIN}\n{out}\n{MARK_END}"
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: block, text, flags=re.S)
        DOC.write_text(text)
        print(f"written to {DOC.relative_to(REPO)}")
    return 0 if all(r.errors == 0 for _, a, b in results for r in (a, b)) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM runs the cleanup like Ctrl-C
    try:
        import uvloop  # the load generator should cost as little CPU as it can: it shares the machine with the server
    except ImportError:
        uvloop = None
    sys.exit(uvloop.run(main()) if uvloop else asyncio.run(main()))
