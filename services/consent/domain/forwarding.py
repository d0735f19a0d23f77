"""Which pseudonymous events a partner is entitled to on its own inbox.

Personal data reaches a partner only through the disclosure gate. Besides
that, a partner needs to hear about what happens to the cases it works on. The
rule is: a partner gets an event when it already knows the client from a
disclosure (or sent the referral itself), and the event tells it something it
must act on. Nothing else leaves the platform.

This table is the whole policy; handlers resolve the audience with the
disclosure ledger and never decide on their own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Audience(StrEnum):
    REFERRAL_SENDER = "referral-sender"
    """The organisation that sent the referral the event is about (answers to its own referral)."""

    REFERRAL_RECIPIENT = "referral-recipient"
    """The organisation that received the referral through the gate."""

    SERVING_RECIPIENTS = "serving-recipients"
    """Organisations that received data about the client under a consent still in effect: they serve the client."""

    CONSENT_RECIPIENTS = "consent-recipients"
    """Organisations that received data under the consent the event names: they must stop processing."""

    ALL_RECIPIENTS = "all-recipients"
    """Every organisation that ever received data about the client, under any consent: they must erase it."""


@dataclass(frozen=True)
class Rule:
    audience: Audience
    why: str


FORWARDING_RULES: dict[str, Rule] = {
    # event type                       audience                          why the partner is entitled to it
    "lotse.referral.accepted":  Rule(Audience.REFERRAL_SENDER,    "an answer to a referral it sent"),
    "lotse.referral.declined":  Rule(Audience.REFERRAL_SENDER,    "an answer to a referral it sent"),
    "lotse.referral.completed": Rule(Audience.REFERRAL_SENDER,    "an answer to a referral it sent"),
    "lotse.referral.revoked":   Rule(Audience.REFERRAL_RECIPIENT, "the referral it received was revoked"),
    "lotse.deadline.approaching": Rule(Audience.SERVING_RECIPIENTS, "a deadline of a client it serves"),
    "lotse.deadline.missed":    Rule(Audience.SERVING_RECIPIENTS, "a deadline of a client it serves"),
    "lotse.case.handed_over":   Rule(Audience.SERVING_RECIPIENTS, "a client it serves has a new responsible organisation"),
    "lotse.consent.withdrawn":  Rule(Audience.CONSENT_RECIPIENTS, "it received data under this consent and must stop processing"),
    "lotse.consent.expired":    Rule(Audience.CONSENT_RECIPIENTS, "it received data under this consent and must stop processing"),
    "lotse.client.erased":      Rule(Audience.ALL_RECIPIENTS,     "it received data about the client and must erase it"),
}  # fmt: skip

FORWARDED_TYPES = tuple(FORWARDING_RULES)

_FORWARD_NS = uuid.UUID("5c2f0b8e-6a43-4d1f-9a59-3e8f1d6b7c20")


def rule_for(event_type: str) -> Rule | None:
    return FORWARDING_RULES.get(event_type)


def forwarded_event_id(original_id: uuid.UUID, org: str) -> uuid.UUID:
    """The id of the copy on one partner's inbox: stable, so a repeated forward is the same event."""
    return uuid.uuid5(_FORWARD_NS, f"{original_id}:{org}")


def recipients(audience_orgs: set[str], *, originator: str | None) -> list[str]:
    """The organisations to forward to: never back to the partner whose own event it is."""
    return sorted(o for o in audience_orgs if o != originator)
