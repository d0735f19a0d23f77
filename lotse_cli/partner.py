"""`lotse partner listen --org <id>`: an organisation's inbox, read with that organisation's own credentials.

    lotse partner listen --org caritas-paderborn            # pretty, for people; Ctrl-C to stop
    lotse partner listen --org caritas-paderborn --json     # NDJSON, one record a line, for scripts
    lotse partner listen --org caritas-paderborn --gateway https://lotse.example/   # over HTTPS

It reads the inbox with the partner kit's consumer (`lotse_partner.PartnerInbox`), as the partner's own
system would. Over Kafka it connects as the partner's principal (the credentials file `lotse admin
provision` wrote, `.run/kafka/credentials/partner-<org>.properties`, or `--credentials`), in a consumer
group under the partner's own prefix (`partner.<org>.cli-…`, never committed: listening changes nothing).
Over HTTPS (`--gateway`) it fetches after the organisation's last acknowledged cursor and acknowledges
nothing, with the token in `LOTSE_PARTNER_TOKEN` or, on the local stack, the demo partner system's. It
opens sealed personal data with the partner's private keys when it has them (`--keys`, default
`.run/partners/<org>/keys.json`, as `lotse demo seed` keeps them). Without keys it shows that a record
is sealed and to which key; a record it cannot read is shown with the reason the kit would dead-letter it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from contracts import topics
from lotse_cli.dev import CLI_CLIENT, dev_secrets, env_key, find_user, run_dir, token_endpoint
from lotse_kit.kafka import KafkaConnection
from lotse_kit.settings import KitSettings
from lotse_partner import Delivery, GatewayError, InboxRecord, KafkaTransport, Outbox, PartnerInbox, PartnerKeys, Transport

app = typer.Typer(help="A partner organisation's view (its own credentials).", no_args_is_help=True)
console = Console()


def describe(record: InboxRecord) -> dict[str, Any]:
    """One inbox record as a partner sees it: the envelope, the data, and the sealed part opened if it was."""
    env = record.event
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
        out["opened"] = record.opened.model_dump(mode="json", exclude_none=True) if record.opened else None
    return out


def _where(position: str) -> dict[str, Any]:
    """Kafka positions (`topic/partition/offset`) as partition and offset; an HTTPS cursor as it is."""
    parts = position.rsplit("/", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return {"partition": int(parts[1]), "offset": int(parts[2])}
    return {"cursor": position}


class _Printer:
    """The handler and the dead-letter sink of `listen`: both print, neither keeps anything."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    async def __call__(self, record: InboxRecord, outbox: Outbox) -> None:
        self.show(describe(record) | _where(record.position))

    def put(self, delivery: Delivery, kind: str, reason: str) -> str:
        # Records the kit cannot read (or open with these keys) are shown, not dead-lettered: listening changes nothing.
        doc = {"undecodable" if kind != "unsealable" else "unopenable": f"{kind}: {reason}"} | _where(delivery.position)
        self.show(doc)
        return "printed"

    def show(self, doc: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(doc, ensure_ascii=False), flush=True)
        else:
            _pretty(doc)


async def listen(transport: Transport, keys: PartnerKeys | None, *, as_json: bool, limit: int | None) -> int:
    printer = _Printer(as_json)
    inbox = PartnerInbox(transport, keys, printer, printer, retries=0)
    await inbox.run(limit=limit)
    return inbox.handled + inbox.dead_lettered


def _pretty(doc: dict[str, Any]) -> None:
    where = f"{doc['partition']}/{doc['offset']}" if "offset" in doc else doc.get("cursor", "")
    for problem in ("undecodable", "unopenable"):
        if problem in doc:
            console.print(f"[red]{problem} record[/red] at {where}: {doc[problem]}")
            return
    data = doc["data"]
    console.print(f"[bold]{doc['type']}[/bold]  {doc['time']}  client {data.get('client_id', '-')}  ({where})")
    opened = doc.get("opened")
    if "opened" in doc and opened is None:
        console.print(f"  sealed to key {data['sealed']['kid']} (no private key here to open it)")
    elif opened:
        console.print("  " + json.dumps(opened, ensure_ascii=False))


def _https_transport(gateway: str, org: str) -> Transport:
    from lotse_partner.https import HttpsTransport, OidcToken

    fixed = os.environ.get("LOTSE_PARTNER_TOKEN")
    if fixed:

        async def token() -> str:
            return fixed

        return HttpsTransport(gateway, org, token, commit=False)
    # The local stack: the organisation's demo partner-system user, password grant through the CLI's public client.
    user = find_user(org, "partner_system")
    form = {"grant_type": "password", "client_id": CLI_CLIENT, "username": user, "password": dev_secrets()[env_key("USER_PASSWORD", user)]}
    return HttpsTransport(gateway, org, OidcToken(token_endpoint(), form), commit=False)


@app.command("listen")
def listen_cmd(
    org: Annotated[str, typer.Option(help="The organisation whose inbox to read.")],
    credentials: Annotated[Path | None, typer.Option(help="Its Kafka credentials file.")] = None,
    keys: Annotated[Path | None, typer.Option(help="Its private keys (JSON, as lotse_partner.PartnerKeys).")] = None,
    gateway: Annotated[str | None, typer.Option(help="Read over HTTPS through this gateway instead of Kafka.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="NDJSON, one record a line.")] = False,
    from_start: Annotated[bool, typer.Option("--from-start", help="Kafka: from the oldest record kept, not only new ones.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
) -> None:
    """Print the organisation's inbox as it arrives, read with its own credentials."""
    if not re.fullmatch(topics.ORG_ID_PATTERN, org):
        raise typer.BadParameter(f"{org!r} is not an organisation id", param_hint="--org")
    if gateway:
        transport = _https_transport(gateway, org)
    else:
        cred = credentials or run_dir() / "kafka" / "credentials" / f"partner-{org}.properties"
        if not cred.exists():
            console.print(f"[red]no Kafka credentials for {org} at {cred}[/red] (run `lotse admin provision`)")
            raise typer.Exit(2)
        s = KitSettings()
        conn = KafkaConnection.from_properties(cred, bootstrap=s.kafka_bootstrap if "kafka_bootstrap" in s.model_fields_set else None)
        transport = KafkaTransport(
            conn.aiokafka(),
            org,
            group=f"cli-{uuid.uuid4().hex[:8]}",
            start="earliest" if from_start else "latest",
            namespace=s.topic_namespace,
            commit=False,
        )
    key_file = keys or run_dir() / "partners" / org / "keys.json"
    partner_keys = PartnerKeys.load(key_file) if key_file.exists() else None
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends listening; nothing was committed
            asyncio.run(listen(transport, partner_keys, as_json=as_json, limit=limit))
    except (httpx.TransportError, GatewayError) as exc:
        console.print(f"[red]the gateway at {gateway} did not answer as expected:[/red] {exc}")
        raise typer.Exit(1) from exc
