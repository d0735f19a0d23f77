"""Commands: what a caseworker (or a partner system) asks intake to do. Also the HTTP request bodies."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, StringConstraints, ValidationInfo, field_validator, model_validator

from contracts.events import LanguageTag, OrgId, ShortText
from contracts.vocab import DataCategory, DeadlineKind, DeclineReason, LegalRegime, Need, ResidenceTitle

PersonName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ()/-]{4,29}$")]
LongText = Annotated[str, StringConstraints(max_length=4000)]
LeadTime = Annotated[int, Field(ge=1, le=730)]


class Command(BaseModel):
    # Unknown fields are mistakes (or attempts to smuggle data): 422.
    model_config = ConfigDict(extra="forbid")


class RegisterClient(Command):
    given_name: PersonName
    family_name: PersonName
    date_of_birth: date | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    preferred_language: LanguageTag
    languages: list[LanguageTag] = []
    needs: list[Need] = []
    residence_title: ResidenceTitle | None = None
    residence_valid_until: date | None = None
    residence_valid_from: date | None = Field(default=None, description="For a §104c title: the first valid day; the end is computed.")
    legal_regime: LegalRegime | None = None
    registering_org: OrgId | None = Field(default=None, description="Defaults to the acting organisation (X-Lotse-Org).")
    education_qualifications: LongText | None = None
    health: LongText | None = Field(default=None, description="Special category data (GDPR Art. 9); only disclosed with explicit consent.")

    @field_validator("date_of_birth")
    @classmethod
    def _not_future(cls, v: date | None) -> date | None:
        if v and v > date.today():
            raise ValueError("lies in the future")
        return v

    @field_validator("residence_valid_until", "residence_valid_from")
    @classmethod
    def _needs_title(cls, v: date | None, info: ValidationInfo) -> date | None:
        title = info.data.get("residence_title")
        if v and title is None:
            raise ValueError("needs a residence_title")
        if v and info.field_name == "residence_valid_from" and title is not ResidenceTitle.CHANCEN_104C:
            raise ValueError("is only used for a §104c title (aufenthg_104c)")
        return v


class UpdateClient(Command):
    """Only the fields present in the request change; null clears an optional field."""

    preferred_language: LanguageTag | None = None
    languages: list[LanguageTag] | None = None
    needs: list[Need] | None = None
    residence_title: ResidenceTitle | None = None
    residence_valid_until: date | None = None
    residence_valid_from: date | None = None
    legal_regime: LegalRegime | None = None
    email: EmailStr | None = None
    phone: Phone | None = None

    @field_validator("preferred_language", "languages", "needs")
    @classmethod
    def _not_null(cls, v: object) -> object:
        if v is None:
            raise ValueError("cannot be null")
        return v

    @model_validator(mode="after")
    def _check(self) -> UpdateClient:
        if not self.model_fields_set:
            raise ValueError("nothing to update")
        return self


class HandOverCase(Command):
    to_org: OrgId
    to_regime: LegalRegime | None = None
    reason: ShortText | None = None


class SendReferral(Command):
    need: Need | None = None
    to_org: OrgId | None = Field(default=None, description="Defaults to the process plan's organisation for the need.")
    service: str | None = Field(default=None, description="Defaults to the process plan's service for the need.")
    reason: ShortText | None = None
    categories: list[DataCategory] = Field(min_length=1, description="Data categories the receiver needs; consent must cover each.")
    free_text: LongText | None = None


class AcceptReferral(Command):
    appointment_at: AwareDatetime | None = None


class DeclineReferral(Command):
    reason: DeclineReason
    reason_text: ShortText | None = Field(default=None, validate_default=True)

    @field_validator("reason_text")
    @classmethod
    def _text_for_other(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("reason") is DeclineReason.OTHER and not (v and v.strip()):
            raise ValueError("is required when reason is 'other'")
        return v


class CompleteReferral(Command):
    outcome: ShortText | None = None


class RevokeReferral(Command):
    reason: ShortText | None = None


class RegisterDeadline(Command):
    kind: DeadlineKind
    due_date: date | None = Field(default=None, validate_default=True, description="Last day (inclusive) for date deadlines.")
    due_at: AwareDatetime | None = Field(default=None, validate_default=True, description="The moment, for appointments.")
    valid_from: date | None = Field(
        default=None, validate_default=True, description="§104c: first valid day of the title; the end is computed (18 months)."
    )
    referral_id: UUID | None = Field(default=None, validate_default=True)
    lead_times_days: list[LeadTime] | None = Field(default=None, min_length=1)

    @field_validator("due_date", "due_at", "valid_from", "referral_id")
    @classmethod
    def _fits_kind(cls, v: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if kind is None:
            return v
        wanted = {
            DeadlineKind.CHANCEN_AUFENTHALT_END: "valid_from",
            DeadlineKind.APPOINTMENT: "due_at",
        }.get(kind, "due_date")
        name = info.field_name
        if name == "referral_id":
            if kind is DeadlineKind.REFERRAL_ANSWER_DUE and v is None:
                raise ValueError("is required for referral_answer_due")
            return v
        if name == wanted and v is None:
            raise ValueError(f"is required for {kind.value}")
        if name != wanted and v is not None:
            raise ValueError(f"is not used for {kind.value} (send {wanted})")
        return v


class ResolveDeadline(Command):
    resolution: ShortText | None = None
