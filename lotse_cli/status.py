"""`lotse status`: the state of a running network in one look, for operators.

    lotse status            # tables; exit 1 when something is down
    lotse status --json     # the same as one JSON document, for scripts

It reads, as the operator (the provisioning principal and the provisioning database role):

- every service's liveness and readiness (`/health/live`, `/health/ready`, with what is down);
- consumer lag per group and partition (committed offset against the end of the partition), for the
  services' groups (`lotse-<schema>-…`) and the partners' (`partner.<org>.…`) in this namespace;
- the outbox backlog per service schema (rows not yet on Kafka, the oldest one's age, the last error);
- dead letters: the records on every `.dlq` topic;
- the audit log's size and its last signed tree head (the checkpoint), and how far the log is past it.

"Down" (exit 1) means: a service not live or not ready, or a source that could not be read (Kafka or
PostgreSQL away). Lag, backlog and dead letters are reported, not judged: they need a person's reading.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import httpx
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from contracts.topics import DLQ_SUFFIX
from lotse_cli.admin import kafka_settings
from lotse_kit.kafka import admin_client
from lotse_kit.settings import SERVICE_PORTS, KitSettings

console = Console()


@dataclass
class ServiceState:
    name: str
    url: str
    live: bool
    ready: bool
    down: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Lag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass
class Backlog:
    schema: str
    rows: int
    oldest_s: float | None
    max_attempts: int
    last_error: str | None


@dataclass
class DeadLetters:
    topic: str
    records: int


@dataclass
class AuditState:
    schema: str
    entries: int
    tree_size: int | None
    signed_at: str | None
    unsigned: int


@dataclass
class Status:
    services: list[ServiceState]
    lag: list[Lag]
    outboxes: list[Backlog]
    dead_letters: list[DeadLetters]
    audit: list[AuditState]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------ sources
async def services_state(host: str) -> list[ServiceState]:
    out = []
    async with httpx.AsyncClient(timeout=3) as http:
        for name, default in SERVICE_PORTS.items():
            port = os.environ.get(f"LOTSE_{name.upper()}_HTTP_PORT", default)  # as deploy/local/services.sh
            url = f"http://{host}:{port}"
            try:
                live = (await http.get(url + "/health/live")).status_code == 200
                r = await http.get(url + "/health/ready")
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                out.append(ServiceState(name, url, live, r.status_code == 200, list(body.get("down", []))))
            except httpx.HTTPError as exc:
                out.append(ServiceState(name, url, False, False, error=type(exc).__name__))
    return out


def _ours(name: str, namespace: str, prefixes: tuple[str, ...]) -> bool:
    """A group or topic of this namespace (not another district's, nor a test run's `t<id>.` namespace)."""
    return name.startswith(namespace) and name.removeprefix(namespace).startswith(prefixes)


async def kafka_state(s: KitSettings) -> tuple[list[Lag], list[DeadLetters]]:
    conn = s.kafka()
    admin = admin_client(conn, client_id="lotse-status")
    await admin.start()
    try:
        groups = sorted(g[0] for g in await admin.list_consumer_groups() if _ours(g[0], s.topic_namespace, ("lotse-", "partner.")))
        committed: dict[str, dict[TopicPartition, int]] = {}
        for g in groups:
            offsets = await admin.list_consumer_group_offsets(g)
            committed[g] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        # (a group's committed offsets name only this namespace's topics: its consumers subscribe to nothing else)
        topics = [t for t in await admin.list_topics() if _ours(t, s.topic_namespace, ("lotse.", "partner."))]
        described = await admin.describe_topics(topics) if topics else []
        partitions = sorted(TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"])
    finally:
        await admin.close()
    # End (and, for dead letters, beginning) offsets, read with a group-less consumer.
    consumer = AIOKafkaConsumer(group_id=None, client_id="lotse-status", **conn.aiokafka())
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions) if partitions else {}
        dlq_parts = [tp for tp in partitions if tp.topic.endswith(DLQ_SUFFIX)]
        starts = await consumer.beginning_offsets(dlq_parts) if dlq_parts else {}
    finally:
        await consumer.stop()
    lag = [
        Lag(g, tp.topic, tp.partition, committed[g].get(tp), ends.get(tp, 0), max(0, ends.get(tp, 0) - committed[g].get(tp, 0)))
        for g in groups
        for tp in sorted(committed[g], key=lambda x: (x.topic, x.partition))
    ]
    dead: dict[str, int] = {}
    for tp in dlq_parts:
        dead[tp.topic] = dead.get(tp.topic, 0) + ends.get(tp, 0) - starts.get(tp, 0)
    return lag, [DeadLetters(t, n) for t, n in sorted(dead.items())]


async def database_state(s: KitSettings) -> tuple[list[Backlog], list[AuditState]]:
    conn = await asyncpg.connect(s.database_url, timeout=5)
    try:
        now = datetime.now(UTC)
        backlogs = []
        # The kit's outbox (lotse_kit/migrations/001_outbox.sql); a table of that name with other columns is not ours.
        kit_outboxes = await conn.fetch(
            "SELECT table_schema FROM information_schema.columns WHERE table_name = 'outbox' "
            "GROUP BY table_schema HAVING count(*) FILTER (WHERE column_name IN ('created_at', 'attempts', 'last_error', 'id')) = 4 ORDER BY 1"
        )
        for r in kit_outboxes:
            schema = r["table_schema"]
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, min(created_at) AS oldest, coalesce(max(attempts), 0) AS attempts, "
                f'(array_agg(last_error ORDER BY id DESC) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error FROM "{schema}".outbox'
            )
            oldest = (now - row["oldest"]).total_seconds() if row["oldest"] else None
            backlogs.append(Backlog(schema, row["n"], oldest, row["attempts"], row["last_error"]))
        audits = []
        for r in await conn.fetch("SELECT table_schema FROM information_schema.tables WHERE table_name = 'tree_heads' ORDER BY 1"):
            schema = r["table_schema"]
            size = await conn.fetchval(f'SELECT coalesce(max(idx) + 1, 0) FROM "{schema}".audit_log')
            head = await conn.fetchrow(f'SELECT tree_size, signed_at FROM "{schema}".tree_heads ORDER BY tree_size DESC, id DESC LIMIT 1')
            audits.append(
                AuditState(
                    schema,
                    size,
                    head["tree_size"] if head else None,
                    head["signed_at"].isoformat() if head else None,
                    size - (head["tree_size"] if head else 0),
                )
            )
        return backlogs, audits
    finally:
        await conn.close()


async def collect(host: str, *, only_schemas: set[str] | None = None) -> Status:
    s = kafka_settings()
    problems: list[str] = []
    services = await services_state(host)
    for sv in services:
        if not sv.live or not sv.ready:
            problems.append(f"{sv.name}: {'not live' if not sv.live else 'not ready'}" + (f" ({', '.join(sv.down)})" if sv.down else ""))
    lag: list[Lag] = []
    dead: list[DeadLetters] = []
    try:
        lag, dead = await kafka_state(s)
    except Exception as exc:
        problems.append(f"kafka: cannot read ({type(exc).__name__}: {exc})")
    outboxes: list[Backlog] = []
    audit: list[AuditState] = []
    try:
        outboxes, audit = await database_state(s)
    except (OSError, asyncpg.PostgresError) as exc:
        problems.append(f"postgresql: cannot read ({type(exc).__name__})")
    if only_schemas is not None:
        outboxes = [b for b in outboxes if b.schema in only_schemas]
        audit = [a for a in audit if a.schema in only_schemas]
    return Status(services, lag, outboxes, dead, audit, problems)


# ------------------------------------------------------------------ output
def render(st: Status) -> None:
    t = Table("service", "url", "live", "ready", "down", title="Services")
    for sv in st.services:
        t.add_row(sv.name, sv.url, _yn(sv.live), _yn(sv.ready), sv.error or ", ".join(sv.down))
    console.print(t)
    t = Table("group", "topic", "partition", "committed", "end", "lag", title="Consumer lag")
    for lg in st.lag:
        t.add_row(lg.group, lg.topic, str(lg.partition), "-" if lg.committed is None else str(lg.committed), str(lg.end), str(lg.lag))
    console.print(t)
    t = Table("schema", "backlog", "oldest", "max attempts", "last error", title="Outboxes")
    for b in st.outboxes:
        t.add_row(
            b.schema, str(b.rows), "-" if b.oldest_s is None else f"{b.oldest_s:.0f} s", str(b.max_attempts), (b.last_error or "")[:80]
        )
    console.print(t)
    t = Table("topic", "records", title="Dead letters")
    for d in st.dead_letters:
        t.add_row(d.topic, str(d.records))
    console.print(t)
    t = Table("schema", "entries", "last signed tree size", "signed at", "entries since", title="Audit log")
    for a in st.audit:
        t.add_row(a.schema, str(a.entries), "-" if a.tree_size is None else str(a.tree_size), a.signed_at or "-", str(a.unsigned))
    console.print(t)
    if st.problems:
        console.print("[red]down:[/red] " + "; ".join(st.problems), markup=True)
    else:
        console.print("[green]all services live and ready[/green]")


def _yn(v: bool) -> str:
    return "yes" if v else "NO"


def status(
    host: Annotated[str, typer.Option(help="Where the services listen.")] = "127.0.0.1",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of tables.")] = False,
) -> None:
    """Services, consumer lag, outbox backlog, dead letters and the audit log; exit 1 when something is down."""
    st = asyncio.run(collect(host))
    if as_json:
        doc: dict[str, Any] = {**asdict(st), "ok": st.ok}
        print(json.dumps(doc, indent=2, default=str))
    else:
        render(st)
    raise typer.Exit(0 if st.ok else 1)
