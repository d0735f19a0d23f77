"""`lotse partner listen --org <id>`: an organisation's inbox, read with that organisation's own credentials.

    lotse partner listen --org caritas-paderborn            # pretty, for people; Ctrl-C to stop
    lotse partner listen --org caritas-paderborn --json     # NDJSON, one record a line, for scripts

It connects as the partner's Kafka principal (the credentials file `lotse admin provision` wrote,
`.run/kafka/credentials/partner-<org>.properties`, or `--credentials`), in a consumer group under the
partner's own prefix (`partner.<org>.cli-…`, not committed: listening changes nothing), and opens sealed
personal data with the partner's private keys when it has them (`--keys`, default
`.run/partners/<org>/keys.json`, as `lotse demo seed` keeps them). Without keys it shows that a record
is sealed and to which key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer
from rich.console import Console

from contracts import DecodeError, decode, topics
from contracts.sealed import SealedError
from lotse_cli.dev import run_dir
from lotse_kit.kafka import KafkaConnection
from lotse_kit.settings import KitSettings
from lotse_partner import PartnerKeys, open_sealed

app = typer.Typer(help="A partner organisation's view (its own credentials).", no_args_is_help=True)
console = Console()


def describe(value: bytes, headers: list[tuple[str, bytes]], keys: PartnerKeys | None) -> dict[str, Any]:
    """One inbox record as a partner sees it: the envelope, the data, and the sealed part opened if it can be."""
    try:
        env = decode(headers, value)
    except DecodeError as exc:
        return {"undecodable": exc.reason}
    out: dict[str, Any] = {
        "id": str(env.id),
        "type": env.type,
        "time": env.time.isoformat(),
        "source": env.source,
        "data": env.data.model_dump(mode="json"),
    }
    sealed = getattr(env.data, "sealed", None)
    if sealed is not None:
        out["data"]["sealed"] = {"kid": sealed.kid, "jwe": f"<{len(sealed.jwe)} characters>"}
        if keys is None:
            out["opened"] = None
        else:
            try:
                opened = open_sealed(env, keys)
                out["opened"] = opened.model_dump(mode="json", exclude_none=True) if opened else None
            except SealedError as exc:
                out["opened"] = {"error": str(exc)}
    return out


async def listen(conn: KafkaConnection, org: str, keys: PartnerKeys | None, *, as_json: bool, from_start: bool, limit: int | None) -> int:
    ns = KitSettings().topic_namespace
    consumer = AIOKafkaConsumer(
        ns + topics.partner_inbox(org),
        group_id=f"{ns}partner.{org}.cli-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest" if from_start else "latest",
        enable_auto_commit=False,
        **conn.aiokafka(),
    )
    seen = 0
    await consumer.start()
    try:
        while limit is None or seen < limit:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for rec in records:
                    doc = describe(rec.value, list(rec.headers or ()), keys) | {"offset": rec.offset, "partition": rec.partition}
                    if as_json:
                        print(json.dumps(doc, ensure_ascii=False), flush=True)
                    else:
                        _pretty(doc)
                    seen += 1
                    if limit is not None and seen >= limit:
                        return seen
    finally:
        await consumer.stop()
    return seen


def _pretty(doc: dict[str, Any]) -> None:
    if "undecodable" in doc:
        console.print(f"[red]undecodable record[/red] at {doc['partition']}/{doc['offset']}: {doc['undecodable']}")
        return
    data = doc["data"]
    console.print(f"[bold]{doc['type']}[/bold]  {doc['time']}  client {data.get('client_id', '-')}  ({doc['partition']}/{doc['offset']})")
    opened = doc.get("opened")
    if "opened" in doc and opened is None:
        console.print(f"  sealed to key {data['sealed']['kid']} (no private key here to open it)")
    elif isinstance(opened, dict) and "error" in opened:
        console.print(f"  [red]cannot open:[/red] {opened['error']}")
    elif opened:
        console.print("  " + json.dumps(opened, ensure_ascii=False))


@app.command("listen")
def listen_cmd(
    org: Annotated[str, typer.Option(help="The organisation whose inbox to read.")],
    credentials: Annotated[Path | None, typer.Option(help="Its Kafka credentials file.")] = None,
    keys: Annotated[Path | None, typer.Option(help="Its private keys (JSON, as lotse_partner.PartnerKeys).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="NDJSON, one record a line.")] = False,
    from_start: Annotated[bool, typer.Option("--from-start", help="From the oldest record kept, not only new ones.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
) -> None:
    """Print the organisation's inbox as it arrives, read with its own credentials."""
    if not re.fullmatch(topics.ORG_ID_PATTERN, org):
        raise typer.BadParameter(f"{org!r} is not an organisation id", param_hint="--org")
    cred = credentials or run_dir() / "kafka" / "credentials" / f"partner-{org}.properties"
    if not cred.exists():
        console.print(f"[red]no Kafka credentials for {org} at {cred}[/red] (run `lotse admin provision`)")
        raise typer.Exit(2)
    s = KitSettings()
    conn = KafkaConnection.from_properties(cred, bootstrap=s.kafka_bootstrap if "kafka_bootstrap" in s.model_fields_set else None)
    key_file = keys or run_dir() / "partners" / org / "keys.json"
    partner_keys = PartnerKeys.load(key_file) if key_file.exists() else None
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends listening; nothing was committed
        asyncio.run(listen(conn, org, partner_keys, as_json=as_json, from_start=from_start, limit=limit))
