"""Where the tests get their Kafka broker, PostgreSQL server and OIDC provider (Keycloak).

1. `LOTSE_KAFKA_BOOTSTRAP` / `LOTSE_DATABASE_URL`, if set;
2. otherwise testcontainers, when a Docker engine answers (probed with a short timeout);
3. otherwise the local stack (deploy/local/stack.sh up), which installs and starts them.

Keycloak: `LOTSE_KEYCLOAK_URL` if set, the local stack's otherwise (`stack.sh up` starts it; with
the other two sources `Infra.keycloak()` starts it on first use, `stack.sh keycloak-up`).
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "local" / "stack.sh"


def local_keycloak_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('LOTSE_KEYCLOAK_PORT', '8180')}"


def docker_engine_answers(timeout: float = 1.5) -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(host.removeprefix("unix://"))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            ok = b"OK" in s.recv(1024)
            s.close()
            return ok
        if host.startswith("tcp://"):
            h, _, p = host.removeprefix("tcp://").partition(":")
            with socket.create_connection((h, int(p or 2375)), timeout=timeout):
                return True
    except OSError:
        return False
    return False


@dataclass
class Infra:
    kafka_bootstrap: str
    database_url: str
    kind: str  # "env", "testcontainers" or "local-stack"
    _containers: tuple = ()
    keycloak_url: str | None = None  # Keycloak's base URL (realm lotse at <url>/realms/lotse), once known

    def keycloak(self) -> str:
        """Keycloak's base URL, starting the local stack's Keycloak if nothing provides one yet."""
        if self.keycloak_url is None:
            subprocess.run([str(STACK), "keycloak-up"], check=True)
            self.keycloak_url = local_keycloak_url()
        return self.keycloak_url

    def kafka_restartable(self) -> bool:
        return self.kind in ("local-stack", "testcontainers")

    def stop_kafka(self) -> None:
        if self.kind == "local-stack":
            subprocess.run([str(STACK), "kafka-down"], check=True, capture_output=True)
        elif self.kind == "testcontainers":
            self._containers[0].get_wrapped_container().stop()

    def start_kafka(self) -> None:
        if self.kind == "local-stack":
            subprocess.run([str(STACK), "kafka-up"], check=True, capture_output=True)
        elif self.kind == "testcontainers":
            self._containers[0].get_wrapped_container().start()

    def close(self) -> None:
        for c in self._containers:
            c.stop()


def provide() -> Infra:
    kafka = os.environ.get("LOTSE_KAFKA_BOOTSTRAP")
    pg = os.environ.get("LOTSE_DATABASE_URL")
    keycloak = os.environ.get("LOTSE_KEYCLOAK_URL")
    if kafka and pg:
        return Infra(kafka, pg, "env", keycloak_url=keycloak)
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        k = KafkaContainer("apache/kafka:4.1.1").with_kraft()
        p = PostgresContainer("postgres:16", username="lotse", password="lotse", dbname="lotse")
        k.start()
        p.start()
        url = p.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        # The container's broker is an open PLAINTEXT one: the Kafka access tests (tests/security) need the local stack.
        os.environ.setdefault("LOTSE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
        os.environ.setdefault("LOTSE_KAFKA_CREATE_TOPICS", "true")
        return Infra(kafka or k.get_bootstrap_server(), pg or url, "testcontainers", (k, p), keycloak_url=keycloak)
    subprocess.run([str(STACK), "up"], check=True)
    # The tests' own Kafka clients, and services started inside tests, act as the provisioning
    # principal (a super user) and may create their topics; tests of the access rules provision
    # principals of their own (tests/security). Services run by deploy/local/services.sh use their own.
    run_dir = Path(os.environ.get("LOTSE_RUN_DIR", REPO / ".run"))
    os.environ.setdefault("LOTSE_KAFKA_CREDENTIALS_FILE", str(run_dir / "kafka" / "credentials" / "lotse-admin.properties"))
    os.environ.setdefault("LOTSE_KAFKA_CREATE_TOPICS", "true")
    port_k = os.environ.get("LOTSE_KAFKA_PORT", "9092")
    port_p = os.environ.get("LOTSE_PG_PORT", "5432")
    return Infra(
        kafka or f"127.0.0.1:{port_k}",
        pg or f"postgresql://lotse:lotse@127.0.0.1:{port_p}/lotse",
        "local-stack",
        keycloak_url=keycloak or local_keycloak_url(),
    )


async def cleanup(infra: Infra, uniques: list[str]) -> None:
    """Drops the schemas, roles and topics that tests named with one of `uniques`."""
    import asyncpg

    from lotse_kit.kafka import admin_client

    conn = await asyncpg.connect(infra.database_url)
    try:
        for u in uniques:
            for r in await conn.fetch("SELECT nspname FROM pg_namespace WHERE strpos(nspname, $1) > 0", u):
                await conn.execute(f'DROP SCHEMA "{r["nspname"]}" CASCADE')
            for r in await conn.fetch("SELECT rolname FROM pg_roles WHERE strpos(rolname, $1) > 0", u):
                await conn.execute(f'DROP OWNED BY "{r["rolname"]}"')
                await conn.execute(f'DROP ROLE "{r["rolname"]}"')
    finally:
        await conn.close()
    admin = admin_client(infra.kafka_bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if any(u in t for u in uniques)]
        for i in range(0, len(doomed), 100):
            await admin.delete_topics(doomed[i : i + 100])
    finally:
        await admin.close()
    await _drop_test_principals(infra, uniques)


async def _drop_test_principals(infra: Infra, uniques: list[str]) -> None:
    """The SCRAM credentials and ACLs that tests provisioned in their namespaces (`t<unique>.…`)."""
    import asyncio
    import contextlib

    from lotse_kit.kafka import KafkaConnection
    from lotse_kit.provisioning import _confluent

    conn = KafkaConnection.from_env(infra.kafka_bootstrap)
    if conn.security_protocol != "SASL_SSL":
        return  # an open broker (testcontainers) has no principals
    ck = _confluent()
    client = ck.AdminClient(conn.librdkafka())
    users = await asyncio.wrap_future(client.describe_user_scram_credentials())
    mine = [u for u in users if any(f"t{x}." in u for x in uniques)]
    if mine:
        deletions = [ck.UserScramCredentialDeletion(u, ck.ScramMechanism.SCRAM_SHA_512) for u in mine]
        for f in client.alter_user_scram_credentials(deletions).values():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(f)
    any_acl = ck.AclBindingFilter(
        ck.ResourceType.ANY, None, ck.ResourcePatternType.ANY, None, None, ck.AclOperation.ANY, ck.AclPermissionType.ANY
    )
    acls = [b for b in await asyncio.wrap_future(client.describe_acls(any_acl)) if any(f"t{x}." in b.principal for x in uniques)]
    for i in range(0, len(acls), 500):
        filters = [
            ck.AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)
            for b in acls[i : i + 500]
        ]
        for f in client.delete_acls(filters).values():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(f)
