"""Kafka provisioning: principals, ACLs, quotas and topics from the network file and the services' declarations.

Deny by default: the broker runs `StandardAuthorizer` with `allow.everyone.if.no.acl.found=false`,
so a principal may do exactly what an ACL made here allows, and nothing else.

- **One principal per service** (`lotse-<service>`): READ on each topic its declaration consumes,
  WRITE on each topic it publishes to and on the dead-letter topics of what it consumes, and its own
  consumer groups (prefixed `lotse-<service>-`). So only intake may write `lotse.clients.v1`, and a
  forged `lotse.disclosure.blocked` from any other principal is refused by the broker.
- **One principal per partner organisation** (`partner-<org>`): READ on `partner.<org>.inbox.v1`,
  WRITE on `partner.<org>.outbox.v1`, consumer groups prefixed `partner.<org>.`; nothing else.
  Its producer and consumer byte rates are capped by a quota from the network file.
- **Topics** with partitions and configuration from the contracts (`contracts/topics.py`), the
  replication factor and any overrides from the network file's `kafka` section.

`provision()` compares that desired state with the cluster and changes only the difference: it is
idempotent, prints what it changed, and removes what no longer belongs (the principal, ACLs and
quota of an organisation that left). Topics of a departed organisation are kept (their records may
still be needed) unless `delete_topics` is set. Every principal's password is written to
`<credentials_dir>/<principal>.properties` (mode 0600; the format of lotse_kit/kafka.py) and never
printed or logged. A namespace (`LOTSE_TOPIC_NAMESPACE`) prefixes principals, topics and groups,
so several districts, or test runs, share one cluster without seeing each other.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Float64, Int8, Int16, Int32, Schema, String

from contracts.topics import TopicSpec, dlq, partner_inbox, partner_outbox, partner_topics, platform_topics

from .declaration import ServiceDeclaration
from .kafka import KafkaConnection, admin_client, write_secret_file
from .network import KafkaQuota, Network

log = logging.getLogger(__name__)

T = TypeVar("T")
ResourceKind = Literal["TOPIC", "GROUP"]
PatternKind = Literal["LITERAL", "PREFIXED"]
Operation = Literal["READ", "WRITE"]
SCRAM_ITERATIONS = 8192
QUOTA_KEYS = ("producer_byte_rate", "consumer_byte_rate")


# ------------------------------------------------------------------ names
def service_principal(namespace: str, service: str) -> str:
    return f"{namespace}lotse-{service}"


def partner_principal(namespace: str, org: str) -> str:
    return f"{namespace}partner-{org}"


def partner_group_prefix(namespace: str, org: str) -> str:
    return f"{namespace}partner.{org}."


def _managed(namespace: str) -> re.Pattern[str]:
    # What provisioning owns in this namespace; the super users (lotse-admin, the broker) are never touched.
    return re.compile("^" + re.escape(namespace) + r"(lotse-(?!admin$)[a-z0-9-]+|partner-[a-z0-9][a-z0-9-]*)$")


# ------------------------------------------------------------------ desired state
@dataclass(frozen=True, order=True)
class Acl:
    principal: str  # without "User:"
    resource: ResourceKind
    pattern: PatternKind
    name: str
    operation: Operation

    def __str__(self) -> str:
        star = "*" if self.pattern == "PREFIXED" else ""
        return f"{self.principal}: {self.operation} {self.resource.lower()} {self.name}{star}"


@dataclass(frozen=True)
class ServiceGrant:
    """A service's rights, derived from its declaration (entrypoints/consumers.py: DECLARATION)."""

    declaration: ServiceDeclaration
    reads_dead_letters: bool = False  # the audit log records dead letters too
    group_prefix: str | None = None  # default "lotse-<service>-" (consumer groups are named after the DB schema)

    @property
    def service(self) -> str:
        return self.declaration.service


@dataclass
class DesiredState:
    namespace: str
    topics: dict[str, TopicSpec] = field(default_factory=dict)  # physical name -> spec
    principals: dict[str, str] = field(default_factory=dict)  # principal -> "service" | "partner"
    acls: set[Acl] = field(default_factory=set)
    quotas: dict[str, KafkaQuota] = field(default_factory=dict)
    replication_factor: int = 1


def expand_channel(channel: str, orgs: Sequence[str]) -> list[str]:
    """A channel address for every organisation: `partner.{orgId}.inbox.v1` names one topic per organisation."""
    return [channel.replace("{orgId}", o) for o in orgs] if "{orgId}" in channel else [channel]


def _template_of(logical: str) -> str:
    m = re.fullmatch(r"partner\.[a-z0-9][a-z0-9-]*\.(inbox|outbox)\.v1(\.dlq)?", logical)
    return f"partner.{{orgId}}.{m.group(1)}.v1{m.group(2) or ''}" if m else logical


def desired_state(network: Network, services: Iterable[ServiceGrant], *, namespace: str = "") -> DesiredState:
    orgs = network.org_ids()
    want = DesiredState(namespace=namespace, replication_factor=network.kafka.replication_factor)
    logical: dict[str, TopicSpec] = {s.name: s for s in platform_topics()}
    for org in orgs:
        logical |= {s.name: s for s in partner_topics(org)}
    for name, spec in logical.items():
        config = {**spec.config, **network.kafka.topic_config.get(_template_of(name), {}), **network.kafka.topic_config.get(name, {})}
        want.topics[namespace + name] = TopicSpec(namespace + name, spec.partitions, config)

    def grant(principal: str, resource: ResourceKind, pattern: PatternKind, name: str, op: Operation) -> None:
        want.acls.add(Acl(principal, resource, pattern, name, op))

    for g in services:
        p = service_principal(namespace, g.service)
        want.principals[p] = "service"
        for sub in g.declaration.subscriptions:
            for channel in sub.channels:
                for topic in expand_channel(channel, orgs):
                    grant(p, "TOPIC", "LITERAL", namespace + topic, "READ")
                    if not sub.custom:  # the kit's consumers dead-letter what they cannot handle
                        grant(p, "TOPIC", "LITERAL", namespace + dlq(topic), "WRITE")
                    if g.reads_dead_letters and namespace + dlq(topic) in want.topics:
                        grant(p, "TOPIC", "LITERAL", namespace + dlq(topic), "READ")
        for pub in g.declaration.publications:
            for topic in expand_channel(pub.channel, orgs):
                grant(p, "TOPIC", "LITERAL", namespace + topic, "WRITE")
        grant(p, "GROUP", "PREFIXED", namespace + (g.group_prefix or f"lotse-{g.service}-"), "READ")

    for org in orgs:
        p = partner_principal(namespace, org)
        want.principals[p] = "partner"
        grant(p, "TOPIC", "LITERAL", namespace + partner_inbox(org), "READ")
        grant(p, "TOPIC", "LITERAL", namespace + partner_outbox(org), "WRITE")
        grant(p, "GROUP", "PREFIXED", partner_group_prefix(namespace, org), "READ")
        member = network.organisation(org)
        want.quotas[p] = (member.kafka_quota if member else None) or network.kafka.partner_quota

    # Every ACL names a topic that will exist (a declaration naming an unknown topic is a bug, not a grant).
    unknown = sorted({a.name for a in want.acls if a.resource == "TOPIC" and a.name not in want.topics})
    if unknown:
        raise ValueError(f"declarations name topics no contract defines: {unknown}")
    return want


# ------------------------------------------------------------------ client quotas (aiokafka has no API for them)
class AlterClientQuotasResponse_v0(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "entries",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
            ),
        ),
    )


class AlterClientQuotasRequest_v0(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        (
            "entries",
            Array(
                ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
                ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))),
            ),
        ),
        ("validate_only", Boolean),
    )


class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v0]):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 49

    def __init__(self, entries: list[tuple[list[tuple[str, str]], list[tuple[str, float, bool]]]]) -> None:
        self._entries = entries

    def build(self, request_struct_class: type[AlterClientQuotasRequest_v0]) -> AlterClientQuotasRequest_v0:
        return request_struct_class(self._entries, False)


class DescribeClientQuotasResponse_v0(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 48
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", String("utf-8")),
        (
            "entries",
            Array(
                ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
                ("values", Array(("key", String("utf-8")), ("value", Float64))),
            ),
        ),
    )


class DescribeClientQuotasRequest_v0(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 48
    API_VERSION = 0
    RESPONSE_TYPE = DescribeClientQuotasResponse_v0
    SCHEMA = Schema(
        ("components", Array(("entity_type", String("utf-8")), ("match_type", Int8), ("match", String("utf-8")))), ("strict", Boolean)
    )


class DescribeClientQuotasRequest(Request[DescribeClientQuotasRequest_v0]):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 48

    def build(self, request_struct_class: type[DescribeClientQuotasRequest_v0]) -> DescribeClientQuotasRequest_v0:
        # match_type 2: every user with a quota of its own (not the default entity)
        return request_struct_class([("user", 2, None)], False)


class ProvisioningError(RuntimeError):
    pass


def _confluent() -> Any:
    """confluent-kafka's admin client (librdkafka): aiokafka has no API for SCRAM credentials. Its
    type hints are partial, so it is used untyped; imported on use, as only provisioning needs it."""
    return importlib.import_module("confluent_kafka.admin")


async def describe_user_quotas(kafka: KafkaConnection) -> dict[str, dict[str, float]]:
    admin = admin_client(kafka)
    await admin.start()
    try:
        resp: Any = await admin._send_request(DescribeClientQuotasRequest())
    finally:
        await admin.close()
    if resp.error_code:
        raise ProvisioningError(f"DescribeClientQuotas failed: error {resp.error_code} {resp.error_message or ''}")
    out: dict[str, dict[str, float]] = {}
    for entity, values in resp.entries:
        user = dict(entity).get("user")
        if user:
            out[user] = {k: v for k, v in values}
    return out


async def alter_user_quotas(kafka: KafkaConnection, changes: dict[str, dict[str, float | None]]) -> None:
    """`changes`: user -> {key: value, or None to remove}."""
    if not changes:
        return
    entries = [([("user", user)], [(k, v or 0.0, v is None) for k, v in ops.items()]) for user, ops in sorted(changes.items())]
    admin = admin_client(kafka)
    await admin.start()
    try:
        resp: Any = await admin._send_request(AlterClientQuotasRequest(entries))
    finally:
        await admin.close()
    failed = [f"{dict(e)}: {code} {msg or ''}" for code, msg, e in resp.entries if code]
    if failed:
        raise ProvisioningError(f"AlterClientQuotas failed for {failed}")


# ------------------------------------------------------------------ the cluster
async def _wait(fut: Future[T]) -> T:
    return await asyncio.wrap_future(fut)


@dataclass
class Change:
    action: Literal["+", "-", "~", "="]  # created, removed, changed, kept although stale
    what: str  # "topic", "principal", "credentials", "acl", "quota"
    detail: str

    def __str__(self) -> str:
        return f"{self.action} {self.what} {self.detail}"


@dataclass
class Report:
    changes: list[Change] = field(default_factory=list)
    principals: int = 0
    acls: int = 0
    topics: int = 0

    def add(self, action: Literal["+", "-", "~", "="], what: str, detail: str) -> None:
        self.changes.append(Change(action, what, detail))
        log.info("kafka provisioning", extra={"action": action, "what": what, "detail": detail})


def _new_password() -> str:
    return secrets.token_urlsafe(32)


async def provision(
    admin: KafkaConnection,
    want: DesiredState,
    credentials_dir: Path,
    *,
    rotate: Iterable[str] = (),
    delete_topics: bool = False,
    dry_run: bool = False,
) -> Report:
    """Brings the cluster to `want` (see the module docstring). `admin` must be a super user."""
    ck = _confluent()

    report = Report(principals=len(want.principals), acls=len(want.acls), topics=len(want.topics))
    managed = _managed(want.namespace)
    rotate = set(rotate)
    unknown = rotate - set(want.principals)
    if unknown:
        raise ProvisioningError(f"cannot rotate unknown principal(s) {sorted(unknown)}")
    client = ck.AdminClient(admin.librdkafka() | {"client.id": "lotse-provisioning"})

    # ---- topics
    md = await asyncio.to_thread(client.list_topics, timeout=15)
    existing = {t for t in md.topics if not t.startswith("__")}
    missing = [s for name, s in sorted(want.topics.items()) if name not in existing]
    if missing and not dry_run:
        futures = client.create_topics(
            [ck.NewTopic(s.name, s.partitions, want.replication_factor, config=dict(s.config)) for s in missing], request_timeout=30
        )
        for name, f in futures.items():
            try:
                await _wait(f)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise ProvisioningError(f"cannot create topic {name}: {exc}") from exc
    for s in missing:
        report.add("+", "topic", f"{s.name} (partitions {s.partitions}, replication {want.replication_factor})")
    await _reconcile_topic_configs(client, want, existing, report, dry_run)
    ns_topics = {t for t in existing if t.startswith(want.namespace)} if want.namespace else existing
    for stale in sorted(t for t in ns_topics if _provisioned_topic(t, want.namespace) and t not in want.topics):
        if delete_topics:
            if not dry_run:
                await _wait(client.delete_topics([stale], request_timeout=30)[stale])
            report.add("-", "topic", stale)
        else:
            report.add("=", "topic", f"{stale} (no longer in the network; kept with its records, remove with --delete-topics)")

    # ---- principals (SCRAM credentials) and their files
    try:
        described = await _wait(client.describe_user_scram_credentials())
        users = {u for u, d in described.items() if d.scram_credential_infos}
    except Exception as exc:
        raise ProvisioningError(f"cannot list SCRAM credentials: {exc}") from exc
    upserts, files = [], {}
    for principal in sorted(want.principals):
        path = credentials_dir / f"{principal}.properties"
        if principal in users and path.exists() and principal not in rotate:
            continue
        password = _new_password()
        info = ck.ScramCredentialInfo(ck.ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upserts.append(ck.UserScramCredentialUpsertion(principal, info, password.encode()))
        files[path] = replace(admin, username=principal, password=password, mechanism="SCRAM-SHA-512").properties()
        if principal in rotate and principal in users:
            report.add("~", "credentials", f"{principal} (new password in {path})")
        elif principal in users:
            report.add("~", "credentials", f"{principal} (its file was missing: new password in {path})")
        else:
            report.add("+", "principal", f"{principal} (password in {path})")
    stale_users = sorted(u for u in users if managed.match(u) and u not in want.principals)
    deletions = [ck.UserScramCredentialDeletion(u, ck.ScramMechanism.SCRAM_SHA_512) for u in stale_users]
    if (upserts or deletions) and not dry_run:
        for user, f in client.alter_user_scram_credentials(upserts + deletions).items():
            try:
                await _wait(f)
            except Exception as exc:
                raise ProvisioningError(f"cannot change the SCRAM credentials of {user}: {exc}") from exc
        for path, text in files.items():
            write_secret_file(path, text)
        # Brokers apply new credentials from the metadata log a moment after the controller took them:
        # wait until each one authenticates, so a service started right after provisioning can connect.
        for path in files:
            await _await_login(KafkaConnection.from_properties(path))
    for u in stale_users:
        report.add("-", "principal", u)
        if not dry_run:
            (credentials_dir / f"{u}.properties").unlink(missing_ok=True)

    # ---- ACLs
    any_filter = ck.AclBindingFilter(
        ck.ResourceType.ANY, None, ck.ResourcePatternType.ANY, None, None, ck.AclOperation.ANY, ck.AclPermissionType.ANY
    )
    bindings = await _wait(client.describe_acls(any_filter, request_timeout=30))
    have: set[Acl] = set()
    foreign: list[Any] = []  # managed principals' ACLs we do not model (DENY, hosts, other operations): removed
    for b in bindings:
        principal = b.principal.removeprefix("User:")
        if not managed.match(principal):
            continue
        kind = b.restype.name if b.restype.name in ("TOPIC", "GROUP") else None
        op = b.operation.name if b.operation.name in ("READ", "WRITE") else None
        if kind and op and b.permission_type.name == "ALLOW" and b.host == "*" and b.resource_pattern_type.name in ("LITERAL", "PREFIXED"):
            have.add(Acl(principal, kind, b.resource_pattern_type.name, b.name, op))
        else:
            foreign.append(b)
    add = sorted(want.acls - have)
    remove = sorted(a for a in have - want.acls)
    if not dry_run:
        if add:
            for f in client.create_acls([_acl_args(ck, ck.AclBinding, a) for a in add], request_timeout=30).values():
                await _wait(f)
        filters = [_acl_args(ck, ck.AclBindingFilter, a) for a in remove] + [
            ck.AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)
            for b in foreign
        ]
        if filters:
            for f in client.delete_acls(filters, request_timeout=30).values():
                await _wait(f)
    for a in add:
        report.add("+", "acl", str(a))
    for a in remove:
        report.add("-", "acl", str(a))
    for b in foreign:
        report.add("-", "acl", f"{b.principal} {b.permission_type.name} {b.operation.name} {b.restype.name.lower()} {b.name} (not Lotse's)")

    # ---- quotas
    current = {u: q for u, q in (await describe_user_quotas(admin)).items() if managed.match(u)}
    quota_changes: dict[str, dict[str, float | None]] = {}
    for principal, q in sorted(want.quotas.items()):
        target = {"producer_byte_rate": float(q.producer_byte_rate), "consumer_byte_rate": float(q.consumer_byte_rate)}
        now = current.get(principal, {})
        ops: dict[str, float | None] = {k: v for k, v in target.items() if now.get(k) != v}
        ops |= {k: None for k in now if k not in target}
        if ops:
            quota_changes[principal] = ops
            shown = ", ".join(f"{k}={int(v)}" for k, v in target.items())
            report.add("~" if now else "+", "quota", f"{principal}: {shown}")
    for principal, now in sorted(current.items()):
        if principal not in want.quotas and now:
            quota_changes[principal] = {k: None for k in now}
            report.add("-", "quota", principal)
    if not dry_run:
        await alter_user_quotas(admin, quota_changes)
    return report


def _acl_args(ck: Any, cls: Any, a: Acl) -> Any:
    """An `AclBinding` (to create) or `AclBindingFilter` (to delete) for one of our ACLs: same arguments."""
    return cls(
        ck.ResourceType[a.resource],
        a.name,
        ck.ResourcePatternType[a.pattern],
        f"User:{a.principal}",
        "*",
        ck.AclOperation[a.operation],
        ck.AclPermissionType.ALLOW,
    )


async def _await_login(conn: KafkaConnection, timeout_s: float = 30.0) -> None:
    from aiokafka.errors import KafkaConnectionError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        client = admin_client(conn, client_id="lotse-provisioning-check")
        try:
            await client.start()
            return
        except KafkaConnectionError:
            if loop.time() > deadline:
                raise ProvisioningError(f"the new credentials of {conn.username} do not authenticate after {timeout_s:.0f} s") from None
            await asyncio.sleep(0.2)
        finally:
            await client.close()


def _provisioned_topic(physical: str, namespace: str) -> bool:
    name = physical.removeprefix(namespace)
    return name.startswith(("lotse.", "partner."))


async def _reconcile_topic_configs(client: Any, want: DesiredState, existing: set[str], report: Report, dry_run: bool) -> None:
    """Existing topics get the configuration the contracts and the network file ask for (e.g. a new retention)."""
    ck = _confluent()
    present = [n for n in sorted(want.topics) if n in existing and want.topics[n].config]
    if not present:
        return
    resources = [ck.ConfigResource(ck.ResourceType.TOPIC, n) for n in present]
    described = client.describe_configs(resources, request_timeout=30)
    for res, f in described.items():
        entries = await _wait(f)
        wanted = want.topics[res.name].config
        differ = {k: v for k, v in wanted.items() if k not in entries or entries[k].value != v}
        if not differ:
            continue
        report.add("~", "topic", f"{res.name}: " + ", ".join(f"{k}={v}" for k, v in sorted(differ.items())))
        if dry_run:
            continue
        alter = ck.ConfigResource(
            ck.ResourceType.TOPIC,
            res.name,
            incremental_configs=[ck.ConfigEntry(k, v, incremental_operation=ck.AlterConfigOpType.SET) for k, v in differ.items()],
        )
        for g in client.incremental_alter_configs([alter], request_timeout=30).values():
            await _wait(g)


async def restore_credentials(admin: KafkaConnection, credentials_dir: Path) -> list[str]:
    """Puts back the SCRAM credential of every principal whose credentials file is in `credentials_dir` but whom
    the cluster does not know, with the password in that file, so its clients log in again unchanged.

    Why: a broker restart has come up with an empty SCRAM credential cache on this stack (Kafka 4.1.1 after
    much credential churn; see docs/security.md). Provisioning would then issue new passwords; this keeps the
    old ones. The super users log in with PLAIN and are not affected. Returns the principals restored."""
    ck = _confluent()
    client = ck.AdminClient(admin.librdkafka() | {"client.id": "lotse-provisioning"})
    described = await _wait(client.describe_user_scram_credentials())
    known = {u for u, d in described.items() if d.scram_credential_infos}
    upserts, restored = [], []
    files = await asyncio.to_thread(lambda: sorted(credentials_dir.glob("*.properties")))
    for path in files:
        conn = KafkaConnection.from_properties(path)
        if conn.mechanism == "PLAIN" or not conn.username or not conn.password or conn.username in known:
            continue
        info = ck.ScramCredentialInfo(ck.ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upserts.append(ck.UserScramCredentialUpsertion(conn.username, info, conn.password.encode()))
        restored.append(conn.username)
    if upserts:
        for user, f in client.alter_user_scram_credentials(upserts).items():
            try:
                await _wait(f)
            except Exception as exc:
                raise ProvisioningError(f"cannot restore the SCRAM credential of {user}: {exc}") from exc
        log.warning("kafka credentials restored from their files", extra={"principals": restored})
    return restored
