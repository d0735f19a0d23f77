"""The delivery worker's cost per e-mail, per row against per batch, smtplib in a thread against the asyncio client.

    .venv/bin/python -m bench.notifications_delivery [--n 300] [--rounds 2] [--batch 50] [--smtp-only]

Records `--n` e-mail notifications (half to clients, half to their caseworkers) through the service's own handler
into a fresh schema (PostgreSQL of the local stack; no Kafka), then sends them to an SMTP sink in its own process
(`aiosmtpd` with its discarding handler; a second one also advertises PIPELINING), in five shapes, alternated
`--rounds` times on fresh rows:

- before (the worker before issue 14): every claimed row is its own attempt, in its own task: a contact lookup,
  a new SMTP connection (connect, EHLO, send, QUIT) by smtplib in a thread, the message built with `EmailMessage`
  (the header registry), a transaction for its outcome;
- per row: the same with the cheaper message building (`email.mime`, compat32) alone;
- thread batch: one `send_batch` per claim: contacts once per client, every e-mail over one kept-open SMTP
  connection by smtplib in one thread hop (4 round trips per e-mail), the outcomes in one transaction; messages
  built with plain compat32 (a random MIME boundary, every header folded through `email.header`): the sender
  before the asyncio client;
- async batch: the service's sender: its SMTP client (`adapters/smtp.py`, on the event loop) and its message
  bytes (written directly, `adapters/mailbytes.py`), the sink without PIPELINING (one command at a time);
- pipelined: the same, the sink with PIPELINING (about one round trip per e-mail): what the service does against a
  relay that offers it (Postfix, the local `lotse_cli.mailsink`).

Reports this process's CPU per e-mail (all threads; the sinks and PostgreSQL are other processes), wall time, the
SQL statements per e-mail (counted by asyncpg query loggers on every pool connection), SMTP connections, the sink's
CPU per e-mail (from /proc, not counted in ours), and the ratios before / pipelined and thread batch / pipelined
(the SMTP client's own gain). Intake's contact API is an in-process fake without latency: the HTTP lookups cost
the same in every shape here. The schema is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from pathlib import Path
from typing import Any

import asyncpg

from lotse_kit.clock import ManualClock
from lotse_kit.network import OrgDirectory
from lotse_kit.settings import KitSettings
from services.notifications.adapters import repository as repo
from services.notifications.adapters.senders import Email, SmtpSender, _smtp_outcome
from services.notifications.adapters.smtp import Envelope, envelope_of
from services.notifications.bootstrap import bootstrap
from services.notifications.config import NotificationsSettings
from services.notifications.domain.model import Channel, Outcome
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


class ThreadSender(SmtpSender):
    """The sender before the asyncio client: smtplib in a worker thread, one thread hop per batch, connections kept
    open between batches, messages built with plain compat32 (its essentials; the outcome mapping is the service's)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kept: list[smtplib.SMTP] = []

    def _build_compat32(self, *, to: str, rendered: Any, message_id: str) -> Message:
        text = MIMEText(rendered.text, "plain", "utf-8")
        msg: Message = text
        if rendered.html:
            msg = MIMEMultipart("alternative")
            msg.attach(text)
            msg.attach(MIMEText(rendered.html, "html", "utf-8"))
        subject = rendered.subject or ""
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = subject if subject.isascii() and not any(c in subject for c in "\r\n") else Header(subject, "utf-8")  # type: ignore[assignment]
        msg["Date"] = formatdate(self.clock.now().timestamp(), usegmt=True)
        msg["Message-ID"] = f"<{message_id}@notifications.lotse>"
        msg["Auto-Submitted"] = "auto-generated"
        msg["Content-Language"] = rendered.language
        return msg

    async def send_many(self, emails: Sequence[Email]) -> list[Outcome]:
        return await asyncio.to_thread(self._send_many_sync, emails) if emails else []

    async def aclose(self) -> None:
        kept, self._kept = self._kept, []
        for conn in kept:
            await asyncio.to_thread(conn.quit)

    def _send_many_sync(self, emails: Sequence[Email]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        conn = self._kept.pop() if self._kept else None
        for e in emails:
            msg = self.build(to=e.to, rendered=e.rendered, message_id=e.message_id)
            if conn is None:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
                self.connections += 1
            try:
                conn.send_message(msg)
                outcomes.append(Outcome.delivered("accepted by the SMTP relay"))
            except Exception as exc:
                outcomes.append(_smtp_outcome(exc))
                conn.close()
                conn = None
        if conn is not None:
            if len(self._kept) < self.max_idle:
                self._kept.append(conn)
            else:
                conn.quit()
        return outcomes


class BuiltSender(SmtpSender):
    """The service's sender with the message built by the `email` package and flattened by its generator (compat32
    with remembered header folding), as before the bytes were written directly (issue 14)."""

    def envelope(self, *, to: str, rendered: Any, message_id: str) -> Envelope:
        return envelope_of(self.build(to=to, rendered=rendered, message_id=message_id))


class BeforeSender(ThreadSender):
    """Builds every message with EmailMessage, as the sender did before issue 14."""

    def build(self, *, to: str, rendered: Any, message_id: str) -> Any:
        return self._build_modern(to=to, rendered=rendered, message_id=message_id)


SHAPES = ("before", "per_row", "thread_batch", "async_batch", "pipelined")
LABELS = ("before", "per row", "thr batch", "async", "pipelined")


class PipeliningSink:
    """aiosmtpd's discarding handler, advertising PIPELINING (aiosmtpd handles pipelined commands, but does not say so)."""

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _run_sink(port: int) -> None:
    """`--pipelining-sink PORT`: this module as the sink process."""
    from aiosmtpd.controller import Controller

    controller = Controller(PipeliningSink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    port, pipelining_port = free_port(), free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pipelining_sink = subprocess.Popen(
        [sys.executable, "-m", "bench.notifications_delivery", "--pipelining-sink", str(pipelining_port)],
        cwd=REPO,
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
        common: dict[str, Any] = {"host": "127.0.0.1", "mail_from": settings.mail_from, "clock": deps.clock}
        senders: dict[str, SmtpSender] = {
            "before": BeforeSender(port=port, max_idle=0, **common),
            "per_row": ThreadSender(port=port, max_idle=0, **common),
            "thread_batch": ThreadSender(port=port, **common),
            "async_batch": SmtpSender(port=port, **common),
            "pipelined": SmtpSender(port=pipelining_port, **common),
        }
        sink_pid = {shape: (pipelining_sink if shape == "pipelined" else sink).pid for shape in SHAPES}
        due = T0 + timedelta(days=1)
        for r in range(rounds + 1):  # round 0 warms both shapes up (templates, plans, connections) and is not counted
            for shape in SHAPES:
                due += timedelta(days=1)
                await _record(deps, contacts, max(1, (n if r else 20) // 2), due)
                deps.email = senders[shape]
                before_conns, before_stmts = senders[shape].connections, statements[0]
                sink_cpu = _cpu_s(sink_pid[shape])
                cpu, wall = time.process_time(), time.perf_counter()
                sent = await _send(deps, due, batch, shape in ("before", "per_row"))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                sink_cpu = _cpu_s(sink_pid[shape]) - sink_cpu
                if r == 0:
                    continue
                acc = results[shape]
                for key, value in (
                    ("emails", sent),
                    ("cpu_s", cpu),
                    ("wall_s", wall),
                    ("statements", statements[0] - before_stmts),
                    ("smtp_connections", senders[shape].connections - before_conns),
                    ("sink_cpu_s", sink_cpu),
                ):
                    acc[key] = acc.get(key, 0) + value
        for sender in senders.values():
            await sender.aclose()
        failed = await deps.db.pool.fetchval("SELECT count(*) FROM notifications WHERE status <> 'delivered'")
        await deps.db.close(5)
    finally:
        for process in (sink, pipelining_sink):
            process.terminate()
            process.wait()
        network.unlink(missing_ok=True)
        conn = await asyncpg.connect(KitSettings().database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.execute(f"DROP ROLE IF EXISTS lotse_{schema}")
        finally:
            await conn.close()

    def per_email(shape: str, key: str) -> float:
        return results[shape][key] / results[shape]["emails"]

    print(f"{int(results['pipelined']['emails'])} e-mails per shape, batches of {batch}, {rounds} rounds; not delivered: {failed}")
    print(f"{'':28}" + "".join(f"{label:>11}" for label in LABELS) + f"{'before/pipe':>13}{'thread/pipe':>13}")
    rows = (
        ("CPU ms / e-mail", "cpu_s", 1000.0),
        ("wall ms / e-mail", "wall_s", 1000.0),
        ("SQL statements / e-mail", "statements", 1.0),
        ("SMTP connections / 100", "smtp_connections", 100.0),
        ("sink CPU ms / e-mail", "sink_cpu_s", 1000.0),
    )
    summary: dict[str, Any] = {"failed": failed}
    for label, key, scale in rows:
        got = {shape: per_email(shape, key) * scale for shape in SHAPES}
        after = got["pipelined"]
        ratios = [got["before"] / after if after else float("inf"), got["thread_batch"] / after if after else float("inf")]
        summary[key] = {**got, "ratio": ratios[0], "ratio_thread": ratios[1]}
        cells = "".join(f"{got[shape]:11.3f}" for shape in SHAPES)
        print(f"{label:28}{cells}{ratios[0]:13.1f}{ratios[1]:13.1f}")
    return summary


SMTP_SHAPES = ("thread_batch", "built", "async_batch", "pipelined")


async def smtp_only(n: int, rounds: int, batch: int) -> dict[str, float]:
    """`--smtp-only`: the sender alone (message bytes, SMTP), no database: `n` e-mails in batches of `batch`, one
    batch after the other, per shape, alternated; this process's CPU per e-mail. `built` is `pipelined` with the
    message built and flattened by the `email` package (the sender before its bytes were written directly)."""
    from services.notifications.adapters.templates import Rendered

    port, pipelining_port = free_port(), free_port()
    sinks = [
        subprocess.Popen(
            [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "bench.notifications_delivery", "--pipelining-sink", str(pipelining_port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    # About the size of a rendered notification: a text part and an HTML part.
    rendered = Rendered(
        "de",
        "Guten Tag,\n\n" + "die Frist für Ihren Antrag läuft bald ab. " * 12 + "\n",
        subject="Frist läuft ab",
        html="<p>" + "Frist " * 400 + "</p>",
    )
    emails = [Email(f"c{i}@client.test", rendered, str(uuid.uuid4())) for i in range(n)]
    common: dict[str, Any] = {"host": "127.0.0.1", "mail_from": "Lotse <no-reply@lotse.invalid>"}
    senders: dict[str, SmtpSender] = {
        "thread_batch": ThreadSender(port=port, **common),
        "built": BuiltSender(port=pipelining_port, **common),
        "async_batch": SmtpSender(port=port, **common),
        "pipelined": SmtpSender(port=pipelining_port, **common),
    }
    cpu_s = dict.fromkeys(SMTP_SHAPES, 0.0)
    try:
        await asyncio.sleep(1.0)  # the sinks start
        for r in range(rounds + 1):  # round 0 warms up and is not counted
            for shape in SMTP_SHAPES:
                cpu = time.process_time()
                for i in range(0, n, batch):
                    outcomes = await senders[shape].send_many(emails[i : i + batch])
                    assert all(o.kind.value == "delivered" for o in outcomes), outcomes
                if r:
                    cpu_s[shape] += time.process_time() - cpu
        for sender in senders.values():
            await sender.aclose()
    finally:
        for process in sinks:
            process.terminate()
            process.wait()
    per = {shape: cpu_s[shape] / (n * rounds) * 1000 for shape in SMTP_SHAPES}
    print(f"SMTP sender alone, {n} e-mails x {rounds} rounds per shape, batches of {batch}: CPU ms / e-mail")
    print("".join(f"{shape:>14}" for shape in SMTP_SHAPES) + f"{'thread/pipe':>13}{'thread/async':>13}{'built/pipe':>13}")
    print(
        "".join(f"{per[shape]:14.3f}" for shape in SMTP_SHAPES)
        + f"{per['thread_batch'] / per['pipelined']:13.2f}{per['thread_batch'] / per['async_batch']:13.2f}"
        + f"{per['built'] / per['pipelined']:13.2f}"
    )
    return per


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="e-mails per shape and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=50, help="rows per claim (the worker's batch size)")
    p.add_argument(
        "--smtp-only", action="store_true", help="the SMTP sender alone (no database): thread batch, built, async batch, pipelined"
    )
    p.add_argument("--pipelining-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.pipelining_sink:
        _run_sink(a.pipelining_sink)
    elif a.smtp_only:
        asyncio.run(smtp_only(a.n, a.rounds, a.batch))
    else:
        asyncio.run(main(a.n, a.rounds, a.batch))
