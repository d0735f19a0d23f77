"""Intake settings: the kit's LOTSE_* settings plus intake's own."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from lotse_kit.settings import SERVICE_PORTS, KitSettings, own, service_url

env = own("intake")


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
