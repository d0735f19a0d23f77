"""The delivery worker's cost per e-mail, per row against per batch, in the same run.

    .venv/bin/python -m bench.notifications_delivery [--n 300] [--rounds 2] [--batch 50]

Records `--n` e-mail notifications (half to clients, half to their caseworkers) through the service's own handler
into a fresh schema (PostgreSQL of the local stack; no Kafka), then sends them to an SMTP sink in its own process
(`aiosmtpd` with its discarding handler), in three shapes, alternated `--rounds` times on fresh rows:

- before (the worker before issue 14): every claimed row is its own attempt, in its own task: a contact lookup,
  a new SMTP connection (connect, EHLO, send, QUIT) in a thread, the message built with `EmailMessage` (the header
  registry), a transaction for its outcome;
- per row: the same with the cheaper message building (`email.mime`, compat32) alone;
- per batch: one `send_batch` per claim: contacts once per client, every e-mail over one kept-open SMTP connection
  in one thread hop, the outcomes in one transaction.

Reports this process's CPU per e-mail (all threads; the sink and PostgreSQL are other processes), wall time, the
SQL statements per e-mail (counted by asyncpg query loggers on every pool connection) and SMTP connections, and
the ratio before / per batch. Intake's contact API is an in-process fake without latency: the HTTP lookups cost
the same in both shapes here. The schema is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from lotse_kit.clock import ManualClock
from lotse_kit.network import OrgDirectory
from lotse_kit.settings import KitSettings
from services.notifications.adapters import repository as repo
from services.notifications.adapters.senders import SmtpSender
from services.notifications.bootstrap import bootstrap
from services.notifications.config import NotificationsSettings
from services.notifications.domain.model import Channel
from services.notifications.handlers import record_notifications, send_batch
from services.notifications.tests.conftest import JOBCENTER, NETWORK_YAML, TEST_KEK, TEST_KEK_ID, TEST_SIGNING_KEY, FakeContacts
from services.notifications.tests.test_delivery import approaching
from tests.peers import free_port

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


async def _count_statements(pool: asyncpg.Pool, counter: list[int]) -> None:
    """A query logger on every connection the pool may hand out."""
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    for conn in held:
        conn.add_query_logger(lambda _q: counter.__setitem__(0, counter[0] + 1))
    for conn in held:
        await pool.release(conn)


async def _record(deps: Any, contacts: FakeContacts, clients: int, due: datetime) -> None:
    for i in range(clients):
        c = uuid.uuid4()
        contacts.add(c, language=["de", "uk", "ar", "tr"][i % 4], email=f"client{i}@client.test")
        async with deps.db.pool.acquire() as conn, conn.transaction():
            await record_notifications(approaching(c, JOBCENTER), conn, deps)
            await conn.execute("UPDATE notifications SET next_attempt_at = $1 WHERE client_id = $2", due, c)


class BeforeSender(SmtpSender):
    """Builds every message with EmailMessage, as the sender did before issue 14."""

    def build(self, *, to: str, rendered: Any, message_id: str) -> Any:
        return self._build_modern(to=to, rendered=rendered, message_id=message_id)


SHAPES = ("before", "per_row", "per_batch")


async def _send(deps: Any, due: datetime, batch: int, per_row: bool) -> int:
    sent = 0
    while rows := await repo.claim_due(deps.db.pool, Channel.EMAIL, batch, 60.0, due):
        if per_row:
            await asyncio.gather(*(send_batch([row], deps) for row in rows))
        else:
            await send_batch(rows, deps)
        sent += len(rows)
    return sent


async def main(n: int, rounds: int, batch: int) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("services").setLevel(logging.WARNING)
    run = uuid.uuid4().hex[:8]
    schema = f"notif_dbench_{run}"
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    network = Path(f"/tmp/lotse-bench-network-{run}.yaml")
    network.write_text(NETWORK_YAML, encoding="utf-8")
    results: dict[str, dict[str, float]] = {shape: {} for shape in SHAPES}
    try:
        await asyncio.sleep(1.0)  # the sink starts
        settings = NotificationsSettings(
            topic_namespace=f"dbench{run}.",
            secret_kek=TEST_KEK,
            secret_kek_id=TEST_KEK_ID,
            webhook_signing_key=TEST_SIGNING_KEY,
            generate_keys=False,
            smtp_host="127.0.0.1",
            smtp_port=port,
            retry_jitter=0.0,
            log_level="WARNING",
            # Never connects (no lifespan), but the runtime wants a principal: the service's own, from the local stack.
            kafka_credentials_file=KitSettings().kafka_credentials_file or REPO / ".run/kafka/credentials/lotse-notifications.properties",
        )
        contacts = FakeContacts()
        app = bootstrap(settings, schema=schema, clock=ManualClock(T0), contacts=contacts, directory=OrgDirectory.from_file(network))
        deps = app.state.deps
        await deps.db.start()  # no lifespan: no consumer, no worker; this bench is the worker
        statements = [0]
        await _count_statements(deps.db.pool, statements)
        senders = {
            "before": BeforeSender(host="127.0.0.1", port=port, mail_from=settings.mail_from, clock=deps.clock, max_idle=0),
            "per_row": SmtpSender(host="127.0.0.1", port=port, mail_from=settings.mail_from, clock=deps.clock, max_idle=0),
            "per_batch": SmtpSender(host="127.0.0.1", port=port, mail_from=settings.mail_from, clock=deps.clock),
        }
        due = T0 + timedelta(days=1)
        for r in range(rounds + 1):  # round 0 warms both shapes up (templates, plans, connections) and is not counted
            for shape in SHAPES:
                due += timedelta(days=1)
                await _record(deps, contacts, max(1, (n if r else 20) // 2), due)
                deps.email = senders[shape]
                before_conns, before_stmts = senders[shape].connections, statements[0]
                cpu, wall = time.process_time(), time.perf_counter()
                sent = await _send(deps, due, batch, shape != "per_batch")
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if r == 0:
                    continue
                acc = results[shape]
                for key, value in (
                    ("emails", sent),
                    ("cpu_s", cpu),
                    ("wall_s", wall),
                    ("statements", statements[0] - before_stmts),
                    ("smtp_connections", senders[shape].connections - before_conns),
                ):
                    acc[key] = acc.get(key, 0) + value
        for sender in senders.values():
            await sender.aclose()
        failed = await deps.db.pool.fetchval("SELECT count(*) FROM notifications WHERE status <> 'delivered'")
        await deps.db.close(5)
    finally:
        sink.terminate()
        sink.wait()
        network.unlink(missing_ok=True)
        conn = await asyncpg.connect(KitSettings().database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.execute(f"DROP ROLE IF EXISTS lotse_{schema}")
        finally:
            await conn.close()

    def per_email(shape: str, key: str) -> float:
        return results[shape][key] / results[shape]["emails"]

    print(f"{int(results['per_batch']['emails'])} e-mails per shape, batches of {batch}, {rounds} rounds; not delivered: {failed}")
    print(f"{'':28}{'before':>10}{'per row':>10}{'per batch':>10}{'before/batch':>14}")
    rows = (
        ("CPU ms / e-mail", "cpu_s", 1000.0),
        ("wall ms / e-mail", "wall_s", 1000.0),
        ("SQL statements / e-mail", "statements", 1.0),
        ("SMTP connections / 100", "smtp_connections", 100.0),
    )
    summary: dict[str, Any] = {"failed": failed}
    for label, key, scale in rows:
        got = {shape: per_email(shape, key) * scale for shape in SHAPES}
        ratio = got["before"] / got["per_batch"] if got["per_batch"] else float("inf")
        summary[key] = {**got, "ratio": ratio}
        cells = "".join(f"{got[shape]:10.3f}" for shape in SHAPES)
        print(f"{label:28}{cells}{ratio:14.1f}")
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="e-mails per shape and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=50, help="rows per claim (the worker's batch size)")
    a = p.parse_args()
    asyncio.run(main(a.n, a.rounds, a.batch))
