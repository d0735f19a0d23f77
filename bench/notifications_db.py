"""PostgreSQL's work per notification (record, claim, outcome), before and after migration 004 (issue 14), in the same run.

    .venv/bin/python -m bench.notifications_db [--referrals 300] [--rounds 3] [--batch 50]

Only the notifications service's SQL, as the consumer and the delivery worker issue it, no sending: per referral two
trigger events (`lotse.referral.sent`, `.accepted`), each recorded with one multi-row INSERT of two e-mail rows (the
client's and the organisation's), i.e. four notifications per referral as in the end-to-end bench. The delivery side
claims up to `--batch` due e-mails after each consumer batch (20 events, one transaction) and records the outcomes of
the batch it claimed before (`finish_attempts`, all delivered), so one batch is in flight during each claim, as in the
service at a steady rate. Each shape has its own fresh schema with `--prefill` delivered notifications of the past and
autovacuum off for its tables (the bench vacuums, and counts it); the shapes are alternated `--rounds` times on fresh
rows (a first round warms both up and is not counted):

- before: migrations 001-003 and adapters/repository.py as of commit BEFORE (loaded from git): six indexes on
  `notifications`, the claim moves `status` and `next_attempt_at` (both indexed), so every update is non-HOT;
- after: every migration (004: the lease in `leased_until`, in no index; no index names `status`; no GIN;
  fillfactor 50) and the working tree's repository: the claim is a HOT update, the final outcome is not (the row
  leaves the due index).

Reports per notification: CPU of the PostgreSQL backends serving the pool (from /proc), split into recording and
delivery; CPU of one VACUUM of the shape's tables after the counted rounds (what autovacuum would do: dead row versions,
dead index entries, the GIN's pending list); the WAL written (the whole cluster's: other activity on the machine adds
noise to both shapes); SQL statements; and the share of updates of `notifications` that were HOT
(pg_stat_user_tables); with the ratio before / after. The schemas are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

from lotse_kit import db
from lotse_kit.settings import KitSettings
from services.notifications.adapters import repository as current_repo
from services.notifications.domain.model import Channel, Decision, Outcome, Status

REPO = Path(__file__).resolve().parents[1]
MIGRATIONS = REPO / "services/notifications/migrations"
# The last commit before migration 004 (the claim moved indexed columns; six indexes).
BEFORE = "c7126a027cad46789720a139701e1c45fa510695"
SHAPES = ("before", "after")
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
POOL_SIZE = 4


def _load_before_repo() -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE}:services/notifications/adapters/repository.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "services.notifications.adapters._repository_before_004"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "services.notifications.adapters"
    sys.modules[name] = module
    exec(compile(source, f"{BEFORE[:8]}:repository.py", "exec"), module.__dict__)
    return module


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Shape:
    def __init__(self, name: str, repo: ModuleType, migrations: list[db.Migration], admin_dsn: str, run: str) -> None:
        self.name, self.repo = name, repo
        self.schema = f"notif_dbbench_{name}_{run}"
        self.db = db.Database(
            admin_dsn,
            service="notifications-bench",
            schema=self.schema,
            role=f"lotse_{self.schema}",
            password=secrets.token_urlsafe(16),
            migrations=migrations,
            pool_max_size=POOL_SIZE,
        )
        self.pool: asyncpg.Pool | None = None
        self.statements = 0
        self.pids: list[int] = []
        self.acc: dict[str, float] = {}

    tables = ("notifications", "delivery_attempts")

    async def start(self, prefill: int, fillfactor: int | None, admin: asyncpg.Connection) -> None:
        """`admin`: the tables' owner (the migrations ran as it)."""
        await self.db.start()  # provisions the schema and role, applies the migrations
        await self.db.close(5)
        # A pool of its own: every connection open for the whole run (no replacement after asyncpg's default 50,000
        # queries, which would take a counted backend away), so that /proc sees all the work.
        self.pool = await asyncpg.create_pool(
            self.db.dsn,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            max_queries=2**31 - 1,
            max_inactive_connection_lifetime=0,
            server_settings={"search_path": self.schema},
        )
        if fillfactor is not None:
            await admin.execute(f"ALTER TABLE {self.schema}.notifications SET (fillfactor = {int(fillfactor)})")
        # Cleanup is counted by this bench (`_vacuum`), not left to autovacuum's workers whose CPU it does not see.
        for table in self.tables:
            await admin.execute(f"ALTER TABLE {self.schema}.{table} SET (autovacuum_enabled = false)")
        if prefill:
            await _prefill(self.pool, prefill)
            for table in self.tables:
                await admin.execute(f"VACUUM ANALYZE {self.schema}.{table}")
        held = [await self.pool.acquire() for _ in range(POOL_SIZE)]
        for conn in held:
            conn.add_query_logger(self._count)
            self.pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
        for conn in held:
            await self.pool.release(conn)

    def _count(self, _query: object) -> None:
        self.statements += 1

    def add(self, key: str, value: float) -> None:
        self.acc[key] = self.acc.get(key, 0.0) + value


async def _vacuum(admin: asyncpg.Connection, shape: Shape) -> None:
    """What autovacuum (off for these tables) does, on the admin's connection (the tables' owner): dead row versions,
    dead index entries, the GIN's pending list."""
    for table in shape.tables:
        await admin.execute(f"VACUUM {shape.schema}.{table}")


async def _prefill(pool: asyncpg.Pool, rows: int) -> None:
    """`rows` delivered notifications (and their attempts) of the past, so that tables and indexes have a size."""
    await pool.execute(
        """INSERT INTO notifications (id, trigger_event_id, trigger_type, client_id, recipient_kind, recipient_org, recipient_key,
                                      channel, template, language, payload, concerned_orgs, status, attempts, completed_at, created_at)
           SELECT gen_random_uuid(), e, 'lotse.referral.sent', c, 'client', 'jobcenter-essen', 'client:' || c, 'email',
                  'referral_sent.client', 'de',
                  jsonb_build_object('client_id', c, 'referral_id', gen_random_uuid(), 'from_org', 'jobcenter-essen',
                                     'to_org', 'caritas-essen', 'service', 'Sprachkurs (Integrationskurs, Modul 3)',
                                     'sent_at', '2031-03-03T09:00:00+00:00', 'accepted_at', '2031-03-04T10:15:00+00:00',
                                     'on_behalf_of', 'jobcenter-essen', 'note_category', 'language_course'),
                  ARRAY['jobcenter-essen', 'caritas-essen'], 'delivered', 1, now(), now() - make_interval(secs => g)
             FROM generate_series(1, $1) g, LATERAL (SELECT gen_random_uuid() AS e, gen_random_uuid() AS c, g AS i) x""",
        rows,
    )
    await pool.execute(
        """INSERT INTO delivery_attempts (notification_id, attempt, started_at, finished_at, outcome, reason)
           SELECT id, 1, created_at, created_at, 'delivered', 'accepted by the SMTP relay' FROM notifications"""
    )


def _rows(referrals: int) -> list[list[tuple[Any, datetime]]]:
    """Per trigger event, its rows (as the trigger handlers build them): a client e-mail and an organisation e-mail."""
    repo = current_repo
    events = []
    for i in range(referrals):
        client, referral = uuid.uuid4(), uuid.uuid4()
        from_org, to_org = ("jobcenter-essen", "caritas-essen") if i % 2 else ("awo-essen", "jobcenter-essen")
        for trigger in ("lotse.referral.sent", "lotse.referral.accepted"):
            payload = {
                "client_id": str(client),
                "referral_id": str(referral),
                "from_org": from_org,
                "to_org": to_org,
                "service": "Sprachkurs (Integrationskurs, Modul 3)",
                "sent_at": "2031-03-03T09:00:00+00:00",
                "accepted_at": "2031-03-04T10:15:00+00:00",
                "on_behalf_of": from_org,
                "note_category": "language_course",
            }
            event = uuid.uuid4()
            common = dict(
                trigger_event_id=event,
                trigger_type=trigger,
                client_id=str(client),
                channel=Channel.EMAIL,
                payload=payload,
                concerned_orgs=[from_org, to_org],
            )
            template = trigger.removeprefix("lotse.").replace(".", "_")
            events.append(
                [
                    repo.NewNotification(
                        **common,  # type: ignore[arg-type]
                        recipient_kind="client",
                        recipient_org=from_org,
                        recipient_key=f"client:{client}",
                        template=f"{template}.client",
                        language="uk",
                    ),
                    repo.NewNotification(
                        **common,  # type: ignore[arg-type]
                        recipient_kind="organisation",
                        recipient_org=from_org,
                        recipient_key=f"org:{from_org}",
                        template=f"{template}.org",
                        language="de",
                    ),
                ]
            )
    return [[(n, T0) for n in rows] for rows in events]


async def _round(shape: Shape, referrals: int, batch: int, now: datetime, count: bool) -> None:
    """Steady state: after each consumer batch (20 trigger events, one transaction) the worker claims what is due and
    records the outcomes of the batch it claimed before (so one batch is in flight during each claim); then the rest."""
    repo = shape.repo
    # The repository of BEFORE has its own NewNotification class (same fields).
    events = [[(repo.NewNotification(**vars(n)), now) for n, _ in rows] for rows in _rows(referrals)]
    pool = shape.pool
    assert pool is not None
    spent = {"record": [0.0, 0], "deliver": [0.0, 0]}  # backend CPU s, statements

    def measure(phase: str, cpu: float, stmts: int) -> None:
        spent[phase][0] += _cpu_s(shape.pids) - cpu
        spent[phase][1] += shape.statements - stmts

    in_flight: list[Any] = []
    delivered = 0

    async def deliver() -> list[Any]:
        nonlocal delivered
        claimed = await repo.claim_due(pool, Channel.EMAIL, batch, 120.0, now)
        if in_flight:  # the previous batch's outcomes arrive after this claim: its rows were in flight during it
            outcome = Outcome.delivered("accepted by the SMTP relay")
            done = [repo.Finished(r, outcome, Decision(Status.DELIVERED, None), now, now) for r in in_flight]
            async with pool.acquire() as conn, conn.transaction():
                delivered += len(await repo.finish_attempts(conn, done))
        return list(claimed)

    for start in range(0, len(events), 20):
        cpu, stmts = _cpu_s(shape.pids), shape.statements
        async with pool.acquire() as conn, conn.transaction():
            for rows in events[start : start + 20]:
                await repo.insert_notifications(conn, rows)
        measure("record", cpu, stmts)
        cpu, stmts = _cpu_s(shape.pids), shape.statements
        in_flight = await deliver()
        measure("deliver", cpu, stmts)
    cpu, stmts = _cpu_s(shape.pids), shape.statements
    while in_flight:
        in_flight = await deliver()
    measure("deliver", cpu, stmts)
    notifications = sum(len(rows) for rows in events)
    assert delivered == notifications, (shape.name, delivered, notifications)
    if count:
        shape.add("notifications", notifications)
        for phase, (cpu_s, statements) in spent.items():
            shape.add(f"{phase}_cpu_s", cpu_s)
            shape.add(f"{phase}_statements", statements)


async def main(referrals: int, rounds: int, batch: int, prefill: int, fillfactor: int | None) -> dict[str, Any]:
    admin_dsn = KitSettings().database_url
    run = uuid.uuid4().hex[:8]
    kit = db.load_migrations("kit", db.KIT_MIGRATIONS)
    own = db.load_migrations("notifications", MIGRATIONS)
    shapes = {
        "before": Shape("before", _load_before_repo(), kit + [m for m in own if m.version < "notifications:004"], admin_dsn, run),
        "after": Shape("after", current_repo, kit + own, admin_dsn, run),
    }
    hot: dict[str, tuple[int, int]] = {}
    try:
        now = T0
        admin = await asyncpg.connect(admin_dsn)
        try:
            for shape in shapes.values():
                await shape.start(prefill, fillfactor if shape.name == "after" else None, admin)
            admin_pid = await admin.fetchval("SELECT pg_backend_pid()")
            for r in range(rounds + 1):
                for name in SHAPES:
                    now += timedelta(minutes=1)
                    wal = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
                    n = referrals if r else max(20, referrals // 5)
                    await _round(shapes[name], n, batch, now, r > 0)
                    if r:  # the whole cluster's WAL: other activity on this machine adds noise to both shapes
                        shapes[name].add("wal_bytes", float(await admin.fetchval("SELECT pg_current_wal_insert_lsn() - $1::pg_lsn", wal)))
                    # Dead row versions and index entries pile up between the rounds as between autovacuum's visits;
                    # the cleanup is counted once at the end (the warm-up's before the counted rounds, not counted).
                    if r in (0, rounds):
                        cpu = _cpu_s([admin_pid])
                        await _vacuum(admin, shapes[name])
                        if r:
                            shapes[name].add("vacuum_cpu_s", _cpu_s([admin_pid]) - cpu)
        finally:
            await admin.close()
        for shape in shapes.values():
            assert shape.pool is not None
            await shape.pool.close()  # a backend flushes its table statistics when it exits (else at most once a second)
            shape.pool = None
        await asyncio.sleep(0.5)
        admin = await asyncpg.connect(admin_dsn)
        try:
            for name, shape in shapes.items():
                row = await admin.fetchrow(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'notifications'",
                    shape.schema,
                )
                hot[name] = (row["n_tup_upd"], row["n_tup_hot_upd"])
        finally:
            await admin.close()
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            for shape in shapes.values():
                if shape.pool is not None:
                    await shape.pool.close()
                await admin.execute(f"DROP SCHEMA IF EXISTS {shape.schema} CASCADE")
                await admin.execute(f"DROP ROLE IF EXISTS {shape.db.role}")
        finally:
            await admin.close()

    n = int(shapes["after"].acc["notifications"])
    print(f"{n} notifications per shape ({referrals} referrals x 4 x {rounds} rounds), claims of {batch}")
    print(f"{'per notification':34}{'before':>10}{'after':>10}{'before/after':>14}")
    summary: dict[str, Any] = {}
    lines = (
        ("PostgreSQL CPU ms, recording", ("record_cpu_s",), 1000.0),
        ("PostgreSQL CPU ms, claim+outcome", ("deliver_cpu_s",), 1000.0),
        ("PostgreSQL CPU ms, VACUUM", ("vacuum_cpu_s",), 1000.0),
        ("PostgreSQL CPU ms, total", ("record_cpu_s", "deliver_cpu_s", "vacuum_cpu_s"), 1000.0),
        ("WAL kB (whole cluster)", ("wal_bytes",), 1 / 1024),
        ("SQL statements", ("record_statements", "deliver_statements"), 1.0),
    )
    for label, keys, scale in lines:
        got = {s: sum(shapes[s].acc[k] for k in keys) / shapes[s].acc["notifications"] * scale for s in SHAPES}
        ratio = got["before"] / got["after"] if got["after"] else float("inf")
        summary[label] = {**got, "ratio": ratio}
        print(f"{label:34}{got['before']:10.3f}{got['after']:10.3f}{ratio:14.2f}")
    shares = {s: hot[s][1] / hot[s][0] if hot[s][0] else 0.0 for s in SHAPES}
    summary["hot_share"] = shares
    print(f"{'HOT updates / updates (all rounds)':34}{shares['before']:10.2f}{shares['after']:10.2f}")
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--referrals", type=int, default=300, help="referrals per shape and round (4 notifications each)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=50, help="rows per claim (the worker's batch size)")
    p.add_argument("--prefill", type=int, default=100_000, help="delivered notifications of the past in each schema")
    p.add_argument("--fillfactor", type=int, help="an experiment: this fillfactor for `notifications` after, not migration 004's")
    a = p.parse_args()
    asyncio.run(main(a.referrals, a.rounds, a.batch, a.prefill, a.fillfactor))
