"""Notifications settings. Shared `LOTSE_*` variables come from the kit; own ones are `LOTSE_NOTIFICATIONS_*`.

List and mapping settings are JSON in the environment, e.g.
`LOTSE_NOTIFICATIONS_RETRY_SCHEDULE_S='[5, 300, 1800]'` or
`LOTSE_NOTIFICATIONS_RATE_LIMITS='{"sms": {"rate_per_s": 2, "burst": 5}}'`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator

from lotse_kit.settings import SERVICE_PORTS, KitSettings, own, service_url

from .domain.egress import EgressPolicy

REPO = Path(__file__).resolve().parents[2]
DEV_KEY_DIR = REPO / ".run" / "notifications"

# Standard Webhooks' recommended schedule: after the immediate attempt, retry after
# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (eight attempts within about 28 hours).
STANDARD_WEBHOOKS_SCHEDULE_S = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class RateLimit(BaseModel):
    rate_per_s: float = Field(gt=0, description="Tokens added per second.")
    burst: int = Field(ge=1, description="Bucket size: sends allowed at once after a quiet period.")


env = own("notifications")


class NotificationsSettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["notifications"], validation_alias=env("http_port"))
    db_schema: str = Field("notifications", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_schema"))
    db_role: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_role"))

    intake_url: str = Field(
        service_url("intake"),
        validation_alias=AliasChoices("LOTSE_INTAKE_URL", "intake_url"),
        description="Intake's client contact API (consent-gated).",
    )
    intake_timeout_s: float = Field(5.0, gt=0, validation_alias=env("intake_timeout_s"))
    intake_concurrency: int = Field(
        8,
        ge=1,
        validation_alias=env("intake_concurrency"),
        description="Contact lookups in flight at once for one batch (of the consumer or of the delivery worker) "
        "when they are asked one by one (batch lookups off, or failed).",
    )
    intake_batch_lookups: bool = Field(
        True,
        validation_alias=env("intake_batch_lookups"),
        description="Ask intake for a batch's contacts in one request (POST /internal/v1/contacts); off: one request per "
        "client and organisation, as before (for an intake without the batch route).",
    )

    # ------------------------------------------------------------ e-mail
    smtp_host: str = Field("127.0.0.1", validation_alias=env("smtp_host"))
    smtp_port: int = Field(25, validation_alias=env("smtp_port"))
    smtp_starttls: bool = Field(False, validation_alias=env("smtp_starttls"))
    smtp_ssl: bool = Field(False, validation_alias=env("smtp_ssl"), description="Implicit TLS (port 465).")
    smtp_username: str | None = Field(None, validation_alias=env("smtp_username"))
    smtp_password: SecretStr | None = Field(None, validation_alias=env("smtp_password"))
    smtp_timeout_s: float = Field(15.0, gt=0, validation_alias=env("smtp_timeout_s"))
    mail_from: str = Field("Lotse <no-reply@lotse.invalid>", validation_alias=env("mail_from"))
    smtp_idle_connections: int = Field(
        4, ge=0, validation_alias=env("smtp_idle_connections"), description="SMTP connections kept open between batches."
    )
    smtp_idle_timeout_s: float = Field(
        60.0, gt=0, validation_alias=env("smtp_idle_timeout_s"), description="An SMTP connection unused this long is closed."
    )

    # ------------------------------------------------------------ SMS
    sms_gateway_url: str | None = Field(
        None,
        validation_alias=env("sms_gateway_url"),
        description="JSON POST endpoint of the SMS gateway; without it no SMS are recorded.",
    )
    sms_gateway_token: SecretStr | None = Field(None, validation_alias=env("sms_gateway_token"))
    sms_sender: str = Field("Lotse", max_length=11, validation_alias=env("sms_sender"))
    sms_timeout_s: float = Field(10.0, gt=0, validation_alias=env("sms_timeout_s"))

    # ------------------------------------------------------------ webhooks
    webhook_timeout_s: float = Field(15.0, gt=0, validation_alias=env("webhook_timeout_s"))
    webhook_allow_http: bool = Field(
        False,
        validation_alias=env("webhook_allow_http"),
        description="Accept plain http:// endpoint URLs (development and tests only).",
    )
    secret_rotation_overlap_s: float = Field(
        86400.0,
        gt=0,
        validation_alias=env("secret_rotation_overlap_s"),
        description="How long the previous secret still signs after a rotation.",
    )
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        validation_alias=env("webhook_allowed_hosts"),
        description="JSON list of host names, IP addresses and CIDR networks webhooks may reach although they are not "
        'public (loopback, private, link-local, ...), e.g. ["hooks.partner.internal", "10.20.0.0/16"]. Empty: public addresses only.',
    )
    webhook_ca_file: Path | None = Field(
        None,
        validation_alias=env("webhook_ca_file"),
        description="PEM file of CA certificates trusted for webhook endpoints besides the public ones (certifi).",
    )
    webhook_resolve_timeout_s: float = Field(
        5.0, gt=0, validation_alias=env("webhook_resolve_timeout_s"), description="DNS look-up of an endpoint's host at registration."
    )

    # ------------------------------------------------------------ keys
    secret_kek: SecretStr | None = Field(
        None,
        validation_alias=env("secret_kek"),
        description="Key-encryption key for webhook secrets at rest: base64 of 32 random bytes (AES-256-GCM). Overrides secret_kek_file.",
    )
    secret_kek_id: str | None = Field(
        None,
        validation_alias=env("secret_kek_id"),
        description="The id stored with every secret sealed under secret_kek; derived from the key when unset.",
    )
    secret_old_keks: dict[str, SecretStr] = Field(
        default_factory=dict,
        validation_alias=env("secret_old_keks"),
        description='JSON {"<kek id>": "<base64>"}: previous KEKs, kept to open secrets sealed under them until the re-wrap job has moved them.',
    )
    secret_kek_file: Path = Field(
        DEV_KEY_DIR / "secret-kek",
        validation_alias=env("secret_kek_file"),
        description="File with the base64 KEK when secret_kek is unset; generated (mode 0600) if absent and generate_keys is on.",
    )
    secret_rewrap_interval_s: float = Field(
        3600.0,
        gt=0,
        validation_alias=env("secret_rewrap_interval_s"),
        description="How often secrets sealed under an old KEK are sealed again under the current one (also at start).",
    )
    webhook_signing_key: SecretStr | None = Field(
        None,
        validation_alias=env("webhook_signing_key"),
        description="Ed25519 key that signs webhooks (v1a): whsk_<base64 of the 32-byte seed>, bare base64, or PEM. "
        "Overrides webhook_signing_key_file.",
    )
    webhook_signing_previous_key: SecretStr | None = Field(
        None,
        validation_alias=env("webhook_signing_previous_key"),
        description="During a signing-key rotation: the previous key, which still signs (a second v1a) and is still published.",
    )
    webhook_signing_key_file: Path = Field(
        DEV_KEY_DIR / "webhook-signing-key",
        validation_alias=env("webhook_signing_key_file"),
        description="File with the signing key when webhook_signing_key is unset; generated (mode 0600) if absent and generate_keys is on.",
    )
    generate_keys: bool = Field(
        True,
        validation_alias=env("generate_keys"),
        description="Generate the KEK and the signing key into their files if absent (development only; turn off in production).",
    )

    # ------------------------------------------------------------ delivery
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(STANDARD_WEBHOOKS_SCHEDULE_S),
        validation_alias=env("retry_schedule_s"),
        description="Delay before each retry; its length is the number of retries.",
    )
    retry_jitter: float = Field(0.2, ge=0, lt=1, validation_alias=env("retry_jitter"))
    retry_after_max_s: float = Field(86400.0, gt=0, validation_alias=env("retry_after_max_s"))
    worker_poll_interval_s: float = Field(1.0, gt=0, validation_alias=env("worker_poll_interval_s"))
    worker_batch_size: int = Field(50, ge=1, validation_alias=env("worker_batch_size"))
    sending_lease_s: float = Field(
        120.0,
        gt=0,
        validation_alias=env("sending_lease_s"),
        description="A claimed notification whose sender died is picked up again after this long.",
    )
    shutdown_grace_s: float = Field(
        5.0,
        ge=0,
        validation_alias=env("shutdown_grace_s"),
        description="On shutdown, how long attempts in flight may finish before they are abandoned to the lease.",
    )
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: {
            "email": RateLimit(rate_per_s=10, burst=50),
            "sms": RateLimit(rate_per_s=5, burst=20),
            "webhook": RateLimit(rate_per_s=50, burst=100),
        },
        validation_alias=env("rate_limits"),
        description="Token bucket per channel and replica.",
    )

    # ------------------------------------------------------------ access
    operator_orgs: list[str] = Field(
        default_factory=list,
        validation_alias=env("operator_orgs"),
        description="Organisations whose staff see every notification in the status API.",
    )

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, v: list[str]) -> list[str]:
        EgressPolicy.from_entries(v)  # a malformed entry stops the service at start, naming it
        return v
