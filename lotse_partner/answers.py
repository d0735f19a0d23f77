"""Answering a referral on the organisation's outbox: accept (optionally with a booked appointment), decline,
complete with an outcome.

The events are the contracts' (`lotse.referral.accepted` / `.declined` / `.completed`, read by intake from
`partner.<org>.outbox.v1`). Intake allows, per referral, accept or decline once, and complete once after an
accept; an appointment is booked with the acceptance (`appointment_at`), as the contracts define no
separate booking event.

Each answer's CloudEvents id is derived from the referral and the answer's type, so the same answer sent
twice (a handler that ran again after a crash, before its commit) is one event to intake, applied once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from contracts import Envelope, new_event, spec_of
from contracts.envelope import partner_source
from contracts.events import PartnerReferral, PartnerReferralV2, ReferralAccepted, ReferralAnswer, ReferralCompleted, ReferralDeclined
from contracts.vocab import DeclineReason

# Namespace of the answers' event ids (uuid5 over "<referral id>:<event type>").
ANSWER_ID_NAMESPACE = uuid.UUID("8f3b7f56-4a53-5d0b-9c1e-6a1f3b1f2c10")

Referral = PartnerReferralV2 | PartnerReferral


def answer_id(referral_id: uuid.UUID, event_type: str) -> uuid.UUID:
    """The CloudEvents id of an organisation's answer of `event_type` to a referral: the same every time."""
    return uuid.uuid5(ANSWER_ID_NAMESPACE, f"{referral_id}:{event_type}")


def _envelope(answer: ReferralAnswer, org: str) -> Envelope[Any]:
    event_id = answer_id(answer.referral_id, spec_of(type(answer)).type)
    env: Envelope[Any] = new_event(answer, source=partner_source(org), acting_org=org, event_id=event_id)
    return env


def _ids(referral: Referral | Envelope[Any]) -> Referral:
    data = referral.data if isinstance(referral, Envelope) else referral
    if not isinstance(data, PartnerReferralV2 | PartnerReferral):
        raise TypeError(f"not a referral from the inbox: {type(data).__name__}")
    return data


def accept(referral: Referral | Envelope[Any], *, appointment_at: datetime | None = None, at: datetime | None = None) -> Envelope[Any]:
    """`lotse.referral.accepted` for a referral on the inbox, with the booked appointment if there is one."""
    data = _ids(referral)
    answer = ReferralAccepted(
        client_id=data.client_id,
        referral_id=data.referral_id,
        to_org=data.to_org,
        from_org=data.from_org,
        accepted_at=at or datetime.now(UTC),
        appointment_at=appointment_at,
    )
    return _envelope(answer, data.to_org)


def book_appointment(referral: Referral | Envelope[Any], appointment_at: datetime) -> Envelope[Any]:
    """Accepting with a booked appointment (the contracts carry the appointment on the acceptance)."""
    return accept(referral, appointment_at=appointment_at)


def decline(
    referral: Referral | Envelope[Any], reason: DeclineReason, *, reason_text: str | None = None, at: datetime | None = None
) -> Envelope[Any]:
    """`lotse.referral.declined`; `reason_text` is required when `reason` is `other`."""
    data = _ids(referral)
    if reason is DeclineReason.OTHER and not (reason_text and reason_text.strip()):
        raise ValueError("a decline for reason 'other' needs a reason_text")
    answer = ReferralDeclined(
        client_id=data.client_id,
        referral_id=data.referral_id,
        to_org=data.to_org,
        from_org=data.from_org,
        reason=reason,
        reason_text=reason_text,
        declined_at=at or datetime.now(UTC),
    )
    return _envelope(answer, data.to_org)


def complete(
    referral: Referral | Envelope[Any] | tuple[uuid.UUID, uuid.UUID, str],
    *,
    outcome: str | None = None,
    at: datetime | None = None,
) -> Envelope[Any]:
    """`lotse.referral.completed` with the outcome. Completion usually comes days after the inbox record was
    handled: besides the referral itself it takes `(client_id, referral_id, org)` as the partner kept them."""
    if isinstance(referral, tuple):
        client_id, referral_id, org = referral
        from_org = None
    else:
        data = _ids(referral)
        client_id, referral_id, org, from_org = data.client_id, data.referral_id, data.to_org, data.from_org
    answer = ReferralCompleted(
        client_id=client_id, referral_id=referral_id, to_org=org, from_org=from_org, completed_at=at or datetime.now(UTC), outcome=outcome
    )
    return _envelope(answer, org)
