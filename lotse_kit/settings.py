"""Settings from `LOTSE_*` environment variables, with defaults that work against deploy/local."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The one list of service ports (defaults; each is overridable with LOTSE_<SERVICE>_HTTP_PORT).
# deploy/local/services.sh, the CLI and each service's settings read it from here.
SERVICE_PORTS: dict[str, int] = {"intake": 8001, "consent": 8002, "notifications": 8003, "audit": 8004, "gateway": 8005}


# The demo district's network file: the default of LOTSE_NETWORK_FILE for every service.
DEMO_NETWORK_FILE = Path(__file__).resolve().parents[1] / "deploy" / "demo" / "network.yaml"


def own(service: str) -> Callable[[str], AliasChoices]:
    """The environment names of a service's own settings: `own("audit")("page_max")` reads
    `LOTSE_AUDIT_PAGE_MAX` (or the field name, for settings passed in code)."""
    prefix = f"LOTSE_{service.upper()}_"

    def alias(field: str) -> AliasChoices:
        return AliasChoices(prefix + field.upper(), field)

    return alias


def service_url(service: str, host: str = "127.0.0.1") -> str:
    """The default base URL of a service on this machine."""
    return f"http://{host}:{SERVICE_PORTS[service]}"


class KitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOTSE_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Who this process is on Kafka (lotse_kit/kafka.py): a credentials file written by
    # `lotse admin provision` (mode 0600), or the single settings below, which win over the file.
    kafka_credentials_file: Path | None = None
    kafka_security_protocol: Literal["SASL_SSL", "PLAINTEXT"] | None = None
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] | None = None
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_ca_file: Path | None = Field(None, description="CA that signed the brokers' certificates; default: the system's trust store.")
    # Under deny-by-default ACLs `lotse admin provision` creates every topic and a service may not:
    # at start it then only checks that its topics exist. True for development against an open broker.
    kafka_create_topics: bool = False
    kafka_replication_factor: int = Field(1, ge=1, description="For topics a process creates itself.")
    # Pattern subscriptions (partner topics) see topics created since the last metadata refresh.
    kafka_metadata_max_age_ms: int = Field(30_000, ge=100)
    # The provisioning DSN: creates each service's schema and role and runs migrations.
    # Services then connect as their own role (see db.service_dsn).
    database_url: str = "postgresql://lotse:lotse@127.0.0.1:5432/lotse"
    db_role_password: SecretStr = SecretStr("lotse-dev-only")

    # Prefix for every physical topic name, e.g. "kreis-paderborn." for one district on a shared
    # cluster, or a random one per test so tests never read each other's records.
    topic_namespace: str = Field("", pattern=r"^([a-z0-9][a-z0-9-]*\.)?$")

    # Every service reads the network file through lotse_kit.network.OrgDirectory (missing or invalid at start: exit 2).
    network_file: Path = DEMO_NETWORK_FILE

    http_host: str = "127.0.0.1"
    log_level: str = "INFO"

    outbox_poll_interval_s: float = Field(1.0, gt=0)
    outbox_batch_size: int = Field(200, ge=1)
    outbox_retry_base_s: float = Field(0.5, gt=0)
    outbox_retry_max_s: float = Field(30.0, gt=0)
    outbox_linger_ms: float = Field(
        5.0,
        ge=0,
        description="After a wake-up the relay waits this long before it drains, so a burst of commits shares one query, one produce request and one delete (bench/relay.py: at 200/s 2-3 rows per drain instead of 1, about a quarter less relay CPU per event); each event waits up to this much longer; 0 drains at once.",
    )
    outbox_ack_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long the relay waits for Kafka to acknowledge a batch before it records the unacknowledged rows as failed (retried with backoff).",
    )

    consumer_max_attempts: int = Field(5, ge=1, description="Attempts before a failing event is dead-lettered.")
    consumer_retry_base_s: float = Field(0.2, gt=0)
    consumer_retry_max_s: float = Field(30.0, gt=0)

    consumer_max_records: int = Field(
        100,
        ge=1,
        description="Most records one consumer takes in a batch (one transaction, one offset commit); under light load batches are small.",
    )
    consumer_batch_timeout_ms: int = Field(
        10,
        ge=1,
        description="How long a consumer waits for records when none are buffered; after an empty wait it pauses as long again, so this bounds the latency added when idle.",
    )

    consumer_fetch_wait_ms: int = Field(
        20,
        ge=0,
        description="How long the broker may hold a consumer's fetch to gather records (up to 64 KiB). A fetch costs the broker and the consumer in proportion to the partitions it names; with Kafka's default (answer as soon as one record is there) a trickle of records costs one fetch per record. Adds at most this much per consumer hop; 0 answers at once.",
    )
    consumer_background_fetch_wait_ms: int = Field(
        100,
        ge=0,
        description="`consumer_fetch_wait_ms` for subscriptions declared `background` (no latency goal waits on them): each fetch and batch (one transaction, one offset commit) has a fixed cost, so under load fewer, larger batches cost less CPU per event. Adds at most this much to such a hop.",
    )
    processed_events_retention_days: float = Field(
        35.0,
        gt=0,
        description="How long a consumed event's id is kept to recognise a redelivery; longer than any consumed topic's and dead-letter topic's retention (30 days).",
    )
    processed_events_prune_interval_s: float = Field(3600.0, gt=0)

    consumer_stall_after_s: float = Field(
        60.0, gt=0, description="Readiness reports a consumer down when a partition with waiting records has not advanced for this long."
    )
    readiness_timeout_s: float = Field(2.0, gt=0)
    shutdown_step_timeout_s: float = Field(
        15.0,
        gt=0,
        description="How long one shutdown step (outbox relay, broker, database pool) may take before it is cut short.",
    )

    def kafka(self) -> KafkaConnection:
        """This process's Kafka principal (raises KafkaConfigError when the credentials are incomplete)."""
        from .kafka import KafkaConnection

        base = KafkaConnection.from_properties(self.kafka_credentials_file) if self.kafka_credentials_file else None
        # LOTSE_KAFKA_BOOTSTRAP, when given, wins over the credentials file's bootstrap.servers.
        bootstrap = self.kafka_bootstrap if base is None or "kafka_bootstrap" in self.model_fields_set else base.bootstrap
        return KafkaConnection(
            bootstrap=bootstrap,
            security_protocol=self.kafka_security_protocol or (base.security_protocol if base else "SASL_SSL"),
            mechanism=self.kafka_sasl_mechanism or (base.mechanism if base else "SCRAM-SHA-512"),
            username=self.kafka_username or (base.username if base else None),
            password=self.kafka_password.get_secret_value() if self.kafka_password else (base.password if base else None),
            ca_file=self.kafka_ca_file or (base.ca_file if base else None),
        )


if TYPE_CHECKING:
    from .kafka import KafkaConnection


if __name__ == "__main__":  # `python -m lotse_kit.settings`: "name port" lines for shell scripts
    for _name, _port in SERVICE_PORTS.items():
        print(_name, _port)
