"""Consent service settings. Shared `LOTSE_*` variables come from the kit; own ones are `LOTSE_CONSENT_*`."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from lotse_kit.settings import SERVICE_PORTS, KitSettings, own, service_url

env = own("consent")


class ConsentSettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["consent"], validation_alias=env("http_port"))
    db_schema: str = Field("consent", pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_schema"))
    db_role: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", validation_alias=env("db_role"))
    default_validity_days: int = Field(
        365,
        ge=1,
        validation_alias=env("default_validity_days"),
        description="Validity of a consent recorded without valid_until.",
    )
    max_validity_days: int = Field(
        730,
        ge=1,
        validation_alias=env("max_validity_days"),
        description="Longest validity a consent may be recorded with.",
    )
    expiry_interval_s: float = Field(
        30.0,
        gt=0,
        validation_alias=env("expiry_interval_s"),
        description="How often the expiry job looks for consents past valid_until.",
    )
    expiry_worker_enabled: bool = Field(
        True,
        validation_alias=env("expiry_worker_enabled"),
        description="Run the expiry job in this process (tests that drive expiry themselves turn it off).",
    )
    expiry_batch_size: int = Field(100, ge=1, validation_alias=env("expiry_batch_size"))
    decision_connections: int = Field(
        3,
        ge=0,
        le=8,
        validation_alias=env("decision_connections"),
        description="Database connections the decision API keeps for itself (out of the kit pool's 10); 0: use the pool.",
    )
    decision_cache_size: int = Field(
        50_000,
        ge=0,
        validation_alias=env("decision_cache_size"),
        description="Clients whose consents the decision API keeps in memory; 0 disables the cache.",
    )
    intake_url: str = Field(
        service_url("intake"),
        validation_alias=AliasChoices("LOTSE_INTAKE_URL", "intake_url"),
        description="Intake's base URL: the gate fetches the consented categories from its internal disclosure API.",
    )
    intake_timeout_s: float = Field(5.0, gt=0, validation_alias=env("intake_timeout_s"))
    ack_due_working_days: int = Field(
        5,
        ge=1,
        le=60,
        validation_alias=env("ack_due_working_days"),
        description="NRW working days a recipient has to acknowledge a forwarded withdrawal or erasure.",
    )
    ack_overdue_interval_s: float = Field(
        60.0,
        gt=0,
        validation_alias=env("ack_overdue_interval_s"),
        description="How often the overdue job looks for missing acknowledgements.",
    )
    ack_overdue_worker_enabled: bool = Field(True, validation_alias=env("ack_overdue_worker_enabled"))
    ack_overdue_batch_size: int = Field(100, ge=1, validation_alias=env("ack_overdue_batch_size"))
