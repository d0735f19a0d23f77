"""What each field of an event on a shared topic is: the personal-data guard, as an allowlist.

Shared topics are those every service may read and that are kept for weeks: the internal `lotse.*`
topics except `lotse.disclosure-requests.v1`, and the partners' outboxes (`carries_personal_data` is
false for them). Personal data travels by design only on `lotse.disclosure-requests.v1` (read by the
consent gate alone) and on a partner's own inbox.

Every field of every event that travels on a shared topic, nested models included, is listed here:
either as `Pseudonymous` (an id, an organisation, a vocabulary code, a time, a number, ...) or as the
`DataCategory` of personal data it is. A field that is personal data needs a `shared_topic_reason`:
why a reader of that shared topic needs it. `tests/contracts/test_privacy.py` fails for any field
not listed here, so adding a field to an event means deciding what it is.

Data about a pseudonymous client is still personal data (GDPR Recital 26); what the pseudonym buys is
that the shared topics carry no name, address, contact or birth date, so they cannot be linked to a
person without intake's database. Some categories never go on a shared topic (`NEVER_SHARED`).
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from . import events as ev
from . import topics
from .events import PARTNER_ACK_TYPES, PARTNER_ANSWER_TYPES, SCHEMAS, EventSpec
from .vocab import DataCategory


class Pseudonymous(StrEnum):
    """Kinds of fields that do not describe the person."""

    ID = "id"  # a random identifier: the client pseudonym, ids of referrals, consents, deadlines, events
    ORG = "org"  # an organisation id of the network
    CODE = "code"  # a value of a closed vocabulary or configuration: types, statuses, purposes, category names, service ids
    TIME = "time"  # when a step of the process happened or is due
    NUMBER = "number"  # counts, attempts, lead times
    FLAG = "flag"
    DIGEST = "digest"  # a hash of a payload
    PROCESS_TEXT = "process-text"  # short text about the process (a reason, an outcome), written by staff or code;
    # by policy it never describes the person: the schema cannot enforce that (see docs/contracts.md)


Kind = Pseudonymous | DataCategory


@dataclass(frozen=True)
class Classified:
    kind: Kind
    shared_topic_reason: str | None = None

    @property
    def personal(self) -> bool:
        return isinstance(self.kind, DataCategory)


# Categories that never travel on a shared topic, whatever the reason.
NEVER_SHARED = frozenset({DataCategory.IDENTITY, DataCategory.HEALTH, DataCategory.EDUCATION_QUALIFICATIONS})

ID = Classified(Pseudonymous.ID)
ORG = Classified(Pseudonymous.ORG)
CODE = Classified(Pseudonymous.CODE)
TIME = Classified(Pseudonymous.TIME)
NUMBER = Classified(Pseudonymous.NUMBER)
FLAG = Classified(Pseudonymous.FLAG)
DIGEST = Classified(Pseudonymous.DIGEST)
PROCESS_TEXT = Classified(Pseudonymous.PROCESS_TEXT)


def personal(category: DataCategory, shared_topic_reason: str) -> Classified:
    return Classified(category, shared_topic_reason)


_LANGUAGES_REASON = (
    "the audit service's subject report (GDPR Art. 15) is written in the client's language, chosen from these; "
    "languages alone do not identify the client"
)
_NEEDS_REASON = (
    "published since v1 so members can coordinate a case; today only the audit log reads it. "
    "Kept because the contract promises it; a candidate for removal in the next version"
)
_RESIDENCE_REASON = (
    "published since v1; today only the audit log reads it (intake derives the residence deadlines itself). "
    "Kept because the contract promises it; a candidate for removal in the next version"
)
_REGIME_REASON = (
    "the benefit regime (e.g. AsylbLG) follows from the residence status, the nearest category; members need it to "
    "hand a case over between regimes (Rechtskreiswechsel)"
)
_DEADLINE_REASON = (
    "for the kinds residence_title_expiry and chancen_aufenthalt_end, kind, due_at and legal_note say when the client's "
    "residence title ends: notifications remind the client and the responsible organisation, and the consent service "
    "forwards approaching/missed deadlines to partners serving the client"
)

# Per model, the classification of each field it declares. A field inherited from a base model is found on the base
# (e.g. `client_id` on ClientEvent). Nested models are listed like events (ResidenceStatus).
FIELDS: dict[type[BaseModel], dict[str, Classified]] = {
    ev.ClientEvent: {"client_id": ID},
    # ------------------------------------------------------------ lotse.clients.v1
    ev.ClientRegistered: {
        "registering_org": ORG,
        "responsible_org": ORG,
        "preferred_language": personal(DataCategory.CONTACT, _LANGUAGES_REASON),
        "languages": personal(DataCategory.CONTACT, _LANGUAGES_REASON),
        "needs": personal(DataCategory.NEEDS, _NEEDS_REASON),
        "residence": personal(DataCategory.RESIDENCE_STATUS, _RESIDENCE_REASON),
        "legal_regime": personal(DataCategory.RESIDENCE_STATUS, _REGIME_REASON),
        "registered_at": TIME,
    },
    ev.ClientRegisteredV1: {
        "registering_org": ORG,
        "responsible_org": ORG,
        "preferred_language": personal(DataCategory.CONTACT, _LANGUAGES_REASON),
        "languages": personal(DataCategory.CONTACT, _LANGUAGES_REASON),
        "needs": personal(DataCategory.NEEDS, _NEEDS_REASON),
        "residence_title": personal(DataCategory.RESIDENCE_STATUS, _RESIDENCE_REASON),
        "residence_valid_until": personal(DataCategory.RESIDENCE_STATUS, _RESIDENCE_REASON),
        "legal_regime": personal(DataCategory.RESIDENCE_STATUS, _REGIME_REASON),
        "registered_at": TIME,
    },
    ev.ResidenceStatus: {
        "title": Classified(DataCategory.RESIDENCE_STATUS),
        "valid_until": Classified(DataCategory.RESIDENCE_STATUS),
    },
    ev.ClientUpdated: {
        "changed": CODE,  # names of fields, not their values
        "preferred_language": personal(DataCategory.CONTACT, _LANGUAGES_REASON),
        "languages": personal(DataCategory.CONTACT, _LANGUAGES_REASON),
        "needs": personal(DataCategory.NEEDS, _NEEDS_REASON),
        "residence_title": personal(DataCategory.RESIDENCE_STATUS, _RESIDENCE_REASON),
        "residence_valid_until": personal(DataCategory.RESIDENCE_STATUS, _RESIDENCE_REASON),
        "updated_by_org": ORG,
        "updated_at": TIME,
    },
    ev.CaseHandedOver: {
        "from_org": ORG,
        "to_org": ORG,
        "from_regime": personal(DataCategory.RESIDENCE_STATUS, _REGIME_REASON),
        "to_regime": personal(DataCategory.RESIDENCE_STATUS, _REGIME_REASON),
        "reason": PROCESS_TEXT,
        "open_referral_ids": ID,
        "open_deadline_ids": ID,
        "handed_over_at": TIME,
    },
    ev.ClientErased: {"requested_by_org": ORG, "erased_at": TIME},
    ev.ClientCorrected: {"categories": CODE, "corrected_by_org": ORG, "corrected_at": TIME},  # which categories, not values
    # ------------------------------------------------------------ partner outboxes: acknowledgements
    ev.Acknowledgement: {"org": ORG, "acknowledged_event_id": ID, "acknowledged_at": TIME, "signature": DIGEST},
    ev.AcknowledgementOverdue: {
        "org": ORG,
        "kind": CODE,
        "acknowledged_event_id": ID,
        "collecting_org": ORG,
        "forwarded_at": TIME,
        "due_at": TIME,
    },
    # ------------------------------------------------------------ lotse.consents.v1
    ev.ConsentGranted: {
        "consent_id": ID,
        "collecting_org": ORG,
        "recipients": ORG,
        "purposes": CODE,
        "categories": CODE,  # which categories the consent covers, not their values
        "legal_basis": CODE,
        "form": CODE,
        "information_language": personal(
            DataCategory.CONTACT,
            "evidence that the client was informed in a language they understand (GDPR Art. 7(1), 12(1)); "
            "the audit log keeps it as proof of the consent",
        ),
        "interpreter_used": FLAG,
        "granted_at": TIME,
        "valid_until": TIME,
    },
    ev.ConsentWithdrawn: {"consent_id": ID, "withdrawn_at": TIME, "recorded_by_org": ORG, "disclosed_to": ORG},
    ev.ConsentExpired: {"consent_id": ID, "expired_at": TIME, "disclosed_to": ORG},
    # ------------------------------------------------------------ lotse.referrals.v1 (and partner outboxes)
    ev.ReferralSent: {
        "referral_id": ID,
        "from_org": ORG,
        "to_org": ORG,
        "service": CODE,  # a service id of the receiving organisation, from the network file
        "need": personal(
            DataCategory.NEEDS,
            "what the referral is for; notifications and the sending organisation's view of its referrals show it",
        ),
        "requested_categories": CODE,
        "answer_due": TIME,
        "sent_at": TIME,
    },
    ev.ReferralAnswer: {"referral_id": ID, "to_org": ORG, "from_org": ORG},
    ev.ReferralAccepted: {"accepted_at": TIME, "appointment_at": TIME},
    ev.ReferralDeclined: {"reason": CODE, "reason_text": PROCESS_TEXT, "declined_at": TIME},
    ev.ReferralCompleted: {"completed_at": TIME, "outcome": PROCESS_TEXT},
    ev.ReferralRevoked: {"referral_id": ID, "from_org": ORG, "to_org": ORG, "reason": PROCESS_TEXT, "revoked_at": TIME},
    # ------------------------------------------------------------ lotse.deadlines.v1
    ev.DeadlineEvent: {
        "deadline_id": ID,
        "kind": personal(DataCategory.RESIDENCE_STATUS, _DEADLINE_REASON),
        "due_at": personal(DataCategory.RESIDENCE_STATUS, _DEADLINE_REASON),
        "responsible_org": ORG,
        "referral_id": ID,
        "legal_note": personal(DataCategory.RESIDENCE_STATUS, _DEADLINE_REASON),
    },
    ev.DeadlineRegistered: {"lead_times_days": NUMBER, "registered_at": TIME},
    ev.DeadlineApproaching: {"lead_time_days": NUMBER, "days_left": NUMBER},
    ev.DeadlineMissed: {"missed_at": TIME},
    ev.DeadlineResolved: {"resolved_at": TIME, "resolution": PROCESS_TEXT},
    # ------------------------------------------------------------ lotse.disclosures.v1
    ev.DisclosureMade: {
        "request_id": ID,
        "referral_id": ID,
        "recipient": ORG,
        "purpose": CODE,
        "categories": CODE,
        "consent_id": ID,
        "payload_sha256": DIGEST,
        "disclosed_at": TIME,
    },
    ev.DisclosureBlocked: {
        "request_id": ID,
        "referral_id": ID,
        "recipient": ORG,
        "purpose": CODE,
        "categories": CODE,
        "reason": PROCESS_TEXT,  # written by the consent gate's decision
        "missing_categories": CODE,
        "blocked_at": TIME,
    },
    # ------------------------------------------------------------ lotse.notifications.v1
    ev.NotificationEvent: {
        "notification_id": ID,
        "client_id": ID,
        "trigger_event_id": ID,
        "trigger_type": CODE,
        "channel": CODE,
        "recipient_kind": CODE,
        "recipient_org": ORG,
        "language": personal(
            DataCategory.CONTACT,
            "the language a client was written to in; delivery receipts are the evidence of what the client was told",
        ),
    },
    ev.NotificationDelivered: {"delivered_at": TIME, "attempts": NUMBER},
    ev.NotificationFailed: {"status": CODE, "reason": PROCESS_TEXT, "attempts": NUMBER, "failed_at": TIME},
    # ------------------------------------------------------------ lotse.gateway.v1
    ev.InboxLeftUnfetched: {
        "org": ORG,
        "pending": NUMBER,
        "oldest_record_at": TIME,
        "unfetched_after_s": NUMBER,
        "mode": CODE,
        "detected_at": TIME,
    },
}


# ---------------------------------------------------------------- the check
def shared_channels(spec: EventSpec) -> list[str]:
    """The shared (not personal-data) channels an event travels on."""
    channels = [spec.topic] if spec.topic is not None and not topics.carries_personal_data(spec.topic) else []
    if spec.type in (*PARTNER_ANSWER_TYPES, *PARTNER_ACK_TYPES) and spec.schema_name is None:
        channels.append("partner.{orgId}.outbox.v1")
    return channels


def shared_events() -> list[EventSpec]:
    """Every schema (current and older versions) that travels on a shared topic."""
    return [s for s in SCHEMAS.values() if shared_channels(s)]


def classification(
    model: type[BaseModel], field: str, allowlist: Mapping[type[BaseModel], Mapping[str, Classified]] = FIELDS
) -> Classified | None:
    """The entry for `field` on `model` or on the nearest base model that lists it."""
    for cls in model.__mro__:
        entry = allowlist.get(cls, {}).get(field)
        if entry is not None:
            return entry
    return None


def nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models inside a field's annotation (through Optional, list, dict, Annotated, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from nested_models(get_args(annotation)[0])
        return
    if origin is not None or isinstance(annotation, types.UnionType) or origin is Union:
        for arg in get_args(annotation):
            yield from nested_models(arg)


def problems(
    model: type[BaseModel], allowlist: Mapping[type[BaseModel], Mapping[str, Classified]] = FIELDS, *, shared: bool = True
) -> list[str]:
    """What is wrong with `model`'s classification: unlisted fields (nested models included), a personal field on a
    shared topic without a reason or of a category that is never shared, a pseudonymous field holding personal data."""
    out: list[str] = []

    def walk(m: type[BaseModel], top: bool, inside: tuple[type[BaseModel], ...]) -> bool:
        """Checks `m`; returns whether it holds personal data."""
        holds_personal = False
        for name, info in m.model_fields.items():
            entry = classification(m, name, allowlist)
            where = f"{m.__name__}.{name}"
            if entry is None:
                out.append(f"{where} is not classified (contracts/privacy.py)")
                continue
            inner_personal = False
            for nested in nested_models(info.annotation):
                if nested not in inside:  # a model that contains itself is checked once
                    inner_personal |= walk(nested, False, (*inside, nested))
            if inner_personal and not entry.personal:
                out.append(f"{where} is classified {entry.kind.value} but holds personal data")
            if isinstance(entry.kind, DataCategory):
                holds_personal = True
                if shared and entry.kind in NEVER_SHARED:
                    out.append(f"{where} is {entry.kind.value}, which never travels on a shared topic")
                if shared and top and not entry.shared_topic_reason:
                    out.append(f"{where} is {entry.kind.value} on a shared topic without a shared_topic_reason")
        return holds_personal

    walk(model, True, (model,))
    return list(dict.fromkeys(out))


def stale_entries(allowlist: Mapping[type[BaseModel], Mapping[str, Classified]] = FIELDS) -> list[str]:
    """Listed fields that no longer exist on their model (or are not declared by it)."""
    out = []
    for model, fields in allowlist.items():
        out += [f"{model.__name__}.{f}" for f in fields if f not in model.model_fields]
    return out


def personal_fields_on_shared_topics() -> dict[str, dict[str, Classified]]:
    """For the docs and the review: per schema id, the personal fields that travel on a shared topic."""
    out: dict[str, dict[str, Classified]] = {}
    for spec in shared_events():
        fields = {n: e for n in spec.model.model_fields if (e := classification(spec.model, n)) is not None and e.personal}
        if fields:
            out[spec.schema_id] = fields
    return out
