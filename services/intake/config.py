"""Intake settings: the kit's LOTSE_* settings plus intake's own."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from lotse_kit.settings import SERVICE_PORTS, KitSettings, service_url

REPO = Path(__file__).resolve().parents[2]


class IntakeSettings(KitSettings):
    http_port: int = Field(SERVICE_PORTS["intake"], validation_alias=AliasChoices("LOTSE_INTAKE_HTTP_PORT", "http_port"))
    network_file: Path = Field(
        REPO / "deploy" / "demo" / "network.yaml", validation_alias=AliasChoices("LOTSE_NETWORK_FILE", "network_file")
    )
    consent_url: str = Field(service_url("consent"), validation_alias=AliasChoices("LOTSE_CONSENT_URL", "consent_url"))
    consent_timeout_s: float = Field(3.0, gt=0, validation_alias=AliasChoices("LOTSE_INTAKE_CONSENT_TIMEOUT_S", "consent_timeout_s"))

    # Lead times (days before the due time) at which lotse.deadline.approaching is emitted.
    deadline_lead_times_days: list[int] = Field(
        [90, 30, 7], validation_alias=AliasChoices("LOTSE_INTAKE_DEADLINE_LEAD_TIMES_DAYS", "deadline_lead_times_days")
    )
    appointment_lead_times_days: list[int] = Field(
        [1], validation_alias=AliasChoices("LOTSE_INTAKE_APPOINTMENT_LEAD_TIMES_DAYS", "appointment_lead_times_days")
    )
    referral_answer_lead_times_days: list[int] = Field(
        [1], validation_alias=AliasChoices("LOTSE_INTAKE_REFERRAL_ANSWER_LEAD_TIMES_DAYS", "referral_answer_lead_times_days")
    )
    referral_default_answer_working_days: int = Field(
        10, ge=1, le=60, validation_alias=AliasChoices("LOTSE_INTAKE_REFERRAL_ANSWER_WORKING_DAYS", "referral_default_answer_working_days")
    )
    deadline_scan_interval_s: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("LOTSE_INTAKE_DEADLINE_SCAN_INTERVAL_S", "deadline_scan_interval_s")
    )
    deadline_batch_size: int = Field(100, ge=1, validation_alias=AliasChoices("LOTSE_INTAKE_DEADLINE_BATCH_SIZE", "deadline_batch_size"))
