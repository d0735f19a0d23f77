"""Where the consent service's events come from, and the ids that make re-emitting one a no-op."""

from __future__ import annotations

import uuid

SOURCE = "/lotse/consent"

_EVENT_NS = uuid.UUID("0d7a4f3e-2b8c-4c61-9f0a-6e5d3c2b1a09")


def expired_event_id(consent_id: uuid.UUID) -> uuid.UUID:
    """One lotse.consent.expired per consent, whichever replica's expiry job emits it."""
    return uuid.uuid5(_EVENT_NS, f"expired:{consent_id}")


def partner_referral_event_id(request_id: uuid.UUID) -> uuid.UUID:
    """The partner referral of a disclosure request: a re-publication carries the same ce_id."""
    return uuid.uuid5(_EVENT_NS, f"partner-referral:{request_id}")


def partner_correction_event_id(correction_id: uuid.UUID) -> uuid.UUID:
    """The correction on a partner's inbox (GDPR Art. 19): a re-publication carries the same ce_id."""
    return uuid.uuid5(_EVENT_NS, f"partner-correction:{correction_id}")
