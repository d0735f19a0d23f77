"""Kafka plumbing: how to connect (TLS, SASL/SCRAM), the broker factory, topic management.

Every Kafka client in Lotse, services, CLI, benchmarks and tests, connects through a
`KafkaConnection`: the bootstrap servers plus the security settings of ONE principal. The client
listener is `SASL_SSL` with SCRAM-SHA-512; the broker's certificate is verified against the CA
named in the configuration (the local stack's generated CA, or the system's trust store).

A process's own principal comes from its settings (`LOTSE_KAFKA_*`, see `KitSettings.kafka()`);
usually from one credentials file per principal that `lotse admin provision` writes (mode 0600):

    bootstrap.servers=127.0.0.1:9092
    security.protocol=SASL_SSL
    sasl.mechanism=SCRAM-SHA-512
    sasl.username=lotse-intake
    sasl.password=...
    ssl.ca.location=/path/to/ca.pem

The keys are librdkafka's, so a partner can hand the same file to any librdkafka-based client.
Functions that take `bootstrap: str | KafkaConnection` read a plain string as "these servers, with
this process's principal" (`KafkaConnection.from_env`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from contracts.topics import TopicSpec

from .naming import Naming

log = logging.getLogger(__name__)

SecurityProtocol = Literal["SASL_SSL", "PLAINTEXT"]
# PLAIN (over TLS) is only for the broker's static super users (the provisioning principal), whose
# login must not depend on the metadata they administer; every other principal uses SCRAM.
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class KafkaConfigError(ValueError):
    """The Kafka client configuration is incomplete or unreadable (a start-up error, never retried)."""


def read_properties(path: Path) -> dict[str, str]:
    """A `key=value` file (comments with # or !); values are taken verbatim after the first '='."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KafkaConfigError(f"cannot read the Kafka credentials file {path}: {exc.strerror}") from exc
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


@functools.lru_cache(maxsize=16)
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    # Hostname checking stays on: the broker's certificate must name the address we dial.
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and who this client is. `password` never appears in a repr or log."""

    bootstrap: str
    security_protocol: SecurityProtocol = "SASL_SSL"
    mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.security_protocol == "SASL_SSL" and (not self.username or not self.password):
            raise KafkaConfigError(
                "Kafka needs credentials (SASL_SSL with SCRAM): set LOTSE_KAFKA_CREDENTIALS_FILE to the file "
                "`lotse admin provision` wrote for this principal, or LOTSE_KAFKA_USERNAME and LOTSE_KAFKA_PASSWORD."
            )

    # ---------------------------------------------------------------- sources
    @classmethod
    def from_properties(cls, path: Path, *, bootstrap: str | None = None) -> KafkaConnection:
        p = read_properties(path)
        protocol = p.get("security.protocol", "SASL_SSL").upper()
        mechanism = p.get("sasl.mechanism", "SCRAM-SHA-512").upper()
        if protocol not in ("SASL_SSL", "PLAINTEXT") or mechanism not in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
            raise KafkaConfigError(f"{path}: unsupported security.protocol {protocol!r} or sasl.mechanism {mechanism!r}")
        ca = p.get("ssl.ca.location")
        ca_path = Path(ca) if ca else None
        if ca_path is not None and not ca_path.is_absolute():
            ca_path = path.parent / ca_path  # relative to the credentials file, so the pair can move together
        server = bootstrap or p.get("bootstrap.servers")
        if not server:
            raise KafkaConfigError(f"{path}: no bootstrap.servers")
        return cls(
            bootstrap=server,
            security_protocol=protocol,  # type: ignore[arg-type]  # checked above
            mechanism=mechanism,  # type: ignore[arg-type]
            username=p.get("sasl.username"),
            password=p.get("sasl.password"),
            ca_file=ca_path,
        )

    @classmethod
    def from_env(cls, bootstrap: str | None = None) -> KafkaConnection:
        """This process's principal from `LOTSE_KAFKA_*` (the same rules as `KitSettings.kafka()`)."""
        from .settings import KitSettings

        s = KitSettings()
        return s.kafka() if bootstrap is None else replace(s.kafka(), bootstrap=bootstrap)

    def as_user(self, username: str, password: str) -> KafkaConnection:
        """The same cluster and trust, another principal (tests, the provisioning check)."""
        return replace(self, username=username, password=password)

    # ----------------------------------------------------------- client options
    def ssl_context(self) -> ssl.SSLContext | None:
        if self.security_protocol != "SASL_SSL":
            return None
        return _ssl_context(str(self.ca_file) if self.ca_file else None)

    def servers(self) -> list[str]:
        """The bootstrap servers one by one (`bootstrap` is Kafka's comma-separated form)."""
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        opts: dict[str, Any] = {"bootstrap_servers": self.servers(), "security_protocol": self.security_protocol}
        if self.security_protocol == "SASL_SSL":
            opts |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
                "ssl_context": self.ssl_context(),
            }
        return opts

    def faststream_security(self) -> BaseSecurity | None:
        if self.security_protocol != "SASL_SSL":
            return None
        assert self.username is not None and self.password is not None
        if self.mechanism == "PLAIN":
            return SASLPlaintext(self.username, self.password, ssl_context=self.ssl_context(), use_ssl=True)
        cls = SASLScram512 if self.mechanism == "SCRAM-SHA-512" else SASLScram256
        return cls(self.username, self.password, ssl_context=self.ssl_context())

    def librdkafka(self) -> dict[str, str]:
        """Configuration for librdkafka-based clients (confluent-kafka's admin client)."""
        conf = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.security_protocol == "SASL_SSL":
            assert self.username is not None and self.password is not None
            conf |= {"sasl.mechanism": self.mechanism, "sasl.username": self.username, "sasl.password": self.password}
            if self.ca_file:
                conf["ssl.ca.location"] = str(self.ca_file)
        return conf

    def properties(self) -> str:
        """The credentials file's text (see the module docstring)."""
        lines = [f"bootstrap.servers={self.bootstrap}", f"security.protocol={self.security_protocol}"]
        if self.security_protocol == "SASL_SSL":
            lines += [f"sasl.mechanism={self.mechanism}", f"sasl.username={self.username}", f"sasl.password={self.password}"]
            if self.ca_file:
                lines.append(f"ssl.ca.location={self.ca_file}")
        return "\n".join(lines) + "\n"


def connection(bootstrap: str | KafkaConnection) -> KafkaConnection:
    return bootstrap if isinstance(bootstrap, KafkaConnection) else KafkaConnection.from_env(bootstrap)


def write_secret_file(path: Path, text: str) -> None:
    """Writes a file only its owner can read, without a moment in which others could (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def make_broker(
    kafka: str | KafkaConnection,
    service: str,
    *,
    metadata_max_age_ms: int = 30_000,
    produces: bool = True,
    linger_ms: int = 0,
    max_batch_size: int = 256 * 1024,
) -> KafkaBroker:
    """A FastStream broker on the service's own principal, whose producer is idempotent with acks=all.

    A service that publishes nothing (the audit log) gets a plain producer it never uses: an idempotent
    one asks the broker for a producer id at start, which needs a WRITE grant it rightly does not have.

    Producer settings, measured with `bench/relay.py` (2 shared cores, events of about 600 bytes with
    headers): the outbox relay hands a whole batch of rows to the producer before it yields, so they
    share produce requests without any linger, and it awaits their acknowledgements before its next
    drain, so `linger_ms` cannot join drains either: it only delays each batch (backlog relay/bare
    1.83 at 5 ms against 1.39 at 0). The commits of a burst are joined by the relay's own linger
    (`OutboxRelay(linger_s=...)`). `max_batch_size` is per partition: aiokafka's 16 KiB holds about 25
    events, so a 200-row batch on 3 partitions went out in several requests, one after the other;
    256 KiB sends it in one (relay/bare 1.25 against 1.57), far below the broker's 1 MB record-batch
    limit. No compression: gzip cost the producer 8 µs and the broker 10-25 µs more per event on
    loopback, for small JSON (lz4 and zstd would be another dependency for the same trade).
    """
    conn = connection(kafka)
    return KafkaBroker(
        # A list: FastStream wraps a string into a one-element list, so "a:1,b:2,c:3" would be one unknown host.
        conn.servers(),
        security=conn.faststream_security(),
        client_id=f"lotse-{service}",
        acks="all",
        enable_idempotence=produces,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        allow_auto_create_topics=False,
        metadata_max_age_ms=metadata_max_age_ms,
        logger=logging.getLogger(f"lotse.{service}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
    )


def broker_producer(broker: KafkaBroker) -> AIOKafkaProducer:
    """The started broker's own aiokafka producer (idempotent, acks=all, as `make_broker` set it up).

    The outbox relay sends through it directly: FastStream's `broker.publish` builds a publish
    command, runs the publisher middlewares and re-encodes the value and headers for each record
    (with `no_confirm=True`, 15-30 % more relay CPU per event than `producer.send` in `bench/relay.py`;
    the relay as it was, a task per row awaiting its own acknowledgement, twice). Same producer, so
    the same connection, producer id and settings."""
    # FastStream keeps it at broker.config.producer._producer.producer (0.7); checked, as it is not public API.
    state = getattr(getattr(broker.config, "producer", None), "_producer", None)
    producer = getattr(state, "producer", None) if state else None
    if not isinstance(producer, AIOKafkaProducer):
        raise RuntimeError("the broker has no started aiokafka producer (not started, or FastStream's internals changed)")
    return producer


def admin_client(kafka: str | KafkaConnection, *, client_id: str = "lotse-admin") -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(client_id=client_id, **connection(kafka).aiokafka())


class TopicsMissing(RuntimeError):
    """Topics this principal needs do not exist and it may not create them (run `lotse admin provision`)."""


async def ensure_topics(
    kafka: str | KafkaConnection,
    specs: Iterable[TopicSpec],
    *,
    client_id: str = "lotse-admin",
    replication_factor: int = 1,
    create: bool = True,
) -> list[str]:
    """Creates the missing topics; existing ones are left as they are. Returns the created names.

    With `create=False` (a service under deny-by-default ACLs, whose topics the provisioning
    creates) a missing topic is a `TopicsMissing` error instead: the principal sees exactly the
    topics it is allowed to describe, so a missing one is missing or not granted.
    """
    specs = list(specs)
    admin = admin_client(kafka, client_id=client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in {s.name: s for s in specs}.values() if s.name not in existing]
        if not missing:
            return []
        if not create:
            raise TopicsMissing(
                f"{len(missing)} topic(s) missing or not granted to this principal, e.g. {missing[0].name!r}: run `lotse admin provision`"
            )
        new = [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication_factor, topic_configs=dict(s.config))
            for s in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):  # another process created them in between
            await admin.create_topics(new)
        log.info("topics created", extra={"topics": [s.name for s in missing]})
        return [s.name for s in missing]
    finally:
        await admin.close()


class TopicAdmin:
    """Creates topics by logical name in this deployment's namespace (e.g. a new partner's inbox)."""

    def __init__(self, kafka: str | KafkaConnection, naming: Naming, *, client_id: str, create: bool = True) -> None:
        self.kafka = kafka
        self.naming = naming
        self.client_id = client_id
        self.create = create

    async def ensure(self, specs: Iterable[TopicSpec]) -> list[str]:
        """Creates the missing ones; returns the physical names created."""
        return await ensure_topics(self.kafka, [self.naming.spec(s) for s in specs], client_id=self.client_id, create=self.create)
