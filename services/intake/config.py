"""Intake settings: the kit's LOTSE_* settings plus intake's own.

List and mapping settings are JSON in the environment, e.g.
`LOTSE_INTAKE_RETENTION_DAYS='{"identity": 3650, "health": 1095}'` or
`LOTSE_INTAKE_OLD_KEKS='{"kek-2025": "<base64>"}'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr

from contracts.vocab import DataCategory
from lotse_kit.settings import SERVICE_PORTS, KitSettings, own, service_url

env = own("intake")

REPO = Path(__file__).resolve().parents[2]
DEV_KEY_DIR = REPO / ".run" / "intake"


class IntakeSettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["intake"], validation_alias=env("http_port"))
    consent_url: str = Field(service_url("consent"), validation_alias=AliasChoices("LOTSE_CONSENT_URL", "consent_url"))
    consent_timeout_s: float = Field(3.0, gt=0, validation_alias=env("consent_timeout_s"))

    # Lead times (days before the due time) at which lotse.deadline.approaching is emitted.
    deadline_lead_times_days: list[int] = Field([90, 30, 7], validation_alias=env("deadline_lead_times_days"))
    appointment_lead_times_days: list[int] = Field([1], validation_alias=env("appointment_lead_times_days"))
    referral_answer_lead_times_days: list[int] = Field([1], validation_alias=env("referral_answer_lead_times_days"))
    referral_default_answer_working_days: int = Field(
        10, ge=1, le=60, validation_alias=AliasChoices("LOTSE_INTAKE_REFERRAL_ANSWER_WORKING_DAYS", "referral_default_answer_working_days")
    )
    deadline_scan_interval_s: float = Field(30.0, gt=0, validation_alias=env("deadline_scan_interval_s"))
    deadline_batch_size: int = Field(100, ge=1, validation_alias=env("deadline_batch_size"))

    # ------------------------------------------------------------ personal data at rest (adapters/vault.py)
    kek: SecretStr | None = Field(
        None,
        validation_alias=env("kek"),
        description="Key-encryption key that wraps every client's data key: base64 of 32 random bytes (AES-256-GCM). Overrides kek_file.",
    )
    kek_id: str | None = Field(
        None,
        validation_alias=env("kek_id"),
        description="The id stored with every data key wrapped under kek; derived from the key when unset.",
    )
    old_keks: dict[str, SecretStr] = Field(
        default_factory=dict,
        validation_alias=env("old_keks"),
        description='JSON {"<kek id>": "<base64>"}: previous KEKs, kept to unwrap data keys until the re-wrap job has moved them.',
    )
    kek_file: Path = Field(
        DEV_KEY_DIR / "data-kek",
        validation_alias=env("kek_file"),
        description="File with the base64 KEK when kek is unset; generated (mode 0600) if absent and generate_keys is on.",
    )
    generate_keys: bool = Field(
        True,
        validation_alias=env("generate_keys"),
        description="Generate the KEK into kek_file if absent (development only; turn off in production).",
    )
    key_rewrap_interval_s: float = Field(
        3600.0,
        gt=0,
        validation_alias=env("key_rewrap_interval_s"),
        description="How often data keys wrapped under an old KEK are wrapped again under the current one (also at start).",
    )
    key_rewrap_batch_size: int = Field(500, ge=1, validation_alias=env("key_rewrap_batch_size"))

    # ------------------------------------------------------------ erasure (GDPR Art. 17)
    retention_days: dict[DataCategory, Annotated[int, Field(ge=0, le=36500)]] = Field(
        default_factory=dict,
        validation_alias=env("retention_days"),
        description="Legal retention period per data category, in days from the case's last activity; a category "
        "not listed (or 0) has none. While one runs for a category the client has data in, erasure is refused (409).",
    )
