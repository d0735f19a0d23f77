"""End-to-end referral throughput of the running local network, stepped, against a floor pipeline in the same run.

    make bench-e2e                                    # after `make up`: about 10 minutes on 2 cores
    .venv/bin/python -m bench.e2e --quick             # about 2 minutes
    .venv/bin/python -m bench.e2e --rates 20,40 --step-seconds 60 --no-floor
    .venv/bin/python -m bench.e2e --profile 20        # py-spy on each service under 20 referrals/s, no stepping

What it does, on the services `make up` started (ports 8001-8004) and their Kafka, PostgreSQL and Keycloak:

1. **Prepare** (not measured): the partner systems of Caritas, AWO and the KI register their public
   keys with the consent API (their keys in `.run/partners/<org>/keys.json`, as `lotse demo seed`
   keeps them); the Jobcenter's caseworker registers `--clients` clients and records for each a
   written consent to referrals and notifications, for the identity and contact categories, naming
   the three partners.
2. **Partners**: one process per partner organisation (`bench/_partner.py`), with the partner's own
   Kafka principal and keys, reads its inbox, opens each sealed referral and accepts it on its outbox.
3. **Steps**: for each offered rate, the caseworker sends `POST /v1/clients/{id}/referrals` on an
   open-loop schedule (request i due at t0 + i/rate; latency measured from the due time, so nothing
   is hidden by a slow reply: no coordinated omission), cycling through the clients and the three
   needs (→ Caritas, AWO, KI by the process plans). Then the same rate is offered to the **floor**
   (`bench/floor.py`): the same hops with empty business logic, same libraries, same security.
4. **Per referral**: the HTTP latency; the time to the record on the partner's inbox (from the due time,
   as the partner process saw it arrive); the time to the inbox record's audit entry (`logged_at` of
   its row in the audit log); the time until intake recorded the partner's acceptance
   (`referrals.updated_at`). The last two are read from PostgreSQL once per step, after the step's
   CPU window has closed, so reading them costs the measured system nothing (polling the audit API
   during the step would). `logged_at` is the audit append transaction's start (`now()`), a few
   milliseconds before its commit: that figure is a lower bound by the length of one append.
   Also the time until the first signed tree head whose tree size covers that entry (`signed_at`
   of the row in `audit.tree_heads`; column `sth`), read the same way.
5. **CPU** per process group from /proc (`bench/_procs.py`): each service, PostgreSQL (its backends
   are also attributed to the service that opened them by `application_name`), Kafka, Keycloak, the
   mail sink, the partner processes, the floor's processes and this load generator. A step's CPU
   window closes once every referral reached its inbox and the machine is back to its idle rate
   (the accept loop, notifications and audit of the step included). CPU per referral is reported
   net of the idle rate measured before the first step (the services' polls, relays and workers),
   and the ratio to the floor is the sum over the system's groups (services or floor processes,
   plus PostgreSQL, Kafka and Keycloak) divided by the floor's. Partners, mail sink and load
   generator are shown but counted on neither side.
6. **Goal** (issue 14) per step: HTTP p99 < 100 ms, referral → inbox p99 < 250 ms, no error and no
   referral missing from its inbox at the end of the step. Stepping stops after `--stop-after`
   consecutive steps that miss it.

Results: `bench/results/e2e-<UTC date and time>.json` and `.png` (latency percentiles against the
offered rate; CPU per referral per process group); `--write-readme` puts the table into
bench/README.md. The run leaves its clients, referrals and audit entries in the running network
(the audit log is append-only); the floor's topics, principals and schema are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._load import HttpPool, Schedule, drive, summary
from bench._procs import Group, ProcMeter, Snapshot, cpu_between, load_average, local_stack_groups, machine, per_process_between

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"
MARK_BEGIN, MARK_END = "<!-- bench:e2e:begin -->", "<!-- bench:e2e:end -->"

DEFAULT_RATES = [10, 20, 30, 40, 60, 80, 100, 120, 150, 200, 250, 300]
QUICK_RATES = [10, 30, 60, 100, 150, 200]
SENDER = "jobcenter-kreis-paderborn"
# need -> receiving partner, by the demo network's process plans (deploy/demo/network.yaml)
NEEDS = {
    "integration_course": "caritas-paderborn",
    "language_course": "awo-kreis-paderborn",
    "recognition_of_qualifications": "ki-kreis-paderborn",
}
PARTNERS = tuple(NEEDS.values())
LANGUAGES = ["uk", "ar", "de", "en", "tr", "ru", "fa"]
CATEGORIES = ["identity", "contact"]
SERVICES = ("intake", "consent", "notifications", "audit")
SHARED = ("postgres", "kafka", "keycloak")
LOTSE_SYSTEM = (*SERVICES, *SHARED)
FLOOR_SYSTEM = ("floor-api", "floor-consumer", *SHARED)
SIDE_GROUPS = ("mailsink", "partners", "floor-partner", "loadgen")
GOAL_HTTP_P99_MS, GOAL_INBOX_P99_MS = 100.0, 250.0
INFO = {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True}


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


# ---------------------------------------------------------------- tokens
class CaseworkerToken:
    """The sending caseworker's access token (password grant, lives 5 minutes): renewed between steps."""

    def __init__(self) -> None:
        self.token = ""
        self.at = 0.0

    async def fresh(self, max_age_s: float = 120.0) -> str:
        if time.monotonic() - self.at > max_age_s:
            from lotse_cli.dev import find_user, user_token

            self.token = await asyncio.to_thread(user_token, find_user(SENDER, "caseworker"))
            self.at = time.monotonic()
        return self.token


# ---------------------------------------------------------------- subprocesses that report arrivals
@dataclass
class Reporters:
    """Processes that print one JSON line per referral that reached them (partners, the floor's partner)."""

    name: str
    argvs: list[list[str]]
    log_dir: Path
    arrivals: dict[str, dict[str, Any]] = field(default_factory=dict)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    undecodable: int = 0

    async def start(self, timeout_s: float = 60.0) -> None:
        for k, argv in enumerate(self.argvs):
            err = (self.log_dir / f"{self.name}-{k}.log").open("ab")  # handed to the child
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, limit=1 << 20, preexec_fn=_die_with_parent
            )
            err.close()
            self.procs.append(proc)
            ready = asyncio.get_running_loop().create_future()
            self._readers.append(asyncio.create_task(self._read(proc, ready)))
            try:
                await asyncio.wait_for(ready, timeout_s)
            except TimeoutError:
                raise RuntimeError(f"{' '.join(argv[2:])} not ready within {timeout_s:.0f} s; see {self.log_dir}") from None

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            obj = json.loads(line)
            if "referral_id" in obj:
                self.arrivals.setdefault(obj["referral_id"], obj)
            elif obj.get("ready") and not ready.done():
                ready.set_result(None)
            elif "undecodable" in obj:
                self.undecodable += 1
        if not ready.done():
            ready.set_exception(RuntimeError(f"a {self.name} process exited (code {await proc.wait()}); see {self.log_dir}"))

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def alive(self) -> bool:
        return all(p.returncode is None for p in self.procs)

    async def stop(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
        for t in self._readers:
            t.cancel()


def _die_with_parent() -> None:
    """The child gets SIGTERM when the benchmark process ends, however it ends (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


# ---------------------------------------------------------------- preparing the network
async def check_services() -> dict[str, str]:
    import httpx

    from lotse_kit.settings import service_url

    down = {}
    async with httpx.AsyncClient(timeout=3) as c:
        for s in SERVICES:
            try:
                r = await c.get(service_url(s) + "/health/ready")
                if r.status_code != 200:
                    down[s] = r.text[:300]
            except httpx.HTTPError as exc:
                down[s] = f"{type(exc).__name__}"
    return down


async def register_partner_keys() -> None:
    import httpx

    from lotse_cli.demo import partner_keys
    from lotse_cli.dev import find_user, user_token
    from lotse_kit.settings import service_url

    async with httpx.AsyncClient(timeout=30) as http:
        for org in PARTNERS:
            keys = partner_keys(org)
            token = await asyncio.to_thread(user_token, find_user(org, "partner_system"))
            for use in ("enc", "sig"):
                r = await http.post(
                    f"{service_url('consent')}/v1/organisations/{org}/keys",
                    headers={"Authorization": f"Bearer {token}"},
                    json=keys.public(use).model_dump(),
                )
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"registering {org}'s {use} key: HTTP {r.status_code} {r.text[:300]}")


async def prepare_clients(n: int, run: str, token: str) -> list[str]:
    """n clients of the Jobcenter, each with a consent covering the three partners."""
    import httpx

    from lotse_kit.settings import service_url

    intake, consent = service_url("intake"), service_url("consent")
    h = {"Authorization": f"Bearer {token}"}
    sem = asyncio.Semaphore(8)
    valid_until = (date.today() + timedelta(days=365)).isoformat()

    async def one(http: httpx.AsyncClient, i: int) -> str:
        lang = LANGUAGES[i % len(LANGUAGES)]
        async with sem:
            r = await http.post(
                f"{intake}/v1/clients",
                headers=h,
                json={
                    "registering_org": SENDER,
                    "given_name": "Bench",
                    "family_name": f"E2E {run}",
                    "date_of_birth": "1990-01-01",
                    "email": f"c{i}.{run}@bench-e2e.example",
                    "preferred_language": lang,
                    "languages": [lang],
                    "needs": list(NEEDS),
                    "residence_title": "aufenthg_24",
                    "residence_valid_until": valid_until,
                },
            )
            if r.status_code != 201:
                raise RuntimeError(f"register client: HTTP {r.status_code} {r.text[:300]}")
            client_id: str = r.json()["client_id"]
            r = await http.post(
                f"{consent}/v1/consents",
                headers=h,
                json={
                    "client_id": client_id,
                    "form": "written",
                    "information": INFO,
                    "recipients": [*PARTNERS, SENDER],
                    "purposes": ["referral", "contact_for_notifications"],
                    "categories": CATEGORIES,
                    "information_language": lang,
                },
            )
            if r.status_code != 201:
                raise RuntimeError(f"record consent: HTTP {r.status_code} {r.text[:300]}")
            return client_id

    async with httpx.AsyncClient(timeout=30) as http:
        return list(await asyncio.gather(*(one(http, i) for i in range(n))))


# ---------------------------------------------------------------- one step
@dataclass
class Target:
    name: str  # "lotse" or "floor"
    port: int
    reporters: Reporters
    system: tuple[str, ...]


class Bench:
    def __init__(self, args: argparse.Namespace, run: str, run_dir: Path, log_dir: Path) -> None:
        from lotse_kit.settings import KitSettings

        self.args, self.run, self.log_dir = args, run, log_dir
        self.settings = KitSettings()
        pg_port = int(self.settings.database_url.rsplit(":", 1)[1].split("/")[0])
        self.groups = local_stack_groups(REPO, run_dir, pg_port)
        self.groups.append(Group("loadgen", roots={os.getpid()}, tree=False))
        self.meter = ProcMeter(self.groups)
        self.token = CaseworkerToken()
        self.idle: dict[str, float] = {}
        self.clients: list[str] = []
        self.db: Any = None

    def add_group(self, name: str, pids: set[int]) -> None:
        self.groups.append(Group(name, roots=set(pids)))

    async def connect_db(self) -> None:
        import asyncpg

        self.db = await asyncpg.connect(self.settings.database_url, server_settings={"application_name": "bench-e2e"})

    async def pg_apps(self) -> dict[int, str]:
        rows = await self.db.fetch("SELECT pid, coalesce(nullif(application_name, ''), backend_type) AS app FROM pg_stat_activity")
        return {r["pid"]: r["app"] for r in rows}

    # -------------------------------------------------------- idle rate and quiescence
    async def measure_idle(self, seconds: float) -> None:
        a, t0 = self.meter.snapshot(rss=False), time.monotonic()
        await asyncio.sleep(seconds)
        b, t1 = self.meter.snapshot(rss=False), time.monotonic()
        self.idle = {g: v / (t1 - t0) for g, v in cpu_between(a, b).items()}

    async def quiesce(self, groups: tuple[str, ...], max_s: float, margin_cores: float = 0.08) -> bool:
        """Waits until `groups` together use no more than their idle rate + margin for one second."""
        prev, tp = self.meter.snapshot(rss=False), time.monotonic()
        end, calm = tp + max_s, 0
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            cur, tc = self.meter.snapshot(rss=False), time.monotonic()
            used = cpu_between(prev, cur)
            # Before the idle rate is known (warm-up), allow each group a few percent of a core.
            allowance = sum(self.idle.get(g, 0.0) for g in groups) if self.idle else 0.03 * len(groups)
            busy = sum(used.get(g, 0.0) for g in groups) / (tc - tp) - allowance
            calm = calm + 1 if busy < margin_cores else 0
            if calm >= 2:
                return True
            prev, tp = cur, tc
        return False

    # -------------------------------------------------------- the step
    def request_maker(self, target: Target, headers: dict[str, dict[str, str]]) -> Any:
        """`make(i)` for `drive`; the request headers are read from `headers["current"]` at each request, so a token
        renewed during a long step (`_renew_token`) is used from the next request on."""
        import orjson

        needs = list(NEEDS)
        clients = self.clients or [str(uuid.uuid4()) for _ in range(200)]

        def make(i: int) -> tuple[str, bytes, dict[str, str]]:
            body = orjson.dumps({"need": needs[i % 3], "categories": CATEGORIES, "reason": "Benchmark referral"})
            return f"/v1/clients/{clients[i % len(clients)]}/referrals", body, headers["current"]

        return make

    async def _renew_token(self, headers: dict[str, dict[str, str]], every_s: float = 60.0) -> None:
        # The caseworker's token lives 5 minutes: a step of 5 minutes or more (the sustained run) outlives it.
        while True:
            await asyncio.sleep(every_s)
            token = await self.token.fresh(max_age_s=every_s)
            headers["current"] = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def step(self, target: Target, rate: float, seconds: float) -> dict[str, Any]:
        # Each step starts from an idle machine: a saturated step before it may have left a backlog.
        t_settle = time.monotonic()
        settled = await self.quiesce(tuple({*LOTSE_SYSTEM, *FLOOR_SYSTEM} & {g.name for g in self.groups}), max_s=self.args.settle_timeout)
        settle_s = time.monotonic() - t_settle
        token = await self.token.fresh()
        pool = HttpPool("127.0.0.1", target.port, size=self.args.connections)
        headers = {"current": {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}}
        make = self.request_maker(target, headers)
        renewer = asyncio.create_task(self._renew_token(headers))
        audit_from = await self.db.fetchval("SELECT coalesce(max(idx), -1) FROM audit.audit_log") if target.name == "lotse" else None
        apps0 = await self.pg_apps()
        load0 = load_average()
        snap0, t0 = self.meter.snapshot(), time.monotonic()
        peak = dict(snap0.rss_mb)
        sampler = asyncio.create_task(self._sample_rss(peak))
        try:
            sched = await drive(pool, rate, seconds, make, timeout_s=self.args.request_timeout)
        finally:
            renewer.cancel()
            await pool.close()
        ok: dict[str, Any] = {}
        for s in sched.sent:
            if s.status == 201:
                ok[json.loads(s.body)["referral_id"]] = s
        # Every referral to its inbox, then the machine back to idle: the step's work is all inside the window.
        drain_deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < drain_deadline and not all(r in target.reporters.arrivals for r in ok):
            if not target.reporters.alive():
                raise RuntimeError(f"a {target.reporters.name} process died; see {self.log_dir}")
            await asyncio.sleep(0.1)
        drained_s = time.monotonic() - t0
        quiet = await self.quiesce(target.system, max_s=self.args.drain_timeout)
        snap1, t1 = self.meter.snapshot(), time.monotonic()
        sampler.cancel()
        for g, v in snap1.rss_mb.items():
            peak[g] = max(peak.get(g, 0.0), v)
        apps1 = await self.pg_apps()
        window_s = t1 - t0
        result = self._result(target, rate, seconds, sched, ok, snap0, snap1, window_s, peak, {**apps0, **apps1})
        result["drained_s"] = round(drained_s, 1)
        result["settled_before"] = {"idle": settled, "waited_s": round(settle_s, 1)}
        result["quiet_at_end"] = quiet
        result["load_average_before"] = load0
        if target.name == "lotse":
            await self._lotse_tail(result, sched, ok, target, audit_from)
        return result

    async def _sample_rss(self, peak: dict[str, float]) -> None:
        while True:
            await asyncio.sleep(1.0)
            for g, v in self.meter.snapshot().rss_mb.items():
                peak[g] = max(peak.get(g, 0.0), v)

    def _result(
        self,
        target: Target,
        rate: float,
        seconds: float,
        sched: Schedule,
        ok: dict[str, Any],
        snap0: Snapshot,
        snap1: Snapshot,
        window_s: float,
        peak: dict[str, float],
        apps: dict[int, str],
    ) -> dict[str, Any]:
        arrivals = target.reporters.arrivals
        http = [s.latency_ms for s in sched.sent if s.status == 201 and s.latency_ms is not None]
        errors: dict[str, int] = {}
        for s in sched.sent:
            if s.status != 201:
                key = s.error or f"HTTP {s.status}: {s.body[:120].decode(errors='replace')}"
                errors[key] = errors.get(key, 0) + 1
        inbox, after_response, not_opened = [], [], 0
        for rid, s in ok.items():
            a = arrivals.get(rid)
            if a is None:
                continue
            inbox.append((a["t"] - s.due_wall) * 1000)
            after_response.append((a["t"] - s.done_wall) * 1000)
            not_opened += 0 if a.get("opened") else 1
        missing = sum(1 for rid in ok if rid not in arrivals)
        n = len(ok)
        used = cpu_between(snap0, snap1)
        net = {g: used[g] - self.idle.get(g, 0.0) * window_s for g in used}
        per_ref_ms = {g: round(max(0.0, v) / n * 1000, 3) if n else None for g, v in net.items()}
        raw_ms = {g: round(v / n * 1000, 3) if n else None for g, v in used.items()}
        last_arrival = max((arrivals[r]["t"] for r in ok if r in arrivals), default=None)
        pg_by_app: dict[str, float] = {}
        for pid, cpu in per_process_between(snap0, snap1, "postgres").items():
            app = _app_group(apps.get(pid, "postgres (background, exited backends)"))
            pg_by_app[app] = pg_by_app.get(app, 0.0) + cpu
        pg_attributed = sum(pg_by_app.values())
        pg_by_app["postgres (reaped backends, other)"] = max(0.0, used.get("postgres", 0.0) - pg_attributed)
        # PostgreSQL serves both sides: each side's sum leaves out the backends of the other side's processes
        # (and the bench's own connection), which the per-client split names.
        other = ("floor-api", "floor-consumer", "loadgen") if target.name == "lotse" else (*SERVICES, "loadgen")
        pg_side = max(0.0, net.get("postgres", 0.0) - sum(pg_by_app.get(k, 0.0) for k in other))
        system_s = sum(pg_side if g == "postgres" else max(0.0, net[g]) for g in target.system if g in net)
        system_ms = round(system_s / n * 1000, 3) if n else None
        return {
            "target": target.name,
            "offered_per_s": rate,
            "seconds": seconds,
            "requests": len(sched.sent),
            "ok": n,
            "achieved_per_s": round(n / sched.elapsed_s, 1),
            "delivered_per_s": round(len(inbox) / (last_arrival - sched.started_wall), 1) if last_arrival else 0.0,
            "errors": sum(errors.values()),
            "error_kinds": errors,
            "missing_in_inbox": missing,
            "not_opened": not_opened,
            "http_ms": summary(http),
            "inbox_ms": summary(inbox),
            "inbox_after_response_ms": summary(after_response),
            "window_s": round(window_s, 1),
            "cpu_s": {g: round(v, 3) for g, v in used.items()},
            "cpu_ms_per_referral": per_ref_ms,
            "cpu_ms_per_referral_raw": raw_ms,
            "system_cpu_ms_per_referral": system_ms,
            "postgres_cpu_ms_per_referral_this_side": round(pg_side / n * 1000, 3) if n else None,
            "cores_busy": round(sum(used.values()) / window_s, 2),
            # The whole machine, for comparison: more than the groups' sum means other processes ran (or a group was missed).
            "machine_cores_busy": round((snap1.machine_busy_s - snap0.machine_busy_s) / window_s, 2),
            "postgres_cpu_ms_per_referral_by_client": {k: round(v / n * 1000, 3) for k, v in sorted(pg_by_app.items())} if n else {},
            "peak_rss_mb": {g: round(v, 1) for g, v in peak.items()},
        }

    async def _lotse_tail(self, result: dict[str, Any], sched: Schedule, ok: dict[str, Any], target: Target, audit_from: int) -> None:
        """Audit entry and accepted-at-intake times, read once the CPU window has closed."""
        arrivals = target.reporters.arrivals
        events = {arrivals[r]["event_id"]: r for r in ok if r in arrivals}
        audit: dict[str, datetime] = {}
        audit_idx: dict[str, int] = {}
        heads: list[tuple[int, datetime]] = []
        answers: dict[str, tuple[str, datetime]] = {}
        deadline = time.monotonic() + 60
        while True:
            rows = await self.db.fetch(
                "SELECT event_id, idx, logged_at FROM audit.audit_log WHERE idx > $1 AND event_id = ANY($2::text[])",
                audit_from,
                list(events),
            )
            audit.update({r["event_id"]: r["logged_at"] for r in rows})
            audit_idx.update({r["event_id"]: r["idx"] for r in rows})
            # Signed tree heads that cover any of the step's entries, in signing order.
            heads = [
                (r["tree_size"], r["signed_at"])
                for r in await self.db.fetch(
                    "SELECT tree_size, signed_at FROM audit.tree_heads WHERE tree_size > $1 ORDER BY signed_at, id", audit_from + 1
                )
            ]
            covered = max((n for n, _ in heads), default=0) > max(audit_idx.values(), default=-1)
            rows = await self.db.fetch(
                "SELECT referral_id::text AS rid, status, updated_at FROM intake.referrals WHERE referral_id = ANY($1::uuid[])", list(ok)
            )
            answers = {r["rid"]: (r["status"], r["updated_at"]) for r in rows}
            accepted = sum(1 for st, _ in answers.values() if st == "accepted")
            if (len(audit) >= len(events) and accepted >= len(events) and covered) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        result["audit_ms"] = summary([(audit[e].timestamp() - ok[r].due_wall) * 1000 for e, r in events.items() if e in audit])
        result["missing_in_audit"] = len(events) - sum(1 for e in events if e in audit)
        sth = first_head_covering(heads, audit_idx)
        result["sth_ms"] = summary([(sth[e].timestamp() - ok[r].due_wall) * 1000 for e, r in events.items() if e in sth])
        result["missing_in_sth"] = len(events) - len(sth)
        acc = [(at.timestamp() - ok[r].due_wall) * 1000 for r, (st, at) in answers.items() if st == "accepted"]
        result["accepted_at_intake_ms"] = summary(acc)
        result["not_accepted"] = len(ok) - len(acc)
        # Where the time to the inbox goes: until the consent gate decided (intake's relay, Kafka, the gate's queue),
        # then until the inbox record was written to Kafka (the gate's transaction, consent's relay), then to the partner.
        rows = await self.db.fetch(
            "SELECT referral_id::text AS rid, decided_at FROM consent.disclosures WHERE referral_id = ANY($1::uuid[])", list(ok)
        )
        result["gate_decided_ms"] = summary([(r["decided_at"].timestamp() - ok[r["rid"]].due_wall) * 1000 for r in rows])
        result["inbox_record_written_ms"] = summary(
            [(arrivals[r]["kafka_ts"] - ok[r].due_wall) * 1000 for r in ok if r in arrivals and arrivals[r].get("kafka_ts")]
        )


def _app_group(app: str) -> str:
    """PostgreSQL backends by the service (or floor process) that opened them (application_name)."""
    for s in SERVICES:
        if app.startswith(f"lotse-{s}"):
            return s
    if app.startswith("bench-floor-api"):
        return "floor-api"
    if app.startswith("bench-floor-consumer"):
        return "floor-consumer"
    if app.startswith("bench-e2e"):
        return "loadgen"
    return "postgres (background, other clients)"


def first_head_covering(heads: list[tuple[int, datetime]], idx: dict[str, int]) -> dict[str, datetime]:
    """For each entry (by key), when the first signed tree head covering its index was signed.
    `heads`: (tree_size, signed_at) in signing order; a head covers index i when tree_size > i."""
    import bisect

    reach: list[int] = []  # the largest tree size signed so far, after each head
    for n, _ in heads:
        reach.append(max(n, reach[-1]) if reach else n)
    out: dict[str, datetime] = {}
    for key, i in idx.items():
        k = bisect.bisect_right(reach, i)
        if k < len(heads):
            out[key] = heads[k][1]
    return out


def holds(r: dict[str, Any]) -> bool:
    http, inbox = r["http_ms"]["p99"], r["inbox_ms"]["p99"]
    return (
        r["errors"] == 0
        and r["missing_in_inbox"] == 0
        and r["ok"] > 0
        and http is not None
        and inbox is not None
        and http < GOAL_HTTP_P99_MS
        and inbox < GOAL_INBOX_P99_MS
    )


# ---------------------------------------------------------------- the run
async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from bench import floor
    from lotse_cli.dev import run_dir

    run = uuid.uuid4().hex[:8]
    rd = run_dir()
    log_dir = rd / "bench" / f"e2e-{run}"
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    b = Bench(args, run, rd, log_dir)
    started = datetime.now(UTC)
    log(f"run {run}: machine {machine()}, load average {load_average()}")
    busy = _other_heavy_processes()
    if busy:
        log(f"WARNING: other heavy processes are running (measurements will be noisy): {busy}")
    if not args.floor_only:
        down = await check_services()
        if down:
            raise SystemExit(f"services not ready: {down}. Start them with `make up` (or deploy/local/services.sh up).")
    await b.connect_db()
    targets: list[Target] = []
    cfg = None
    try:
        py = sys.executable
        if not args.floor_only:
            log("registering the partners' keys and preparing clients with consents ...")
            await register_partner_keys()
            b.clients = await prepare_clients(args.clients, run, await b.token.fresh())
            partners = Reporters("partners", [[py, "-m", "bench._partner", "--org", o] for o in PARTNERS], log_dir)
            await partners.start()
            b.add_group("partners", partners.pids)
            targets.append(Target("lotse", 8001, partners, LOTSE_SYSTEM))
        if not args.no_floor:
            log("setting up the floor pipeline (topics, principals, schema) ...")
            cfg = await floor.setup(args.floor_port, pad_bytes=args.floor_pad)
            cfg_file = log_dir / "floor.json"
            cfg.save(cfg_file)
            fpartner = Reporters("floor-partner", [[py, "-m", "bench.floor", "partner", "--config", str(cfg_file)]], log_dir)
            fconsumer = Reporters("floor-consumer", [[py, "-m", "bench.floor", "consumer", "--config", str(cfg_file)]], log_dir)
            await fpartner.start()
            await fconsumer.start()
            with (log_dir / "floor-api.log").open("ab") as api_log:  # handed to the child
                api = await asyncio.create_subprocess_exec(
                    py, "-m", "bench.floor", "api", "--config", str(cfg_file), cwd=REPO,
                    stdout=api_log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                )  # fmt: skip
            await _wait_http(f"http://127.0.0.1:{args.floor_port}/ready", api)
            b.add_group("floor-api", {api.pid})
            b.add_group("floor-consumer", fconsumer.pids)
            b.add_group("floor-partner", fpartner.pids)
            targets.append(Target("floor", args.floor_port, fpartner, FLOOR_SYSTEM))
        # Warm every path (connections, caches, JIT, token keys), then let the machine settle and take its idle rate.
        warmup = []
        for t in targets:
            log(f"warming up {t.name} ({args.warmup_seconds:.0f} s at 10/s) ...")
            warmup.append(await b.step(t, 10, args.warmup_seconds))
            log("  " + one_line(warmup[-1]))
        await b.quiesce(LOTSE_SYSTEM if not args.floor_only else FLOOR_SYSTEM, max_s=30)
        log(f"measuring the idle rate ({args.idle_seconds:.0f} s) ...")
        await b.measure_idle(args.idle_seconds)
        log("idle CPU (cores): " + ", ".join(f"{g} {v:.3f}" for g, v in sorted(b.idle.items()) if v >= 0.0005))
        steps: list[dict[str, Any]] = []
        failures = 0
        for rate in args.rates:
            for t in targets:
                seconds = args.step_seconds if t.name == "lotse" else args.floor_seconds
                log(f"{t.name}: {rate}/s for {seconds:.0f} s ...")
                r = await b.step(t, rate, seconds)
                r["holds_goal"] = holds(r)
                steps.append(r)
                log("  " + one_line(r))
            main_target = targets[0].name
            last = next(s for s in reversed(steps) if s["target"] == main_target)
            failures = 0 if last["holds_goal"] else failures + 1
            if failures >= args.stop_after:
                log(f"stopping: {failures} consecutive step(s) missed the goal")
                break
        return {
            "run": run,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "other_heavy_processes_at_start": busy,
            "settings": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("write_readme", "out", "profile")
            },
            "goal": {"http_p99_ms": GOAL_HTTP_P99_MS, "inbox_p99_ms": GOAL_INBOX_P99_MS, "errors": 0, "missing": 0},
            "idle_cores": {g: round(v, 4) for g, v in b.idle.items()},
            "warmup": warmup,
            "steps": steps,
            "summary": verdict(steps),
        }
    finally:
        for t in targets:
            await t.reporters.stop()
        for g in b.groups:
            if g.name == "floor-api":
                for pid in g.roots:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
        if cfg is not None:
            await asyncio.sleep(1.0)
            await floor.teardown(cfg)
            (log_dir / "floor.json").unlink(missing_ok=True)
        await b.db.close()


async def _wait_http(url: str, proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as c:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} not ready within {timeout_s:.0f} s")


def _other_heavy_processes() -> list[str]:
    """Processes outside this run that use a lot of CPU right now (pytest of another engineer, CI)."""
    from bench._procs import all_pids, cmdline, read_stat

    a = {p: s.own_cpu_s for p in all_pids() if (s := read_stat(p))}
    time.sleep(1.0)
    out = []
    for p in all_pids():
        s = read_stat(p)
        if s and p in a and s.own_cpu_s - a[p] > 0.3 and p != os.getpid():
            out.append(f"{p} {cmdline(p)[:80]} ({(s.own_cpu_s - a[p]) * 100:.0f}% of a core)")
    return out


def verdict(steps: list[dict[str, Any]]) -> dict[str, Any]:
    lotse = [s for s in steps if s["target"] == "lotse"]
    floor_ = {s["offered_per_s"]: s for s in steps if s["target"] == "floor"}
    best = None
    for s in lotse:
        if not s["holds_goal"]:
            break
        best = s["offered_per_s"]
    ratios = {}
    for s in lotse:
        f = floor_.get(s["offered_per_s"])
        if f and f["system_cpu_ms_per_referral"] and s["system_cpu_ms_per_referral"] is not None:
            ratios[s["offered_per_s"]] = round(s["system_cpu_ms_per_referral"] / f["system_cpu_ms_per_referral"], 2)
    floor_best = None
    for r in sorted(floor_):
        if not holds(floor_[r]):
            break
        floor_best = r
    return {
        "highest_rate_holding_goal": best,
        "first_rate_missing_goal": next((s["offered_per_s"] for s in lotse if not s["holds_goal"]), None),
        "floor_highest_rate_holding_goal": floor_best,
        "cpu_ratio_lotse_to_floor_by_rate": ratios,
    }


# ---------------------------------------------------------------- output
def _f(v: Any, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def one_line(r: dict[str, Any]) -> str:
    h, i = r["http_ms"], r["inbox_ms"]
    extra = f", audit p99 {_f(r['audit_ms']['p99'])} ms" if "audit_ms" in r else ""
    extra += f", sth p99 {_f(r['sth_ms']['p99'])} ms" if "sth_ms" in r else ""
    return (
        f"{r['ok']}/{r['requests']} ok ({r['achieved_per_s']}/s), errors {r['errors']}, missing {r['missing_in_inbox']}; "
        f"HTTP p50/p99 {_f(h['p50'], 1)}/{_f(h['p99'], 1)} ms, inbox p50/p99 {_f(i['p50'], 1)}/{_f(i['p99'], 1)} ms{extra}; "
        f"system CPU {_f(r['system_cpu_ms_per_referral'], 2)} ms/referral, {r['cores_busy']} cores busy (machine {r['machine_cores_busy']})"
        + ("" if r["quiet_at_end"] else " (not back to idle at the end of the window)")
        + ("" if "holds_goal" not in r else " - holds the goal" if r["holds_goal"] else " - misses the goal")
    )


def tables(result: dict[str, Any]) -> str:
    steps = result["steps"]
    floor_ = {s["offered_per_s"]: s for s in steps if s["target"] == "floor"}
    lotse = [s for s in steps if s["target"] == "lotse"]
    out = [
        "Latency (ms, from each request's due time; inbox = referral → partner inbox; audit = → the inbox record's audit entry; "
        "sth = → the first signed tree head covering that entry; accepted = → the partner's acceptance recorded by intake)",
        "",
        "| offered/s | achieved/s | errors | missing | HTTP p50 | HTTP p99 | inbox p50 | inbox p99 | audit p50 | audit p99 "
        "| sth p50 | sth p99 | accepted p99 | floor HTTP p50 / p99 | floor inbox p50 / p99 | goal |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in lotse:
        f = floor_.get(s["offered_per_s"])
        fl = f"{_f(f['http_ms']['p50'], 1)} / {_f(f['http_ms']['p99'], 1)}" if f else "-"
        fi = f"{_f(f['inbox_ms']['p50'], 1)} / {_f(f['inbox_ms']['p99'], 1)}" if f else "-"
        a = s.get("audit_ms", {})
        h = s.get("sth_ms", {})
        out.append(
            f"| {s['offered_per_s']:g} | {s['achieved_per_s']:g} | {s['errors']} | {s['missing_in_inbox']} | {_f(s['http_ms']['p50'], 1)} | "
            f"{_f(s['http_ms']['p99'], 1)} | {_f(s['inbox_ms']['p50'], 1)} | {_f(s['inbox_ms']['p99'], 1)} | {_f(a.get('p50'), 1)} | "
            f"{_f(a.get('p99'), 1)} | {_f(h.get('p50'), 1)} | {_f(h.get('p99'), 1)} | "
            f"{_f(s.get('accepted_at_intake_ms', {}).get('p99'), 1)} | {fl} | {fi} | "
            f"{'holds' if s['holds_goal'] else 'misses'} |"
        )
    if not lotse:
        for r, f in sorted(floor_.items()):
            out.append(
                f"| {r:g} | {f['achieved_per_s']:g} | {f['errors']} | {f['missing_in_inbox']} | - | - | - | - | - | - | - | - | - | "
                f"{_f(f['http_ms']['p50'], 1)} / {_f(f['http_ms']['p99'], 1)} | {_f(f['inbox_ms']['p50'], 1)} / {_f(f['inbox_ms']['p99'], 1)} | "
                f"{'holds' if f['holds_goal'] else 'misses'} |"
            )
    cols = [*SERVICES, *SHARED]
    out += [
        "",
        "CPU per referral (ms, net of the idle rate; system = services + PostgreSQL + Kafka + Keycloak; "
        "floor = its api and consumer processes + the same three; PostgreSQL without the other side's backends)",
        "",
        "| offered/s | "
        + " | ".join(cols)
        + " | **Lotse system** | floor system | **ratio** | partners | mail sink | load generator | cores busy |",
        "| ---: | " + " | ".join("---:" for _ in cols) + " | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in lotse:
        c = {**s["cpu_ms_per_referral"], "postgres": s["postgres_cpu_ms_per_referral_this_side"]}
        f = floor_.get(s["offered_per_s"])
        fs = f["system_cpu_ms_per_referral"] if f else None
        ratio = s["system_cpu_ms_per_referral"] / fs if fs and s["system_cpu_ms_per_referral"] is not None else None
        out.append(
            f"| {s['offered_per_s']:g} | "
            + " | ".join(_f(c.get(g), 2) for g in cols)
            + f" | **{_f(s['system_cpu_ms_per_referral'], 2)}** | {_f(fs, 2)} | **{_f(ratio, 1)}** | {_f(c.get('partners'), 2)} | "
            f"{_f(c.get('mailsink'), 2)} | {_f(c.get('loadgen'), 2)} | {s['cores_busy']:.2f} |"
        )
    if not lotse:
        for r, f in sorted(floor_.items()):
            c = {**f["cpu_ms_per_referral"], "postgres": f["postgres_cpu_ms_per_referral_this_side"]}
            out.append(
                f"| {r:g} | - | - | - | - | {_f(c.get('postgres'), 2)} | {_f(c.get('kafka'), 2)} | {_f(c.get('keycloak'), 2)} | - | "
                f"{_f(f['system_cpu_ms_per_referral'], 2)} | - | - | - | {_f(c.get('loadgen'), 2)} | {f['cores_busy']:.2f} |"
            )
    sm = result["summary"]
    out += [
        "",
        f"Highest offered rate holding the goal (HTTP p99 < {GOAL_HTTP_P99_MS:.0f} ms, inbox p99 < {GOAL_INBOX_P99_MS:.0f} ms, "
        f"no error, nothing missing): **{_f(sm['highest_rate_holding_goal'])} referrals/s** "
        f"(first miss: {_f(sm['first_rate_missing_goal'])}/s; the floor held up to {_f(sm['floor_highest_rate_holding_goal'])}/s of those offered).",
    ]
    return "\n".join(out)


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    s = result["settings"]
    return (
        f"Run {result['started'].replace('T', ' ')[:16]} UTC on {m['cpu_model']}, {m['cores']} cores, {m['ram_gb']} GB RAM "
        f"(Linux {m['kernel']}); everything on this one machine (services, Kafka, PostgreSQL, Keycloak, partners, load generator). "
        f"Steps of {s['step_seconds']:.0f} s (floor {s['floor_seconds']:.0f} s), {s['clients']} clients, partners accepting every referral."
        + (
            f" Other load at start: {'; '.join(result['other_heavy_processes_at_start'])}."
            if result["other_heavy_processes_at_start"]
            else ""
        )
    )


def write_readme(result: dict[str, Any], json_path: Path, png_path: Path | None) -> None:
    text = README.read_text()
    rel = json_path.relative_to(REPO / "bench")
    block = f"{MARK_BEGIN}\n{machine_line(result)}\n\n{tables(result)}\n\nFull results: [`{rel}`]({rel})"
    if png_path:
        block += f", plot: [`{png_path.relative_to(REPO / 'bench')}`]({png_path.relative_to(REPO / 'bench')})"
    block += f".\n{MARK_END}"
    if MARK_BEGIN not in text:
        raise SystemExit(f"{README} has no {MARK_BEGIN} … {MARK_END} block")
    start, end = text.index(MARK_BEGIN), text.index(MARK_END) + len(MARK_END)
    README.write_text(text[:start] + block + text[end:])


# ---------------------------------------------------------------- profiling
async def run_profile(args: argparse.Namespace) -> None:
    """One long step at --profile-rate; py-spy records each service in turn for --profile seconds."""
    import shutil

    from bench._profile import summarise
    from lotse_cli.dev import run_dir

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    run = uuid.uuid4().hex[:8]
    rd = run_dir()
    log_dir = rd / "bench" / f"e2e-{run}"
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    down = await check_services()
    if down:
        raise SystemExit(f"services not ready: {down}")
    b = Bench(args, run, rd, log_dir)
    await b.connect_db()
    out_dir = args.out / f"profile-{datetime.now(UTC):%Y-%m-%dT%H%M}"
    out_dir.mkdir(parents=True, exist_ok=True)
    await register_partner_keys()
    b.clients = await prepare_clients(args.clients, run, await b.token.fresh())
    partners = Reporters("partners", [[sys.executable, "-m", "bench._partner", "--org", o] for o in PARTNERS], log_dir)
    await partners.start()
    target = Target("lotse", 8001, partners, LOTSE_SYSTEM)
    try:
        await b.step(target, 10, args.warmup_seconds)
        b.idle = {}
        seconds = len(SERVICES) * (args.profile + 3) + 5
        log(f"profiling at {args.profile_rate}/s: {seconds} s of load, py-spy {args.profile} s per service ...")

        async def spy() -> None:
            await asyncio.sleep(3)
            for s in SERVICES:
                b.meter.group(s).refresh()
                pid = next(iter(b.meter.group(s).roots))
                raw = out_dir / f"{s}.raw.txt"
                proc = await asyncio.create_subprocess_exec(
                    pyspy, "record", "--pid", str(pid), "--duration", str(round(args.profile)), "--rate", "100", "--format", "raw",
                    "--function", "--nonblocking", "--output", str(raw),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )  # fmt: skip
                _, err = await proc.communicate()
                if proc.returncode != 0:
                    log(f"py-spy on {s} failed: {err.decode()[-300:]}")
                    continue
                log(f"  {s}: {raw}")
                await asyncio.sleep(1)

        spy_task = asyncio.create_task(spy())
        r = await b.step(target, args.profile_rate, seconds)
        await spy_task
        log("  " + one_line(r))
        report = []
        for s in SERVICES:
            raw = out_dir / f"{s}.raw.txt"
            if raw.exists():
                report.append(summarise(s, raw))
        text = "\n\n".join(report)
        (out_dir / "summary.md").write_text(text + "\n")
        print(text)
        log(f"profile written to {out_dir}")
    finally:
        await partners.stop()
        await b.db.close()


# ---------------------------------------------------------------- entry
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], help="offered referrals/s per step (default: 10,20,30,40,60,...,300)"
    )
    ap.add_argument("--step-seconds", type=float, help="length of each Lotse step (default 30, --quick 10)")
    ap.add_argument("--floor-seconds", type=float, help="length of each floor step (default 15, --quick 6)")
    ap.add_argument("--quick", action="store_true", help="about 2 minutes: coarse rates, short steps")
    ap.add_argument("--stop-after", type=int, help="stop after this many consecutive steps missing the goal (default 2, --quick 1)")
    ap.add_argument("--clients", type=int, default=300, help="clients with consents the referrals cycle through")
    ap.add_argument("--connections", type=int, default=256, help="at most this many HTTP connections (then requests queue, timed)")
    ap.add_argument("--request-timeout", type=float, default=30.0)
    ap.add_argument("--drain-timeout", type=float, default=45.0, help="how long after a step to wait for inboxes and idle")
    ap.add_argument("--settle-timeout", type=float, default=120.0, help="before each step, wait at most this long for idle")
    ap.add_argument("--warmup-seconds", type=float, default=5.0)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--no-floor", action="store_true", help="skip the floor pipeline")
    ap.add_argument("--floor-only", action="store_true", help="only the floor (the services need not run)")
    ap.add_argument("--floor-port", type=int, default=18101)
    ap.add_argument("--floor-pad", type=int, default=1024, help="bytes of padding in each floor record (a sealed referral is ~2 kB)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--write-readme", action="store_true", help="put the tables into bench/README.md")
    ap.add_argument("--profile", type=int, metavar="SECONDS", help="instead of stepping: py-spy each service this long under load")
    ap.add_argument("--profile-native", action="store_true", help="also C frames (uvloop, asyncpg, ssl); pauses the service at each sample")
    ap.add_argument("--profile-rate", type=float, default=20.0, help="offered referrals/s while profiling (one the network sustains)")
    a = ap.parse_args(argv)
    a.rates = a.rates or (QUICK_RATES if a.quick else DEFAULT_RATES)
    a.step_seconds = a.step_seconds or (10.0 if a.quick else 30.0)
    a.floor_seconds = a.floor_seconds or (6.0 if a.quick else 15.0)
    a.stop_after = a.stop_after or (1 if a.quick else 2)
    if a.floor_only and a.no_floor:
        ap.error("--floor-only and --no-floor exclude each other")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.profile:
        runner(run_profile(args))
        return 0
    result = runner(run_bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"e2e-{datetime.now(UTC):%Y-%m-%dT%H%M}" + ("-floor" if args.floor_only else "")
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    png_path = None
    if not args.no_plot:
        try:
            from bench._plot import plot

            png_path = plot(result, args.out / f"{stem}.png")
        except ImportError as exc:
            log(f"no plot ({exc}): pip install -r requirements-dev.txt")
    print()
    print(machine_line(result))
    print()
    print(tables(result))
    print()
    log(f"results: {json_path}" + (f", {png_path}" if png_path else ""))
    if args.write_readme:
        write_readme(result, json_path, png_path)
        log(f"written into {README}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    sys.exit(main())
