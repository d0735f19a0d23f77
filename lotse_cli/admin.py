"""`lotse admin …`: what an operator runs against the cluster with the provisioning (super user) principal.

    lotse admin provision                 # principals, ACLs, quotas, topics for the network file
    lotse admin provision --dry-run       # only print what would change
    lotse admin provision --rotate partner-caritas-paderborn

The provisioning principal comes from LOTSE_KAFKA_CREDENTIALS_FILE (or LOTSE_KAFKA_USERNAME/PASSWORD);
on the local stack it defaults to .run/kafka/credentials/lotse-admin.properties. See lotse_kit/provisioning.py
and docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from lotse_cli.k8s import k8s_cmd
from lotse_kit.kafka import KafkaConnection
from lotse_kit.network import load_network
from lotse_kit.provisioning import ServiceGrant, desired_state, provision, restore_credentials
from lotse_kit.settings import DEMO_NETWORK_FILE, KitSettings

REPO = Path(__file__).resolve().parent.parent

app = typer.Typer(help="Cluster administration (the provisioning principal).", no_args_is_help=True)
app.command("k8s")(k8s_cmd)  # Strimzi/KEDA resources from the same desired state (lotse_cli/k8s.py)


def run_dir() -> Path:
    return Path(os.environ.get("LOTSE_RUN_DIR", REPO / ".run"))


def local_admin_file() -> Path:
    return run_dir() / "kafka" / "credentials" / "lotse-admin.properties"


def kafka_settings() -> KitSettings:
    """The process's Kafka settings; on the local stack, without any, the generated admin credentials."""
    s = KitSettings()
    if s.kafka_credentials_file is None and s.kafka_username is None and local_admin_file().exists():
        s = s.model_copy(update={"kafka_credentials_file": local_admin_file()})
    return s


def admin_connection() -> KafkaConnection:
    return kafka_settings().kafka()


def service_grants() -> list[ServiceGrant]:
    """Every service's rights, from its declaration (the one place that says what it reads and writes)."""
    from services.audit.entrypoints.consumers import DECLARATION as AUDIT
    from services.consent.entrypoints.consumers import DECLARATION as CONSENT
    from services.gateway.entrypoints.consumers import DECLARATION as GATEWAY
    from services.intake.entrypoints.consumers import DECLARATION as INTAKE
    from services.notifications.entrypoints.consumers import DECLARATION as NOTIFICATIONS

    return [
        ServiceGrant(INTAKE),
        ServiceGrant(CONSENT),
        ServiceGrant(NOTIFICATIONS),
        ServiceGrant(AUDIT, reads_dead_letters=True),
        ServiceGrant(GATEWAY),
    ]


@app.command("provision")
def provision_cmd(
    network: Annotated[Path, typer.Option(help="The network file.")] = Path(os.environ.get("LOTSE_NETWORK_FILE", DEMO_NETWORK_FILE)),
    credentials_dir: Annotated[
        Path | None, typer.Option(help="Where each principal's credentials file goes (default: .run/kafka/credentials).")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="Topic namespace (default: LOTSE_TOPIC_NAMESPACE).")] = None,
    rotate: Annotated[list[str] | None, typer.Option(help="Give this principal a new password (repeatable).")] = None,
    delete_topics: Annotated[bool, typer.Option(help="Also delete topics of organisations that left the network.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print what would change; change nothing.")] = False,
    replication_factor: Annotated[
        int | None,
        typer.Option(min=1, max=7, help="Replication of the topics it creates (default: the network file's kafka.replication_factor)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the changes as JSON.")] = False,
) -> None:
    """Create principals, ACLs, quotas and topics for the network file; remove what no longer belongs."""
    s = kafka_settings()
    ns = s.topic_namespace if namespace is None else namespace
    net = load_network(network)
    if replication_factor is not None:  # e.g. 3 on deploy/local/cluster.sh's three nodes
        net = net.model_copy(update={"kafka": net.kafka.model_copy(update={"replication_factor": replication_factor})})
    want = desired_state(net, service_grants(), namespace=ns)
    target = credentials_dir or run_dir() / "kafka" / "credentials"
    report = asyncio.run(provision(s.kafka(), want, target, rotate=rotate or (), delete_topics=delete_topics, dry_run=dry_run))
    if as_json:
        print(json.dumps({"dry_run": dry_run, "changes": [c.__dict__ for c in report.changes]}, indent=2))
        return
    for c in report.changes:
        print(c)
    verb = "would change" if dry_run else "changed"
    print(f"{report.principals} principals, {report.acls} ACLs, {report.topics} topics; {verb} {len(report.changes)}")


@app.command("restore-credentials")
def restore_credentials_cmd(
    credentials_dir: Annotated[
        Path | None, typer.Option(help="The principals' credentials files (default: .run/kafka/credentials).")
    ] = None,
) -> None:
    """Give back to the cluster the SCRAM credential of every principal that has a credentials file but is unknown
    to the cluster, with the password in its file (after a broker restart lost them; docs/security.md)."""
    restored = asyncio.run(restore_credentials(kafka_settings().kafka(), credentials_dir or run_dir() / "kafka" / "credentials"))
    print(f"restored {len(restored)} principal(s)" + (": " + ", ".join(restored) if restored else ""))
