"""Audit service settings. Shared `LOTSE_*` variables come from the kit; own ones are `LOTSE_AUDIT_*`."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr

from lotse_kit.settings import SERVICE_PORTS, KitSettings

REPO = Path(__file__).resolve().parents[2]
DEFAULT_KEY_FILE = REPO / ".run" / "audit" / "signing-key.pem"


def _env(name: str, field: str) -> AliasChoices:
    return AliasChoices(f"LOTSE_AUDIT_{name}", field)


class AuditSettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["audit"], validation_alias=_env("HTTP_PORT", "http_port"))
    db_schema: str = Field("audit", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=_env("DB_SCHEMA", "db_schema"))
    db_role: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=_env("DB_ROLE", "db_role"))

    network_file: Path = Field(
        REPO / "deploy" / "demo" / "network.yaml",
        validation_alias=AliasChoices("LOTSE_NETWORK_FILE", "network_file"),
        description="Network configuration (organisation names and time zone of the readable subject report); "
        "missing or invalid at start stops the service (lotse_kit.network.OrgDirectory).",
    )

    # ------------------------------------------------------------ ingest
    topic_regex: str = Field(
        r"(lotse\..*|partner\..*)",
        validation_alias=_env("TOPIC_REGEX", "topic_regex"),
        description="Regex over logical topic names to log; the namespace is prefixed. Covers their .dlq topics.",
    )
    ingest_max_records: int = Field(
        2000,
        ge=1,
        validation_alias=_env("INGEST_MAX_RECORDS", "ingest_max_records"),
        description="Records per batch (one transaction, one offset commit).",
    )
    ingest_batch_timeout_ms: int = Field(200, ge=1, validation_alias=_env("INGEST_BATCH_TIMEOUT_MS", "ingest_batch_timeout_ms"))
    ingest_retry_base_s: float = Field(0.5, gt=0, validation_alias=_env("INGEST_RETRY_BASE_S", "ingest_retry_base_s"))
    ingest_retry_max_s: float = Field(30.0, gt=0, validation_alias=_env("INGEST_RETRY_MAX_S", "ingest_retry_max_s"))
    ingest_stalled_after: int = Field(
        3,
        ge=1,
        validation_alias=_env("INGEST_STALLED_AFTER", "ingest_stalled_after"),
        description="Failed attempts at one batch after which readiness reports the ingest as down.",
    )

    # ------------------------------------------------------------ tree heads
    signing_key: SecretStr | None = Field(
        None,
        validation_alias=_env("SIGNING_KEY", "signing_key"),
        description="Ed25519 private key: PEM (PKCS#8) or base64 of the 32 raw bytes. Overrides signing_key_file.",
    )
    signing_key_file: Path = Field(
        DEFAULT_KEY_FILE,
        validation_alias=_env("SIGNING_KEY_FILE", "signing_key_file"),
        description="PEM file with the Ed25519 key; generated (mode 0600) if it does not exist and generate_key is on.",
    )
    generate_key: bool = Field(
        True,
        validation_alias=_env("GENERATE_KEY", "generate_key"),
        description="Generate a key at signing_key_file if absent (development only; turn off in production).",
    )
    tree_head_interval_s: float = Field(
        60.0,
        gt=0,
        validation_alias=_env("TREE_HEAD_INTERVAL_S", "tree_head_interval_s"),
        description="How often a new tree head is signed when the log has grown.",
    )

    # ------------------------------------------------------------ API
    page_max: int = Field(1000, ge=1, validation_alias=_env("PAGE_MAX", "page_max"))
    node_cache_size: int = Field(
        200_000,
        ge=0,
        validation_alias=_env("NODE_CACHE_SIZE", "node_cache_size"),
        description="Tree nodes kept in memory (they never change once written).",
    )
    export_fetch_rows: int = Field(2000, ge=10, validation_alias=_env("EXPORT_FETCH_ROWS", "export_fetch_rows"))
