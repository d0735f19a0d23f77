"""The processes a fault scenario acts on: the services (run against the three-node cluster), the cluster's nodes, PostgreSQL.

Everything goes through the project's own scripts (deploy/local/services.sh, deploy/local/cluster.sh) with the
environment that points them at the cluster: the services' pid files and logs in `.run/chaos/services`, their
Kafka credentials from `.run/cluster/credentials` (written by `lotse admin provision --credentials-dir`, see
`make up-cluster`). The single-node stack's services (`.run/services`) are stopped while the suite runs and
started again afterwards (runner.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lotse_kit.settings import SERVICE_PORTS

REPO = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("LOTSE_RUN_DIR", REPO / ".run"))
CHAOS_DIR = RUN / "chaos"
SERVICES_DIR = CHAOS_DIR / "services"
CLUSTER_CREDENTIALS = RUN / "cluster" / "credentials"
SERVICES_SH = REPO / "deploy" / "local" / "services.sh"
CLUSTER_SH = REPO / "deploy" / "local" / "cluster.sh"
# The services that consume Kafka (each runs one consumer group per subscription); the others only serve HTTP.
CONSUMING = ("intake", "consent", "notifications", "audit")
REPLICA_PORT_OFFSET = 100  # a second replica of a service listens on its port + 100 (8101 for intake, ...)


def present_services() -> list[str]:
    """Every service of SERVICE_PORTS that exists in this checkout and has cluster credentials (services.sh starts the same ones)."""
    return [
        s
        for s in SERVICE_PORTS
        if (REPO / "services" / s / "__main__.py").exists() and (CLUSTER_CREDENTIALS / f"lotse-{s}.properties").exists()
    ]


def single_node_services_running() -> bool:
    """Whether any service of the single-node stack runs (its pid files in .run/services)."""
    for f in (RUN / "services").glob("*.pid"):
        if f.stem == "mailsink":
            continue
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(f.read_text().strip()), 0)
            return True
    return False


# The services on the cluster keep their state in a database of their own on the shared PostgreSQL: the audit log
# identifies a record by its position (topic, partition, offset), and the cluster's positions repeat the
# single-node broker's, so one audit log for both would take the cluster's records for ones already logged.
CHAOS_DATABASE = "lotse_chaos"
ORIGINAL_ENVIRON = dict(os.environ)


def _provisioning_dsn() -> str:
    from lotse_kit.settings import KitSettings

    return ORIGINAL_ENVIRON.get("LOTSE_DATABASE_URL") or str(KitSettings.model_fields["database_url"].default)


def database_url(name: str = CHAOS_DATABASE) -> str:
    """The provisioning DSN, on database `name`."""
    return _provisioning_dsn().rsplit("/", 1)[0] + "/" + name


async def ensure_database() -> None:
    """Creates the suite's database (owned by the provisioning role; each service makes its schema and role in it)."""
    import asyncpg

    conn = await asyncpg.connect(_provisioning_dsn())
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", CHAOS_DATABASE):
            await conn.execute(f'CREATE DATABASE "{CHAOS_DATABASE}"')
    finally:
        await conn.close()


def chaos_environ() -> dict[str, str]:
    """The environment for this process's children and the scripts: services, partners and readers on the cluster."""
    env = dict(ORIGINAL_ENVIRON)
    env["LOTSE_DATABASE_URL"] = database_url()
    env["LOTSE_SERVICES_DIR"] = str(SERVICES_DIR)
    env["LOTSE_SERVICES_CREDENTIALS_DIR"] = str(CLUSTER_CREDENTIALS)
    env["LOTSE_DEMO_PARTNER_CREDENTIALS_DIR"] = str(CLUSTER_CREDENTIALS)  # bench._partner, as each partner's principal
    env.pop("LOTSE_KAFKA_BOOTSTRAP", None)  # every credentials file names the cluster's bootstrap servers
    # Webhook retries (Standard Webhooks: 5 s, 5 min, 30 min, ...) compressed so that deliveries failed during an
    # outage of the endpoint are retried within the run; the sum (157 s) outlasts the 2 minutes of scenario 5.
    env.setdefault("LOTSE_NOTIFICATIONS_RETRY_SCHEDULE_S", "[2, 5, 10, 20, 30, 30, 30, 30]")
    with contextlib.suppress(ImportError, AttributeError):
        from bench.chaos.webhook_sink import WebhookSink  # the webhook receiver of scenario 5: loopback, the local CA

        env.update(WebhookSink.notifications_env())
    return env


async def run_script(*argv: str | Path, timeout_s: float = 300.0, check: bool = True) -> tuple[int, str]:
    """Runs one of the project's scripts; returns its exit code and its output (stderr included)."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv), cwd=REPO, env=chaos_environ(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"{' '.join(map(str, argv))}: no answer within {timeout_s:.0f} s") from None
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{text[-2000:]}")
    return proc.returncode or 0, text


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass(frozen=True)
class Instance:
    """One running process of a service: `intake` (the primary, on its SERVICE_PORTS port) or `intake@8101` (a replica)."""

    service: str
    port: int

    @property
    def name(self) -> str:
        return self.service if self.port == SERVICE_PORTS[self.service] else f"{self.service}@{self.port}"

    @property
    def pid_file(self) -> Path:
        return SERVICES_DIR / f"{self.name}.pid"

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_file.read_text().strip())
            return pid if alive(pid) else None
        return None


def primary(service: str) -> Instance:
    return Instance(service, SERVICE_PORTS[service])


def replica(service: str) -> Instance:
    return Instance(service, SERVICE_PORTS[service] + REPLICA_PORT_OFFSET)


@dataclass
class Services:
    """The services on the cluster: start, kill -9, restart, readiness."""

    replicas: set[Instance] = field(default_factory=set)

    async def up(self) -> None:
        SERVICES_DIR.mkdir(parents=True, exist_ok=True)
        await run_script(SERVICES_SH, "up", timeout_s=400)

    async def down(self) -> None:
        await run_script(SERVICES_SH, "down", timeout_s=400, check=False)
        self.replicas.clear()

    async def start(self, inst: Instance) -> None:
        if inst.port == SERVICE_PORTS[inst.service]:
            await run_script(SERVICES_SH, "up", timeout_s=400)
        else:
            await run_script(SERVICES_SH, "replica", inst.service, str(inst.port), timeout_s=400)
            self.replicas.add(inst)

    def kill9(self, inst: Instance) -> int:
        pid = inst.pid()
        if pid is None:
            raise RuntimeError(f"{inst.name} is not running ({inst.pid_file})")
        os.kill(pid, signal.SIGKILL)
        # Until its parent reaps it, the process is a zombie that `kill -0` still finds (services.sh would take it
        # for running): wait for it to be gone.
        for _ in range(200):
            if not alive(pid):
                break
            time.sleep(0.05)
        return pid

    async def stop(self, inst: Instance) -> None:
        pid = inst.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            for _ in range(300):
                if inst.pid() is None:
                    break
                await asyncio.sleep(0.1)
        inst.pid_file.unlink(missing_ok=True)
        self.replicas.discard(inst)

    def instances(self) -> list[Instance]:
        return [primary(s) for s in present_services()] + sorted(self.replicas, key=lambda i: i.name)

    async def not_ready(self, http: httpx.AsyncClient) -> dict[str, str]:
        """Each instance that does not answer 200 on /health/ready, with what it said."""
        out: dict[str, str] = {}
        for inst in self.instances():
            try:
                r = await http.get(f"http://127.0.0.1:{inst.port}/health/ready", timeout=3)
                if r.status_code != 200:
                    out[inst.name] = _down_checks(r)
            except httpx.HTTPError as exc:
                out[inst.name] = type(exc).__name__
        return out

    async def wait_ready(self, timeout_s: float) -> tuple[float | None, dict[str, str]]:
        """Seconds until every instance is ready (None: not within timeout_s) and, if not, what was down last."""
        t0 = time.monotonic()
        down: dict[str, str] = {}
        async with httpx.AsyncClient() as http:
            while time.monotonic() - t0 < timeout_s:
                down = await self.not_ready(http)
                if not down:
                    return time.monotonic() - t0, {}
                await asyncio.sleep(0.5)
        return None, down


def _down_checks(r: httpx.Response) -> str:
    """What a 503 from /health/ready names as down: `check: value` for each."""
    try:
        doc = r.json()
        checks = doc.get("checks", {})
        return "; ".join(f"{k}: {checks.get(k, '')}" for k in doc.get("down", []))[:400] or r.text[:300]
    except ValueError:
        return r.text[:300]


class Cluster:
    """The three-node cluster (deploy/local/cluster.sh)."""

    nodes = (1, 2, 3)

    async def status(self) -> str:
        return (await run_script(CLUSTER_SH, "status", check=False))[1]

    async def leader(self, topic: str, partition: int) -> int:
        out = (await run_script(CLUSTER_SH, "leader", topic, str(partition), timeout_s=60))[1]
        return int(out.strip().splitlines()[-1])

    async def kill(self, node: int) -> None:
        await run_script(CLUSTER_SH, "kill", str(node), timeout_s=60)

    async def start(self, node: int) -> None:
        await run_script(CLUSTER_SH, "start", str(node), timeout_s=200)


class Postgres:
    """The shared PostgreSQL of the local stack, restarted as deploy/local/stack.sh stops it (fast shutdown)."""

    def __init__(self, port: int = 5432) -> None:
        self.port = port

    def _bin(self) -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("no pg_ctl under /usr/lib/postgresql")
        return found[-1]

    def _data(self) -> Path:
        for d in (RUN / f"pg-{self.port}" / "data", Path(f"/var/lib/postgresql/lotse-{self.port}/data")):
            if (d / "PG_VERSION").exists():
                return d
        raise RuntimeError(f"no PostgreSQL data directory for port {self.port}")

    async def restart_fast(self) -> None:
        data = self._data()
        # -l as the stack starts it: without it the server's output would hold this call's pipe open.
        argv: list[str | Path] = [self._bin(), "-D", data, "-l", data.parent / "server.log", "-m", "fast", "-w", "-t", "120", "restart"]
        if os.getuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        await run_script(*argv, timeout_s=180)
