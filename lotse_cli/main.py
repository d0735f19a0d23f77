"""`lotse`: one command line for operators.

lotse topics ensure      create platform and partner topics (idempotent)
lotse topics list        list Lotse topics on the broker
lotse status             services, consumer lag, outbox backlog, dead letters, audit log (exit 1 if down; --json)
lotse health             readiness of every local service
lotse dlq list           dead-letter topics and how many records each holds
lotse dlq show TOPIC     dead-lettered records with their reasons
lotse dlq replay TOPIC   put dead letters back on their topic after a fix (once; consumers stay exactly-once)
lotse outbox status      unpublished outbox rows per service
lotse audit ...          audit log verification (when the audit service is installed)
lotse demo               plays the source articles' story on the running network, narrated (exit 1 if it did not play out; --json)
lotse demo seed          a few realistic cases in a freshly started local network
lotse dev token          an access token from the local Keycloak (--org/--role, --service, --user)
lotse admin provision    Kafka principals, ACLs, quotas and topics for the network file
lotse partner listen     an organisation's inbox with its own credentials (--org; --json for NDJSON)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import asyncpg
import httpx
import typer
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

from contracts import topics
from lotse_kit.kafka import admin_client, ensure_topics
from lotse_kit.network import load_network
from lotse_kit.settings import SERVICE_PORTS, KitSettings

app = typer.Typer(help="Operate a Lotse network.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-letter topics.", no_args_is_help=True)
outbox_app = typer.Typer(help="Transactional outboxes.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")

console = Console()
REPO = Path(__file__).resolve().parent.parent
DEFAULT_NETWORK = REPO / "deploy" / "demo" / "network.yaml"
SERVICES = SERVICE_PORTS

from lotse_cli.demo import app as demo_app  # noqa: E402

app.add_typer(demo_app, name="demo")

from lotse_cli.dev import app as dev_app  # noqa: E402

app.add_typer(dev_app, name="dev")

from lotse_cli.admin import app as admin_app  # noqa: E402
from lotse_cli.admin import kafka_settings  # noqa: E402
from lotse_cli.status import status as status_cmd  # noqa: E402

app.add_typer(admin_app, name="admin")

from lotse_cli.partner import app as partner_app  # noqa: E402

app.add_typer(partner_app, name="partner")
app.command("status")(status_cmd)

try:  # the audit service brings its own verification commands
    from services.audit.cli import app as audit_app

    app.add_typer(audit_app, name="audit", help="Verify and inspect the tamper-evident audit log.")
except ImportError:  # pragma: no cover - only before the audit service exists
    pass


def _settings() -> KitSettings:
    return kafka_settings()


def network_org_ids(path: Path) -> list[str]:
    return load_network(path).org_ids()


@topics_app.command("ensure")
def topics_ensure(
    network: Annotated[Path, typer.Option(help="Network file whose organisations get partner topics.")] = Path(
        os.environ.get("LOTSE_NETWORK_FILE", DEFAULT_NETWORK)
    ),
) -> None:
    """Create the platform topics, their dead-letter topics, and every partner's inbox/outbox."""
    s = _settings()
    specs = topics.platform_topics()
    if network.exists():
        for org in network_org_ids(network):
            specs += topics.partner_topics(org)
    specs = [topics.TopicSpec(s.topic_namespace + t.name, t.partitions, t.config) for t in specs]
    created = asyncio.run(ensure_topics(s.kafka(), specs))
    console.print(f"{len(specs)} topics present, {len(created)} created")


@topics_app.command("list")
def topics_list() -> None:
    async def run() -> list[str]:
        admin = admin_client(_settings().kafka())
        await admin.start()
        try:
            return sorted(t for t in await admin.list_topics() if not t.startswith("__"))
        finally:
            await admin.close()

    for t in asyncio.run(run()):
        console.print(t)


@app.command()
def health(
    host: str = "127.0.0.1",
    wait: Annotated[float, typer.Option(help="Seconds to wait for every service to be ready.")] = 0.0,
) -> None:
    """Readiness of each local service; exits 1 if any is not ready."""
    import time

    deadline = time.monotonic() + wait
    while True:
        rows, ok = [], True
        for name, port in SERVICES.items():
            try:
                r = httpx.get(f"http://{host}:{port}/health/ready", timeout=3)
                body = r.json()
                state = "ready" if r.status_code == 200 else "not ready: " + ", ".join(body.get("down", []))
                ok &= r.status_code == 200
            except httpx.HTTPError as exc:
                state, ok = f"unreachable ({type(exc).__name__})", False
            rows.append((name, str(port), state))
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(1)
    table = Table("service", "port", "state")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    raise typer.Exit(0 if ok else 1)


@dlq_app.command("list")
def dlq_list() -> None:
    """Every dead-letter topic of this namespace with how many records it holds."""
    from lotse_cli.status import kafka_state

    _lag, dead = asyncio.run(kafka_state(_settings()))
    table = Table("topic", "records")
    for d in dead:
        table.add_row(d.topic, str(d.records))
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="The original topic or its .dlq topic (physical name).")],
    dry_run: Annotated[bool, typer.Option(help="List what would be replayed; send and commit nothing.")] = False,
) -> None:
    """Put the dead letters not replayed before back on their original topic, after the cause was fixed.

    Each record goes back byte for byte (value, key, original headers); the consumers skip what they already
    processed (by event id), and the replay group's committed offsets keep a second replay from resending."""
    from lotse_kit.dlq import REPLAY_GROUP, replay

    s = _settings()
    name = topic if topic.endswith(topics.DLQ_SUFFIX) else topics.dlq(topic)
    report = asyncio.run(replay(s.kafka(), name, group=s.topic_namespace + REPLAY_GROUP, dry_run=dry_run))
    verb = "would replay" if dry_run else "replayed"
    for offset, target in report.replayed:
        console.print(f"{verb} {name}@{offset} -> {target}", markup=False, highlight=False)
    for offset, why in report.skipped:
        console.print(f"skipped {name}@{offset}: {why}", markup=False, highlight=False)
    console.print(f"{verb} {len(report.replayed)}, skipped {len(report.skipped)}", markup=False, highlight=False)


@dlq_app.command("show")
def dlq_show(
    topic: Annotated[str, typer.Argument(help="The original topic or its .dlq topic.")],
    limit: int = 50,
) -> None:
    """Print dead-lettered records: where they came from and why."""
    s = _settings()
    name = topic if topic.endswith(topics.DLQ_SUFFIX) else topics.dlq(topic)

    async def run() -> list[dict[str, str]]:
        c = AIOKafkaConsumer(name, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None, **s.kafka().aiokafka())
        await c.start()
        out: list[dict[str, str]] = []
        try:
            while len(out) < limit:
                batch = await c.getmany(timeout_ms=1500, max_records=limit)
                if not batch:
                    break
                for recs in batch.values():
                    out += [{k: v.decode(errors="replace") for k, v in r.headers} | {"_offset": str(r.offset)} for r in recs]
        finally:
            await c.stop()
        return out[:limit]

    rows = asyncio.run(run())
    table = Table("offset", "kind", "from", "event id", "reason")
    for h in rows:
        origin = f"{h.get('lotse_dlq_original_topic', '?')}[{h.get('lotse_dlq_original_partition', '?')}]@{h.get('lotse_dlq_original_offset', '?')}"
        table.add_row(h["_offset"], h.get("lotse_dlq_error_kind", "?"), origin, h.get("ce_id", "-"), h.get("lotse_dlq_reason", ""))
    console.print(table)


@outbox_app.command("status")
def outbox_status() -> None:
    """Unpublished outbox rows per service schema, with the oldest row's age and last error."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(_settings().database_url)
        try:
            schemas = await conn.fetch("SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' ORDER BY 1")
            rows = []
            for r in schemas:
                s = r["table_schema"]
                rows.append(
                    await conn.fetchrow(
                        f"SELECT $1::text AS schema, count(*) AS backlog, max(attempts) AS attempts, "
                        f'now() - min(created_at) AS oldest, (array_agg(last_error ORDER BY id DESC))[1] AS last_error FROM "{s}".outbox',
                        s,
                    )
                )
            return rows
        finally:
            await conn.close()

    table = Table("schema", "backlog", "max attempts", "oldest", "last error")
    for r in asyncio.run(run()):
        table.add_row(r["schema"], str(r["backlog"]), str(r["attempts"] or 0), str(r["oldest"] or "-"), (r["last_error"] or "")[:80])
    console.print(table)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
