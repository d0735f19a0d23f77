"""Integration events: every event that crosses a service boundary.

Each event has an explicit, stable type name (`lotse.consent.granted`), never one
derived from a class or module path. Within a version, fields are only added;
a breaking change gets a new version (see docs/contracts.md).

Consumers are tolerant readers: unknown fields are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from . import topics
from .dates import SupportedDate, SupportedDateTime
from .text import FreeText, ShortText
from .upcasting import JsonData, upcaster
from .vocab import (
    DataCategory,
    DeadlineKind,
    DeclineReason,
    LegalRegime,
    Need,
    NotificationChannel,
    NotificationFailure,
    Purpose,
    RecipientKind,
    ResidenceTitle,
)

# Every date and time an event carries lies in the supported calendar (contracts/dates.py): one outside it
# is schema-invalid at decoding, not a failure in each consumer that stores it.
Timestamp: TypeAlias = SupportedDateTime
Day: TypeAlias = SupportedDate

OrgId = Annotated[str, StringConstraints(pattern=topics.ORG_ID_PATTERN)]
LanguageTag = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class EventData(BaseModel):
    # Tolerant reader: a newer producer may add fields this consumer does not know.
    model_config = ConfigDict(extra="ignore", frozen=True, use_enum_values=False)


class ClientEvent(EventData):
    client_id: UUID = Field(description="Pseudonymous client id; also the record key.")


# ---------------------------------------------------------------- clients
# A residence title and how long it is valid: one fact, of the `residence_status` data category.
# (No docstring: it would change the committed schemas that embed this model.)
class ResidenceStatus(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    title: ResidenceTitle | None = None
    valid_until: Day | None = None


class ClientRegisteredV1(ClientEvent):
    """`lotse.client.registered` v1, read from older records only: the decoder upcasts it to v2."""

    registering_org: OrgId
    responsible_org: OrgId
    preferred_language: LanguageTag
    languages: list[LanguageTag] = []
    needs: list[Need] = []
    residence_title: ResidenceTitle | None = None
    residence_valid_until: Day | None = None
    legal_regime: LegalRegime | None = None
    registered_at: Timestamp


class ClientRegistered(ClientEvent):
    """v2: the residence title and its end date travel together as one `residence` object, the shape
    `PersonalData.residence_status` already has. In v1 they were two unrelated top-level fields, so a
    consumer could read an end date without the title it belongs to, and a data-category check had to
    know that two field names make one category."""

    registering_org: OrgId
    responsible_org: OrgId
    preferred_language: LanguageTag
    languages: list[LanguageTag] = []
    needs: list[Need] = []
    residence: ResidenceStatus | None = None
    legal_regime: LegalRegime | None = None
    registered_at: Timestamp


@upcaster("lotse.client.registered", from_version=1)
def _client_registered_v1_to_v2(data: JsonData) -> JsonData:
    """`residence_title` + `residence_valid_until` -> `residence: {title, valid_until}` (None when both are absent)."""
    v2 = dict(data)
    title, valid_until = v2.pop("residence_title", None), v2.pop("residence_valid_until", None)
    v2["residence"] = None if title is None and valid_until is None else {"title": title, "valid_until": valid_until}
    return v2


class ClientUpdated(ClientEvent):
    changed: list[str] = Field(description="Names of the fields that changed.")
    preferred_language: LanguageTag | None = None
    languages: list[LanguageTag] | None = None
    needs: list[Need] | None = None
    residence_title: ResidenceTitle | None = None
    residence_valid_until: Day | None = None
    updated_by_org: OrgId
    updated_at: Timestamp


class CaseHandedOver(ClientEvent):
    """Responsibility moves between organisations (Rechtskreiswechsel)."""

    from_org: OrgId
    to_org: OrgId
    from_regime: LegalRegime | None = None
    to_regime: LegalRegime | None = None
    reason: ShortText | None = None
    open_referral_ids: list[UUID] = []
    open_deadline_ids: list[UUID] = []
    handed_over_at: Timestamp


class ClientErased(ClientEvent):
    requested_by_org: OrgId
    erased_at: Timestamp


# ---------------------------------------------------------------- consents
class ConsentGranted(ClientEvent):
    consent_id: UUID
    collecting_org: OrgId
    recipients: list[OrgId] = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1)
    categories: list[DataCategory] = Field(min_length=1)
    legal_basis: list[FreeText] = Field(min_length=1, examples=[["GDPR Art. 6(1)(a)"]])
    form: FreeText
    information_language: LanguageTag
    interpreter_used: bool = False
    granted_at: Timestamp
    valid_until: Timestamp | None = None


class ConsentWithdrawn(ClientEvent):
    consent_id: UUID
    withdrawn_at: Timestamp
    recorded_by_org: OrgId | None = None
    disclosed_to: list[OrgId] = Field(default=[], description="Organisations that already received data under this consent.")


class ConsentExpired(ClientEvent):
    consent_id: UUID
    expired_at: Timestamp
    disclosed_to: list[OrgId] = []


# ---------------------------------------------------------------- referrals
class ReferralSent(ClientEvent):
    referral_id: UUID
    from_org: OrgId
    to_org: OrgId
    service: FreeText
    need: Need | None = None
    requested_categories: list[DataCategory] = []
    answer_due: Day | None = None
    sent_at: Timestamp


class ReferralAnswer(ClientEvent):
    """Common shape of a receiver's answer; partners may omit `from_org`."""

    referral_id: UUID
    to_org: OrgId = Field(description="The receiving organisation, which answers.")
    from_org: OrgId | None = None


class ReferralAccepted(ReferralAnswer):
    accepted_at: Timestamp
    appointment_at: Timestamp | None = None


class ReferralDeclined(ReferralAnswer):
    reason: DeclineReason
    reason_text: ShortText | None = Field(default=None, description="Required when reason is 'other'.")
    declined_at: Timestamp


class ReferralCompleted(ReferralAnswer):
    completed_at: Timestamp
    outcome: ShortText | None = None


class ReferralRevoked(ClientEvent):
    referral_id: UUID
    from_org: OrgId
    to_org: OrgId
    reason: ShortText | None = None
    revoked_at: Timestamp


# ---------------------------------------------------------------- deadlines
class DeadlineEvent(ClientEvent):
    deadline_id: UUID
    kind: DeadlineKind
    due_at: Timestamp
    responsible_org: OrgId
    referral_id: UUID | None = None
    legal_note: FreeText | None = Field(default=None, description="Why the date matters, in English.")


class DeadlineRegistered(DeadlineEvent):
    lead_times_days: list[int] = []
    registered_at: Timestamp


class DeadlineApproaching(DeadlineEvent):
    lead_time_days: int
    days_left: int


class DeadlineMissed(DeadlineEvent):
    missed_at: Timestamp


class DeadlineResolved(DeadlineEvent):
    resolved_at: Timestamp
    resolution: ShortText | None = None


# ---------------------------------------------------------------- disclosures
class Identity(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    given_name: FreeText
    family_name: FreeText
    date_of_birth: Day | None = None


class Contact(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    email: EmailStr | None = None
    phone: FreeText | None = None
    preferred_language: LanguageTag | None = None
    languages: list[LanguageTag] = []


class PersonalData(BaseModel):
    """Personal data by category; a field is present only where consent allows it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    identity: Identity | None = None
    contact: Contact | None = None
    residence_status: ResidenceStatus | None = None
    needs: list[Need] | None = None
    education_qualifications: FreeText | None = None
    health: FreeText | None = None

    def categories(self) -> list[DataCategory]:
        return [c for c in DataCategory if getattr(self, c.value) is not None]

    def restricted_to(self, allowed: set[DataCategory]) -> PersonalData:
        return PersonalData(**{c.value: getattr(self, c.value) for c in DataCategory if c in allowed})


class DisclosureRequested(ClientEvent):
    """v2: intake asks the consent gate to hand a referral to a partner, naming only pseudonymous ids, the
    purpose, the recipient and the requested categories. The gate checks the consent itself, then fetches
    exactly the allowed categories (and the referral's notes) from intake's internal API and seals them to
    the recipient. v1 carried the personal data on this topic in clear."""

    request_id: UUID
    referral_id: UUID
    from_org: OrgId
    to_org: OrgId
    purpose: Purpose = Purpose.REFERRAL
    service: FreeText
    need: Need | None = None
    categories: list[DataCategory]
    answer_due: Day | None = None
    requested_at: Timestamp


@upcaster("lotse.disclosure.requested", from_version=1)
def _disclosure_requested_v1_to_v2(data: JsonData) -> JsonData:
    """Drops the personal data and the notes: the gate fetches them from intake, as for every v2 request."""
    return {k: v for k, v in data.items() if k not in ("personal_data", "reason", "free_text")}


class DisclosureRequestedV1(ClientEvent):
    """`lotse.disclosure.requested` v1, read from older records only: it carried the personal data itself."""

    request_id: UUID
    referral_id: UUID
    from_org: OrgId
    to_org: OrgId
    purpose: Purpose = Purpose.REFERRAL
    service: FreeText
    need: Need | None = None
    categories: list[DataCategory]
    reason: ShortText | None = None
    free_text: FreeText | None = Field(default=None, max_length=4000)
    answer_due: Day | None = None
    personal_data: PersonalData
    requested_at: Timestamp


class DisclosureMade(ClientEvent):
    request_id: UUID
    referral_id: UUID | None = None
    recipient: OrgId
    purpose: Purpose
    categories: list[DataCategory]
    consent_id: UUID
    payload_sha256: Sha256Hex
    disclosed_at: Timestamp


class DisclosureBlocked(ClientEvent):
    request_id: UUID
    referral_id: UUID | None = None
    recipient: OrgId
    purpose: Purpose
    categories: list[DataCategory]
    reason: FreeText
    missing_categories: list[DataCategory] = []
    blocked_at: Timestamp


class PartnerReferral(ClientEvent):
    """What a receiving partner gets on its own inbox: the referral plus exactly the consented personal data."""

    referral_id: UUID
    from_org: OrgId
    to_org: OrgId
    service: FreeText
    need: Need | None = None
    reason: ShortText | None = None
    free_text: FreeText | None = None
    answer_due: Day | None = None
    consent_id: UUID
    categories: list[DataCategory]
    personal_data: PersonalData
    sent_at: Timestamp


# ---------------------------------------------------------------- notifications
class ReferralNotes(BaseModel):
    """What the sending organisation wrote about the referral; it may describe the client, so it is sealed."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    reason: ShortText | None = None
    free_text: FreeText | None = Field(default=None, max_length=4000)


class SealedContent(BaseModel):
    """The plaintext of a sealed inbox payload (`contracts/sealed.py`): what the partner reads after opening it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    personal_data: PersonalData
    notes: ReferralNotes | None = None
    do_not_contact: bool = Field(False, description="The client asked not to be contacted (only sent with contact data).")


class Sealed(BaseModel):
    """Personal data encrypted to the recipient organisation: a compact JWE whose plaintext is a `SealedContent`."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    jwe: str = Field(max_length=1_000_000, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}$")
    kid: str = Field(description="The recipient's key that opens it (also in the JWE header).")


class PartnerReferralV2(ClientEvent):
    """The referral on the receiving partner's inbox, v2: the personal data and the notes are sealed to the
    partner's registered key. (v1 carried them in clear; such records remain until the inbox's retention.)"""

    referral_id: UUID
    from_org: OrgId
    to_org: OrgId
    service: FreeText
    need: Need | None = None
    answer_due: Day | None = None
    consent_id: UUID
    categories: list[DataCategory]
    sealed: Sealed
    sent_at: Timestamp


class ClientCorrected(ClientEvent):
    """Intake corrected personal data of these categories (GDPR Art. 16); the values stay in intake. The consent
    gate tells every organisation that received a category under a still-valid consent (Art. 19)."""

    categories: list[DataCategory] = Field(min_length=1)
    corrected_by_org: OrgId
    corrected_at: Timestamp


class PartnerCorrection(ClientEvent):
    """A correction on the partner's inbox: the corrected categories' current values, sealed to the partner."""

    consent_id: UUID
    categories: list[DataCategory]
    sealed: Sealed
    corrected_at: Timestamp


class Acknowledgement(ClientEvent):
    """A partner confirms, on its outbox, that it acted on a forwarded withdrawal or erasure: `signature` is its
    JWS (ES256, its registered signing key) over {"client_id", "event_id"} (`contracts.sealed.sign_ack`)."""

    org: OrgId
    acknowledged_event_id: UUID = Field(description="The id of the inbox record acknowledged.")
    acknowledged_at: Timestamp
    signature: str = Field(max_length=4096)


class WithdrawalAcknowledged(Acknowledgement):
    pass


class ErasureAcknowledged(Acknowledgement):
    pass


class AcknowledgementOverdue(ClientEvent):
    """A recipient has not acknowledged a forwarded withdrawal or erasure within the configured working days."""

    org: OrgId
    kind: Literal["withdrawal", "erasure"]
    acknowledged_event_id: UUID
    collecting_org: OrgId | None = None
    forwarded_at: Timestamp
    due_at: Timestamp


class NotificationEvent(EventData):
    notification_id: UUID
    client_id: UUID | None = None
    trigger_event_id: UUID
    trigger_type: FreeText
    channel: NotificationChannel
    recipient_kind: RecipientKind
    recipient_org: OrgId | None = None
    language: LanguageTag | None = None


class NotificationDelivered(NotificationEvent):
    delivered_at: Timestamp
    attempts: int = 1


class NotificationFailed(NotificationEvent):
    status: NotificationFailure
    reason: FreeText
    attempts: int
    failed_at: Timestamp


class InboxLeftUnfetched(EventData):
    """Records on a partner's inbox that the partner reaches over HTTPS (services/gateway) were not fetched and
    acknowledged within the configured time. Pseudonymous: the organisation, counts and times, no record content."""

    org: OrgId
    pending: int = Field(ge=1, description="Records on the inbox not acknowledged yet.")
    oldest_record_at: Timestamp = Field(description="When the oldest of them was written to the inbox.")
    unfetched_after_s: int = Field(ge=1, description="The configured time after which a record counts as unfetched.")
    mode: Literal["pull", "push"]
    detected_at: Timestamp


# ---------------------------------------------------------------- registry
EventModel: TypeAlias = type[EventData]  # (inside EventSpec, `type` is the field)


@dataclass(frozen=True)
class EventSpec:
    type: str
    version: int
    model: EventModel
    topic: str | None  # None: the topic is chosen per record (partner topics)
    description: str
    schema_name: str | None = None  # defaults to "<type>.v<version>"

    @property
    def dataschema(self) -> str:
        return f"urn:lotse:schema:{self.schema_id}"

    @property
    def schema_id(self) -> str:
        return self.schema_name or f"{self.type}.v{self.version}"


# A table, one contract per line: the formatter leaves it alone.
# fmt: off
_SPECS = [
    EventSpec("lotse.client.registered", 2, ClientRegistered, topics.CLIENTS, "A client was registered by a member organisation."),
    EventSpec("lotse.client.updated", 1, ClientUpdated, topics.CLIENTS, "A client's needs, languages or residence title changed."),
    EventSpec("lotse.case.handed_over", 1, CaseHandedOver, topics.CLIENTS, "Responsibility for a client moved to another organisation."),
    EventSpec("lotse.client.erased", 1, ClientErased, topics.CLIENTS, "A client's personal data was erased."),
    EventSpec("lotse.client.corrected", 1, ClientCorrected, topics.CLIENTS, "Personal data of these categories was corrected."),
    EventSpec("lotse.consent.granted", 1, ConsentGranted, topics.CONSENTS, "A client consented to data exchange."),
    EventSpec("lotse.consent.withdrawn", 1, ConsentWithdrawn, topics.CONSENTS, "A client withdrew a consent (GDPR Art. 7(3))."),
    EventSpec("lotse.consent.expired", 1, ConsentExpired, topics.CONSENTS, "A consent reached its valid-until time."),
    EventSpec("lotse.acknowledgement.overdue", 1, AcknowledgementOverdue, topics.CONSENTS, "A recipient has not acknowledged a withdrawal or erasure in time."),
    EventSpec("lotse.withdrawal.acknowledged", 1, WithdrawalAcknowledged, None, "A partner acknowledged a forwarded withdrawal (signed), on its outbox."),
    EventSpec("lotse.erasure.acknowledged", 1, ErasureAcknowledged, None, "A partner acknowledged a forwarded erasure (signed), on its outbox."),
    EventSpec("lotse.referral.sent", 1, ReferralSent, topics.REFERRALS, "A referral was sent to another organisation."),
    EventSpec("lotse.referral.accepted", 1, ReferralAccepted, topics.REFERRALS, "The receiving organisation accepted a referral."),
    EventSpec("lotse.referral.declined", 1, ReferralDeclined, topics.REFERRALS, "The receiving organisation declined a referral."),
    EventSpec("lotse.referral.completed", 1, ReferralCompleted, topics.REFERRALS, "The receiving organisation completed a referral."),
    EventSpec("lotse.referral.revoked", 1, ReferralRevoked, topics.REFERRALS, "The sending organisation revoked a referral."),
    EventSpec("lotse.deadline.registered", 1, DeadlineRegistered, topics.DEADLINES, "A deadline was registered for a client."),
    EventSpec("lotse.deadline.approaching", 1, DeadlineApproaching, topics.DEADLINES, "A deadline is within one of its lead times."),
    EventSpec("lotse.deadline.missed", 1, DeadlineMissed, topics.DEADLINES, "A deadline passed unresolved."),
    EventSpec("lotse.deadline.resolved", 1, DeadlineResolved, topics.DEADLINES, "A deadline was resolved."),
    EventSpec("lotse.disclosure.requested", 2, DisclosureRequested, topics.DISCLOSURE_REQUESTS, "Intake asks the consent gate to disclose a referral to a partner (pseudonymous; the gate fetches the data)."),
    EventSpec("lotse.disclosure.made", 1, DisclosureMade, topics.DISCLOSURES, "Personal data was disclosed to a partner under a consent."),
    EventSpec("lotse.disclosure.blocked", 1, DisclosureBlocked, topics.DISCLOSURES, "A disclosure was refused for want of a valid consent."),
    EventSpec("lotse.notification.delivered", 1, NotificationDelivered, topics.NOTIFICATIONS, "A notification reached its recipient."),
    EventSpec("lotse.notification.failed", 1, NotificationFailed, topics.NOTIFICATIONS, "A notification could not be delivered."),
    EventSpec("lotse.inbox.left_unfetched", 1, InboxLeftUnfetched, topics.GATEWAY, "Records on a partner's HTTPS inbox were not fetched in time."),
]
# fmt: on

EVENTS: dict[str, EventSpec] = {s.type: s for s in _SPECS}

# Older versions still decodable: a record with one of these dataschemas is upcast to the current version.
PREVIOUS_VERSIONS = [
    EventSpec("lotse.client.registered", 1, ClientRegisteredV1, topics.CLIENTS, "A client was registered by a member organisation."),
    EventSpec(
        "lotse.disclosure.requested",
        1,
        DisclosureRequestedV1,
        topics.DISCLOSURE_REQUESTS,
        "Intake asked the consent gate to disclose a referral, with its personal data.",
    ),
]

# The referral as a partner receives it on partner.<org>.inbox.v1: same type, own schema. v2 seals the
# personal data to the partner; v1 (clear) stays decodable for records still within the inbox's retention.
PARTNER_REFERRAL_V1 = EventSpec(
    "lotse.referral.sent",
    1,
    PartnerReferral,
    None,
    "A referral with exactly the consented personal data in clear, on the receiving partner's inbox (superseded by v2).",
    schema_name="lotse.referral.sent.partner.v1",
)
PARTNER_REFERRAL = EventSpec(
    "lotse.referral.sent",
    2,
    PartnerReferralV2,
    None,
    "A referral with exactly the consented personal data sealed to the receiving partner, on its inbox.",
    schema_name="lotse.referral.sent.partner.v2",
)
PARTNER_CORRECTION = EventSpec(
    "lotse.client.corrected",
    1,
    PartnerCorrection,
    None,
    "Corrected personal data (GDPR Art. 16, 19), sealed to a partner that received these categories, on its inbox.",
    schema_name="lotse.client.corrected.partner.v1",
)

SCHEMAS: dict[str, EventSpec] = {
    s.dataschema: s for s in [*_SPECS, *PREVIOUS_VERSIONS, PARTNER_REFERRAL_V1, PARTNER_REFERRAL, PARTNER_CORRECTION]
}

# Answers a partner system may publish on its own outbox topic.
PARTNER_ANSWER_TYPES = ("lotse.referral.accepted", "lotse.referral.declined", "lotse.referral.completed")
# Acknowledgements a partner publishes on its outbox (read by the consent service).
PARTNER_ACK_TYPES = ("lotse.withdrawal.acknowledged", "lotse.erasure.acknowledged")


def spec_for(event_type: str, dataschema: str | None = None) -> EventSpec | None:
    """The contract of a record, by its dataschema where it names one, else by its type."""
    if dataschema and dataschema in SCHEMAS:
        spec = SCHEMAS[dataschema]
        return spec if spec.type == event_type else None
    return EVENTS.get(event_type)


def current_of(spec: EventSpec) -> EventSpec | None:
    """The current version of an older schema that must be upcast, or None when `spec` is read as it is
    (it is current, or a variant with its own schema name such as the partner referral)."""
    current = EVENTS.get(spec.type)
    if spec.schema_name is not None or current is None or current.version <= spec.version:
        return None
    return current


def spec_of(model: type[EventData]) -> EventSpec:
    for spec in SCHEMAS.values():
        if spec.model is model:
            return spec
    raise KeyError(f"{model.__name__} is not a registered integration event")
