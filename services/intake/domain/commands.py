"""Commands: what a caseworker asks intake to do.

Each command comes in two parts: `<Name>Body` is what the caller writes (the HTTP request body,
validated field by field; unknown fields are refused), and `<Name>` adds who acts (`acting_org`,
from the request context, never from the body) and what it acts on (`client_id`, `referral_id`,
`deadline_id`, from the path). `handlers.handle(cmd, deps)` runs a command by its class.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contracts.dates import SupportedAwareDateTime, SupportedDate
from contracts.events import LanguageTag, OrgId
from contracts.text import LongText, PersonName, ShortText
from contracts.vocab import DataCategory, DeadlineKind, DeclineReason, LegalRegime, Need, ResidenceTitle

Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ()/-]{4,29}$")]
LeadTime = Annotated[int, Field(ge=1, le=730)]


class Body(BaseModel):
    # Unknown fields are mistakes (or attempts to smuggle data): 422.
    model_config = ConfigDict(extra="forbid")


class Command(BaseModel):
    """Who acts: the acting organisation, as the request context established it."""

    model_config = ConfigDict(extra="forbid")
    acting_org: OrgId


class OnClient(Command):
    client_id: UUID


class OnReferral(Command):
    referral_id: UUID


class OnDeadline(Command):
    deadline_id: UUID


# What a command's own fields are, apart from who acts and on what.
ADDRESS = frozenset({"acting_org", "client_id", "referral_id", "deadline_id"})


class RegisterClientBody(Body):
    given_name: PersonName
    family_name: PersonName
    date_of_birth: SupportedDate | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    preferred_language: LanguageTag
    languages: list[LanguageTag] = []
    needs: list[Need] = []
    residence_title: ResidenceTitle | None = None
    residence_valid_until: SupportedDate | None = None
    residence_valid_from: SupportedDate | None = Field(
        default=None, description="For a §104c title: the first valid day; the end is computed."
    )
    legal_regime: LegalRegime | None = None
    registering_org: OrgId | None = Field(default=None, description="Defaults to the acting organisation (from the access token).")
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


class UpdateClientBody(Body):
    """Only the fields present in the request change; null clears an optional field. A change of personal data
    is a correction (GDPR Art. 16): recipients of its category are told (`lotse.client.corrected`)."""

    given_name: PersonName | None = None
    family_name: PersonName | None = None
    date_of_birth: SupportedDate | None = None
    preferred_language: LanguageTag | None = None
    languages: list[LanguageTag] | None = None
    needs: list[Need] | None = None
    residence_title: ResidenceTitle | None = None
    residence_valid_until: SupportedDate | None = None
    residence_valid_from: SupportedDate | None = None
    legal_regime: LegalRegime | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    education_qualifications: LongText | None = None
    health: LongText | None = Field(default=None, description="Special category data (GDPR Art. 9).")
    do_not_contact: bool | None = Field(
        default=None, description="The client asked not to be contacted: no notification reaches the client while it is true."
    )

    @field_validator("given_name", "family_name", "preferred_language", "languages", "needs", "do_not_contact")
    @classmethod
    def _not_null(cls, v: object) -> object:
        if v is None:
            raise ValueError("cannot be null")
        return v

    @field_validator("date_of_birth")
    @classmethod
    def _not_future(cls, v: date | None) -> date | None:
        if v and v > date.today():
            raise ValueError("lies in the future")
        return v

    @model_validator(mode="after")
    def _check(self) -> UpdateClientBody:
        if not self.given:
            raise ValueError("nothing to update")
        return self

    @property
    def given(self) -> set[str]:
        """The fields the caller sent (only these change; null clears)."""
        return self.model_fields_set - ADDRESS


class HandOverCaseBody(Body):
    to_org: OrgId
    to_regime: LegalRegime | None = None
    reason: ShortText | None = None


class SendReferralBody(Body):
    need: Need | None = None
    to_org: OrgId | None = Field(default=None, description="Defaults to the process plan's organisation for the need.")
    service: ShortText | None = Field(default=None, description="Defaults to the process plan's service for the need.")
    reason: ShortText | None = None
    categories: list[DataCategory] = Field(min_length=1, description="Data categories the receiver needs; consent must cover each.")
    free_text: LongText | None = None


class AcceptReferralBody(Body):
    appointment_at: SupportedAwareDateTime | None = None


class DeclineReferralBody(Body):
    reason: DeclineReason
    reason_text: ShortText | None = Field(default=None, validate_default=True)

    @field_validator("reason_text")
    @classmethod
    def _text_for_other(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("reason") is DeclineReason.OTHER and not (v and v.strip()):
            raise ValueError("is required when reason is 'other'")
        return v


class CompleteReferralBody(Body):
    outcome: ShortText | None = None


class RevokeReferralBody(Body):
    reason: ShortText | None = None


class RegisterDeadlineBody(Body):
    kind: DeadlineKind
    due_date: SupportedDate | None = Field(default=None, validate_default=True, description="Last day (inclusive) for date deadlines.")
    due_at: SupportedAwareDateTime | None = Field(default=None, validate_default=True, description="The moment, for appointments.")
    valid_from: SupportedDate | None = Field(
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


class ResolveDeadlineBody(Body):
    resolution: ShortText | None = None


# ---------------------------------------------------------------- the commands
class RegisterClient(RegisterClientBody, Command):
    pass


class UpdateClient(UpdateClientBody, OnClient):
    pass


class HandOverCase(HandOverCaseBody, OnClient):
    pass


class EraseClient(OnClient):
    """GDPR Art. 17: erase the client's personal data (no body)."""


class SendReferral(SendReferralBody, OnClient):
    pass


class AcceptReferral(AcceptReferralBody, OnReferral):
    pass


class DeclineReferral(DeclineReferralBody, OnReferral):
    pass


class CompleteReferral(CompleteReferralBody, OnReferral):
    pass


class RevokeReferral(RevokeReferralBody, OnReferral):
    pass


class RegisterDeadline(RegisterDeadlineBody, OnClient):
    pass


class ResolveDeadline(ResolveDeadlineBody, OnDeadline):
    pass


# ---------------------------------------------------------------- the internal API's batch query (consent gate only)
# At most this many requests in one POST /internal/v1/disclosures: bounds the answer's size and the statement's
# arrays; the consent gate splits a larger batch.
DISCLOSURE_BATCH_MAX = 200


class DisclosureItem(Body):
    """One disclosure the gate needs: exactly these categories of the client, and the notes of this referral."""

    client_id: UUID
    categories: list[DataCategory] = Field(min_length=1, max_length=len(DataCategory))
    referral_id: UUID | None = None

    @field_validator("categories")
    @classmethod
    def _unique(cls, v: list[DataCategory]) -> list[DataCategory]:
        return list(dict.fromkeys(v))


class DisclosuresBody(Body):
    items: list[DisclosureItem] = Field(min_length=1, max_length=DISCLOSURE_BATCH_MAX)


CONTACT_BATCH_MAX = 200  # the consent service's bound on one batch of decisions (one call per batch)


class ContactItem(Body):
    """One contact lookup of the notifications service: the client, on behalf of which organisation (the single
    route's `Lotse-On-Behalf-Of`)."""

    client_id: UUID
    on_behalf_of: OrgId


class ContactsBody(Body):
    items: list[ContactItem] = Field(min_length=1, max_length=CONTACT_BATCH_MAX)
