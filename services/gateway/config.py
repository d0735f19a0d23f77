"""Gateway settings. Shared `LOTSE_*` variables come from the kit; own ones are `LOTSE_GATEWAY_*`.

`LOTSE_GATEWAY_UNFETCHED_AFTER` is a duration: seconds (`259200`) or ISO 8601 (`P3D`, `PT12H`).
`LOTSE_GATEWAY_WEBHOOK_KEYS` is JSON, e.g. `{"in-via-paderborn": "whsec_..."}`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr

from lotse_kit.settings import SERVICE_PORTS, KitSettings, own

REPO = Path(__file__).resolve().parents[2]
DEV_SECRET_DIR = REPO / ".run" / "gateway" / "webhook-secrets"

env = own("gateway")


class GatewaySettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["gateway"], validation_alias=env("http_port"))
    db_schema: str = Field("gateway", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_schema"))
    db_role: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_role"))

    # ------------------------------------------------------------ pull
    page_max: int = Field(500, ge=1, le=5000, validation_alias=env("page_max"), description="Most records one GET returns.")
    page_default: int = Field(100, ge=1, validation_alias=env("page_default"), description="Records one GET returns without `limit`.")
    wait_max_s: float = Field(
        30.0,
        ge=0,
        validation_alias=env("wait_max_s"),
        description="Longest long-poll (`wait`) a GET may ask for; longer asks are cut to it.",
    )
    reader_idle_s: float = Field(
        300.0, gt=0, validation_alias=env("reader_idle_s"), description="A partner's Kafka reader unused this long is closed."
    )
    reader_probe_interval_s: float = Field(
        10.0,
        gt=0,
        validation_alias=env("reader_probe_interval_s"),
        description="How often each open Kafka reader (and one that failed) is checked for /health/ready.",
    )

    # ------------------------------------------------------------ outbox
    batch_max: int = Field(100, ge=1, le=1000, validation_alias=env("batch_max"), description="Most events one POST to the outbox takes.")
    body_max_bytes: int = Field(1_000_000, ge=1024, validation_alias=env("body_max_bytes"))

    # ------------------------------------------------------------ push
    push_interval_s: float = Field(1.0, gt=0, validation_alias=env("push_interval_s"), description="How often push inboxes are checked.")
    push_batch: int = Field(50, ge=1, validation_alias=env("push_batch"), description="Records read per push round and organisation.")
    push_timeout_s: float = Field(15.0, gt=0, validation_alias=env("push_timeout_s"))
    push_retry_base_s: float = Field(5.0, gt=0, validation_alias=env("push_retry_base_s"))
    push_retry_max_s: float = Field(3600.0, gt=0, validation_alias=env("push_retry_max_s"))
    push_allow_http: bool = Field(
        False, validation_alias=env("push_allow_http"), description="Post to plain http:// URLs (development and tests only)."
    )
    webhook_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        validation_alias=env("webhook_keys"),
        description='JSON {"<org>": "whsec_..."}: the Standard Webhooks secret per push organisation; wins over webhook_key_dir.',
    )
    webhook_key_dir: Path = Field(
        DEV_SECRET_DIR,
        validation_alias=env("webhook_key_dir"),
        description="Directory with one file per push organisation (`<org>`, mode 0600) holding its whsec_ secret.",
    )
    generate_webhook_keys: bool = Field(
        True,
        validation_alias=env("generate_webhook_keys"),
        description="Generate a missing secret file for a push organisation (development only; turn off in production).",
    )

    # ------------------------------------------------------------ overdue
    unfetched_after: timedelta = Field(
        timedelta(days=3),
        validation_alias=env("unfetched_after"),
        description="A record not acknowledged (fetched and acknowledged, or pushed) this long notifies the organisation's contact.",
    )
    unfetched_repeat_after: timedelta = Field(
        timedelta(days=1),
        validation_alias=env("unfetched_repeat_after"),
        description="While the same oldest record stays unacknowledged, the notice is repeated this often.",
    )
    unfetched_check_interval_s: float = Field(300.0, gt=0, validation_alias=env("unfetched_check_interval_s"))
