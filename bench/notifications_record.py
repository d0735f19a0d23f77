"""The consumer's cost of recording notifications, per trigger event, before and after issue 14, in the same run.

    .venv/bin/python -m bench.notifications_record [--referrals 200] [--rounds 3] [--batch 20]

Drives realistic consumer batches through the trigger handlers as `lotse_kit.consumer` does (the subscription's
`prepare`, then every handler in one transaction with the prepared value) into a fresh schema (PostgreSQL of the local
stack; no Kafka, no delivery worker). Per referral: `lotse.referral.sent` and `lotse.referral.accepted` (half of the
answers without `from_org`), and every fifth referral a `lotse.deadline.approaching`; about four rows per referral.
One organisation of three has a webhook endpoint, as few have. Two shapes, alternated `--rounds` times on fresh events:

- before: the handlers as of commit BEFORE (loaded from git): per event one `SELECT ... FROM webhook_endpoints` per
  organisation, one erasure check per client route, one INSERT per notification row, one outbox INSERT per failure;
- after: the handlers of the working tree: the batch's endpoints and erasures read once by its first handler, inside
  the transaction, and each event's rows in one multi-row INSERT.

Reports, per trigger event: this process's CPU (the handlers, asyncpg), the CPU of the PostgreSQL backends serving the
pool (from /proc), wall time, SQL statements (asyncpg query loggers on every pool connection), and the ratio
before / after. Intake's contact API is an in-process fake without latency, the same in both shapes. The first round
warms both shapes up and is not counted. The schema is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

from contracts import new_event
from contracts.events import ReferralAccepted, ReferralSent
from lotse_kit import consumer
from lotse_kit.clock import ManualClock
from lotse_kit.network import OrgDirectory
from lotse_kit.settings import KitSettings
from services.notifications.adapters.keys import seal_secret
from services.notifications.bootstrap import bootstrap
from services.notifications.config import NotificationsSettings
from services.notifications.handlers import EVENT_HANDLERS, prepare_triggers
from services.notifications.tests.conftest import (
    AWO,
    CARITAS,
    JOBCENTER,
    NETWORK_YAML,
    TEST_KEK,
    TEST_KEK_ID,
    TEST_SIGNING_KEY,
    FakeContacts,
)
from services.notifications.tests.test_delivery import approaching

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]
# The last commit with one statement per notification row and per-event endpoint and erasure look-ups.
BEFORE = "893589df71d1f5615e946a2ab30ff04e6d2a38d7"
SHAPES = ("before", "after")


def _load_before() -> tuple[ModuleType, ModuleType]:
    """The trigger handlers and the repository as of BEFORE, as modules beside the current ones (their relative
    imports resolve to the current package: contacts, routing, model are unchanged)."""

    def load(path: str, name: str) -> ModuleType:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:{path}"], check=True, capture_output=True, text=True).stdout
        spec = importlib.util.spec_from_loader(name, loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__package__ = name.rpartition(".")[0]
        sys.modules[name] = module
        exec(compile(source, f"{BEFORE[:8]}:{path}", "exec"), module.__dict__)
        return module

    repo = load("services/notifications/adapters/repository.py", "services.notifications.adapters._repository_before")
    triggers = load("services/notifications/handlers/triggers.py", "services.notifications.handlers._triggers_before")
    triggers.repo = repo  # type: ignore[attr-defined]
    return triggers, repo


def _events(contacts: FakeContacts, referrals: int) -> list[Any]:
    out: list[Any] = []
    now = datetime.now(UTC)
    for i in range(referrals):
        client, referral = uuid.uuid4(), uuid.uuid4()
        contacts.add(client, language=["de", "uk", "ar", "tr"][i % 4], email=f"client{i}@client.test")
        from_org = (JOBCENTER, AWO, CARITAS)[i % 3]
        to_org = CARITAS if from_org != CARITAS else JOBCENTER
        sent = ReferralSent(client_id=client, referral_id=referral, from_org=from_org, to_org=to_org, service="x", sent_at=now)
        answer = ReferralAccepted(
            client_id=client, referral_id=referral, to_org=to_org, from_org=from_org if i % 2 else None, accepted_at=now
        )
        out.append(new_event(sent, source="/lotse/intake", acting_org=from_org))
        out.append(new_event(answer, source="/lotse/intake", acting_org=to_org))
        if i % 5 == 0:
            out.append(approaching(client, from_org))
    return out


async def _batches(deps: Any, envs: list[Any], batch: int, prepare: Any) -> None:
    """As `EventConsumer._apply_batch` applies them (without its inbox rows, the same in both shapes)."""
    for start in range(0, len(envs), batch):
        chunk = envs[start : start + batch]
        prep = await prepare(chunk, deps)
        token = consumer._prepared.set(prep)
        try:
            async with deps.db.pool.acquire() as conn, conn.transaction():
                for env in chunk:
                    await handlers[env.type](env, conn, deps)
        finally:
            consumer._prepared.reset(token)


handlers: dict[str, Any] = {}


def _proc_cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes (PostgreSQL backends on this machine)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / 100.0  # clock ticks (USER_HZ)


async def _instrument(pool: asyncpg.Pool, counter: list[int]) -> list[int]:
    """A query logger on every connection the pool may hand out; returns their backend pids."""
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    pids = []
    for conn in held:
        conn.add_query_logger(lambda _q: counter.__setitem__(0, counter[0] + 1))
        pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
    for conn in held:
        await pool.release(conn)
    return pids


async def main(referrals: int, rounds: int, batch: int) -> dict[str, Any]:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("services").setLevel(logging.ERROR)
    before, _ = _load_before()
    run = uuid.uuid4().hex[:8]
    schema = f"notif_rbench_{run}"
    network = Path(f"/tmp/lotse-bench-network-{run}.yaml")
    network.write_text(NETWORK_YAML, encoding="utf-8")
    results: dict[str, dict[str, float]] = {shape: {} for shape in SHAPES}
    try:
        settings = NotificationsSettings(
            topic_namespace=f"rbench{run}.",
            secret_kek=TEST_KEK,
            secret_kek_id=TEST_KEK_ID,
            webhook_signing_key=TEST_SIGNING_KEY,
            generate_keys=False,
            log_level="ERROR",
            # Never connects (no lifespan), but the runtime wants a principal: the service's own, from the local stack.
            kafka_credentials_file=KitSettings().kafka_credentials_file or REPO / ".run/kafka/credentials/lotse-notifications.properties",
        )
        contacts = FakeContacts()
        app = bootstrap(settings, schema=schema, clock=ManualClock(T0), contacts=contacts, directory=OrgDirectory.from_file(network))
        deps = app.state.deps
        await deps.db.start()  # no lifespan: no consumer, no worker
        endpoint = uuid.uuid4()
        sealed = seal_secret(deps.secrets, "whsec_bench", endpoint)
        await deps.db.pool.execute(
            """INSERT INTO webhook_endpoints (id, org_id, url, secret_kek_id, secret_nonce, secret_ciphertext)
               VALUES ($1, $2, 'https://hooks.awo.test/lotse', $3, $4, $5)""",
            endpoint,
            AWO,
            sealed.kek_id,
            sealed.nonce,
            sealed.ciphertext,
        )
        statements = [0]
        pids = await _instrument(deps.db.pool, statements)
        shapes = {
            "before": ({t: before.record_notifications for t in EVENT_HANDLERS if t != "lotse.client.erased"}, before.prepare_triggers),
            "after": (EVENT_HANDLERS, prepare_triggers),
        }
        for r in range(rounds + 1):  # round 0 warms both shapes up (plans, caches) and is not counted
            for shape in SHAPES if r % 2 == 0 else tuple(reversed(SHAPES)):
                envs = _events(contacts, referrals if r else 20)
                handlers.clear()
                handlers.update(shapes[shape][0])
                stmts, pg = statements[0], _proc_cpu_s(pids)
                cpu, wall = time.process_time(), time.perf_counter()
                await _batches(deps, envs, batch, shapes[shape][1])
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                pg = _proc_cpu_s(pids) - pg
                if r == 0:
                    continue
                acc = results[shape]
                for key, value in (
                    ("events", len(envs)),
                    ("cpu_s", cpu),
                    ("pg_cpu_s", pg),
                    ("wall_s", wall),
                    ("statements", statements[0] - stmts),
                ):
                    acc[key] = acc.get(key, 0) + value
        rows = await deps.db.pool.fetchval("SELECT count(*) FROM notifications")
        await deps.db.close(5)
    finally:
        network.unlink(missing_ok=True)
        conn = await asyncpg.connect(KitSettings().database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.execute(f"DROP ROLE IF EXISTS lotse_{schema}")
        finally:
            await conn.close()

    events = int(results["after"]["events"])
    print(f"{events} trigger events per shape ({referrals} referrals x {rounds} rounds), batches of {batch}; {rows} rows recorded in all")
    print(f"{'per trigger event':28}{'before':>10}{'after':>10}{'before/after':>14}")
    summary: dict[str, Any] = {"rows": rows}
    for label, key, scale in (
        ("CPU ms (this process)", "cpu_s", 1000.0),
        ("CPU ms (PostgreSQL)", "pg_cpu_s", 1000.0),
        ("wall ms", "wall_s", 1000.0),
        ("SQL statements", "statements", 1.0),
    ):
        got = {shape: results[shape][key] / results[shape]["events"] * scale for shape in SHAPES}
        ratio = got["before"] / got["after"] if got["after"] else float("inf")
        summary[key] = {**got, "ratio": ratio}
        print(f"{label:28}{got['before']:10.3f}{got['after']:10.3f}{ratio:14.2f}")
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--referrals", type=int, default=200, help="referrals per shape and round (about 2.2 trigger events each)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=20, help="events per consumer batch")
    a = p.parse_args()
    asyncio.run(main(a.referrals, a.rounds, a.batch))
