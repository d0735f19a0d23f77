"""Audit service settings. Shared `LOTSE_*` variables come from the kit; own ones are `LOTSE_AUDIT_*`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from lotse_kit.settings import SERVICE_PORTS, KitSettings, own

REPO = Path(__file__).resolve().parents[2]
DEFAULT_KEY_FILE = REPO / ".run" / "audit" / "signing-key.pem"


env = own("audit")


class AuditSettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["audit"], validation_alias=env("http_port"))
    db_schema: str = Field("audit", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_schema"))
    db_role: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_role"))

    # ------------------------------------------------------------ ingest
    topic_regex: str = Field(
        r"(lotse\..*|partner\..*)",
        validation_alias=env("topic_regex"),
        description="Regex over logical topic names to log; the namespace is prefixed. Covers their .dlq topics.",
    )
    ingest_max_records: int = Field(
        2000,
        ge=1,
        validation_alias=env("ingest_max_records"),
        description="Records per batch (one transaction, one offset commit).",
    )
    ingest_batch_timeout_ms: int = Field(200, ge=1, validation_alias=env("ingest_batch_timeout_ms"))
    ingest_fetch_wait_ms: int = Field(
        100,
        ge=0,
        validation_alias=env("ingest_fetch_wait_ms"),
        description=(
            "How long the broker may hold a fetch to gather records (up to 1 MiB). The ingest reads every partition of"
            " every topic, and a fetch costs the broker and this process in proportion to the partitions it names: with"
            " Kafka's default (answer as soon as one record is there) a trickle of records meant one such fetch per record."
            " Adds at most this much to event -> entry; 0 answers at once."
        ),
    )
    ingest_retry_base_s: float = Field(0.5, gt=0, validation_alias=env("ingest_retry_base_s"))
    ingest_retry_max_s: float = Field(30.0, gt=0, validation_alias=env("ingest_retry_max_s"))
    ingest_stalled_after: int = Field(
        3,
        ge=1,
        validation_alias=env("ingest_stalled_after"),
        description="Failed attempts at one batch after which readiness reports the ingest as down.",
    )
    ingest_isolate_after: int = Field(
        3,
        ge=1,
        validation_alias=env("ingest_isolate_after"),
        description="Attempts at a batch the database refuses (not a connection failure) after which the refused "
        "entries are found and logged as 'unloggable' stand-ins, so one record never stalls the log.",
    )

    # ------------------------------------------------------------ tree heads
    signing_key: SecretStr | None = Field(
        None,
        validation_alias=env("signing_key"),
        description="Ed25519 private key: PEM (PKCS#8) or base64 of the 32 raw bytes. Overrides signing_key_file.",
    )
    signing_key_file: Path = Field(
        DEFAULT_KEY_FILE,
        validation_alias=env("signing_key_file"),
        description="PEM file with the Ed25519 key; generated (mode 0600) if it does not exist and generate_key is on.",
    )
    generate_key: bool = Field(
        True,
        validation_alias=env("generate_key"),
        description="Generate a key at signing_key_file if absent (development only; turn off in production).",
    )
    tree_head_interval_s: float = Field(
        60.0,
        gt=0,
        validation_alias=env("tree_head_interval_s"),
        description="Backstop: how often a tree head is signed when the log has grown (e.g. by another replica); "
        "appends of this replica are covered sooner, see tree_head_delay_ms.",
    )
    tree_head_delay_ms: int = Field(
        250,
        ge=0,
        validation_alias=env("tree_head_delay_ms"),
        description="After an append that grew the log, a tree head covering it is signed once this long has passed "
        "since the previous head: at most one head per delay, and an entry is in a signed head about this long after "
        "its append (plus the signing). 0 switches it off (heads only every tree_head_interval_s and on demand).",
    )

    # ------------------------------------------------------------ API
    page_max: int = Field(1000, ge=1, validation_alias=env("page_max"))
    node_cache_size: int = Field(
        200_000,
        ge=0,
        validation_alias=env("node_cache_size"),
        description="Tree nodes kept in memory (they never change once written).",
    )
    export_fetch_rows: int = Field(2000, ge=10, validation_alias=env("export_fetch_rows"))
