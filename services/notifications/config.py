"""Notifications settings. Shared `LOTSE_*` variables come from the kit; own ones are `LOTSE_NOTIFICATIONS_*`.

List and mapping settings are JSON in the environment, e.g.
`LOTSE_NOTIFICATIONS_RETRY_SCHEDULE_S='[5, 300, 1800]'` or
`LOTSE_NOTIFICATIONS_RATE_LIMITS='{"sms": {"rate_per_s": 2, "burst": 5}}'`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr

from lotse_kit.settings import SERVICE_PORTS, KitSettings, service_url

# Standard Webhooks' recommended schedule: after the immediate attempt, retry after
# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (eight attempts within about 28 hours).
STANDARD_WEBHOOKS_SCHEDULE_S = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


def _env(name: str, field: str) -> AliasChoices:
    return AliasChoices(f"LOTSE_NOTIFICATIONS_{name}", field)


class RateLimit(BaseModel):
    rate_per_s: float = Field(gt=0, description="Tokens added per second.")
    burst: int = Field(ge=1, description="Bucket size: sends allowed at once after a quiet period.")


class NotificationsSettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["notifications"], validation_alias=_env("HTTP_PORT", "http_port"))
    db_schema: str = Field("notifications", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=_env("DB_SCHEMA", "db_schema"))
    db_role: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=_env("DB_ROLE", "db_role"))

    network_file: Path = Field(
        Path("deploy/demo/network.yaml"),
        validation_alias=AliasChoices("LOTSE_NETWORK_FILE", "network_file"),
        description="Organisations: names, languages and contact_email for caseworker e-mail (lotse_kit.network.OrgDirectory).",
    )
    intake_url: str = Field(
        service_url("intake"),
        validation_alias=AliasChoices("LOTSE_INTAKE_URL", "intake_url"),
        description="Intake's client contact API (consent-gated).",
    )
    intake_timeout_s: float = Field(5.0, gt=0, validation_alias=_env("INTAKE_TIMEOUT_S", "intake_timeout_s"))

    # ------------------------------------------------------------ e-mail
    smtp_host: str = Field("127.0.0.1", validation_alias=_env("SMTP_HOST", "smtp_host"))
    smtp_port: int = Field(25, validation_alias=_env("SMTP_PORT", "smtp_port"))
    smtp_starttls: bool = Field(False, validation_alias=_env("SMTP_STARTTLS", "smtp_starttls"))
    smtp_ssl: bool = Field(False, validation_alias=_env("SMTP_SSL", "smtp_ssl"), description="Implicit TLS (port 465).")
    smtp_username: str | None = Field(None, validation_alias=_env("SMTP_USERNAME", "smtp_username"))
    smtp_password: SecretStr | None = Field(None, validation_alias=_env("SMTP_PASSWORD", "smtp_password"))
    smtp_timeout_s: float = Field(15.0, gt=0, validation_alias=_env("SMTP_TIMEOUT_S", "smtp_timeout_s"))
    mail_from: str = Field("Lotse <no-reply@lotse.invalid>", validation_alias=_env("MAIL_FROM", "mail_from"))

    # ------------------------------------------------------------ SMS
    sms_gateway_url: str | None = Field(
        None,
        validation_alias=_env("SMS_GATEWAY_URL", "sms_gateway_url"),
        description="JSON POST endpoint of the SMS gateway; without it no SMS are recorded.",
    )
    sms_gateway_token: SecretStr | None = Field(None, validation_alias=_env("SMS_GATEWAY_TOKEN", "sms_gateway_token"))
    sms_sender: str = Field("Lotse", max_length=11, validation_alias=_env("SMS_SENDER", "sms_sender"))
    sms_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("SMS_TIMEOUT_S", "sms_timeout_s"))

    # ------------------------------------------------------------ webhooks
    webhook_timeout_s: float = Field(15.0, gt=0, validation_alias=_env("WEBHOOK_TIMEOUT_S", "webhook_timeout_s"))
    webhook_allow_http: bool = Field(
        False,
        validation_alias=_env("WEBHOOK_ALLOW_HTTP", "webhook_allow_http"),
        description="Accept plain http:// endpoint URLs (development and tests only).",
    )
    secret_rotation_overlap_s: float = Field(
        86400.0,
        gt=0,
        validation_alias=_env("SECRET_ROTATION_OVERLAP_S", "secret_rotation_overlap_s"),
        description="How long the previous secret still signs after a rotation.",
    )

    # ------------------------------------------------------------ delivery
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(STANDARD_WEBHOOKS_SCHEDULE_S),
        validation_alias=_env("RETRY_SCHEDULE_S", "retry_schedule_s"),
        description="Delay before each retry; its length is the number of retries.",
    )
    retry_jitter: float = Field(0.2, ge=0, lt=1, validation_alias=_env("RETRY_JITTER", "retry_jitter"))
    retry_after_max_s: float = Field(86400.0, gt=0, validation_alias=_env("RETRY_AFTER_MAX_S", "retry_after_max_s"))
    worker_poll_interval_s: float = Field(1.0, gt=0, validation_alias=_env("WORKER_POLL_INTERVAL_S", "worker_poll_interval_s"))
    worker_batch_size: int = Field(50, ge=1, validation_alias=_env("WORKER_BATCH_SIZE", "worker_batch_size"))
    sending_lease_s: float = Field(
        120.0,
        gt=0,
        validation_alias=_env("SENDING_LEASE_S", "sending_lease_s"),
        description="A claimed notification whose sender died is picked up again after this long.",
    )
    shutdown_grace_s: float = Field(
        5.0,
        ge=0,
        validation_alias=_env("SHUTDOWN_GRACE_S", "shutdown_grace_s"),
        description="On shutdown, how long attempts in flight may finish before they are abandoned to the lease.",
    )
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: {
            "email": RateLimit(rate_per_s=10, burst=50),
            "sms": RateLimit(rate_per_s=5, burst=20),
            "webhook": RateLimit(rate_per_s=50, burst=100),
        },
        validation_alias=_env("RATE_LIMITS", "rate_limits"),
        description="Token bucket per channel and replica.",
    )

    # ------------------------------------------------------------ access
    operator_orgs: list[str] = Field(
        default_factory=list,
        validation_alias=_env("OPERATOR_ORGS", "operator_orgs"),
        description="Organisations whose staff see every notification in the status API.",
    )
