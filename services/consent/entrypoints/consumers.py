"""What the consent service consumes and produces: its consumers and outbox topics, declared once.

The runtime subscribes exactly these subscriptions with `handlers.EVENT_HANDLERS`; the outbox
refuses anything not published here; the AsyncAPI document is generated from this declaration.
"""

from __future__ import annotations

from contracts import PARTNER_REFERRAL, topics
from contracts.events import PARTNER_ACK_TYPES, PARTNER_CORRECTION
from lotse_kit.declaration import PARTNER_INBOX, PARTNER_OUTBOX, Publication, ServiceDeclaration, Subscription

from ..domain.forwarding import FORWARDED_TYPES
from ..handlers import EVENT_HANDLERS
from ..handlers.disclosures import prepare_gate_batch

GATE = "disclosure-gate"
FORWARDER = "partner-forwarder"
ACKNOWLEDGEMENTS = "acknowledgements"

_GATE_TYPES = ("lotse.disclosure.requested",)
_OWN_SUBSCRIPTIONS = (*_GATE_TYPES, *PARTNER_ACK_TYPES)

DECLARATION = ServiceDeclaration(
    service="consent",
    title="Lotse consent service",
    description="Consent ledger, decision API and the only gate that writes personal data to partner topics.",
    subscriptions=(
        # `prepare`: one read-only consent pre-check and one intake request per batch (handlers/disclosures.py).
        Subscription(
            GATE,
            channels=(topics.DISCLOSURE_REQUESTS,),
            handlers={t: EVENT_HANDLERS[t] for t in _GATE_TYPES},
            prepare=prepare_gate_batch,
        ),
        # The gate is the referral's path to the partner's inbox; the other two are background (docs/architecture.md).
        Subscription(
            FORWARDER,
            channels=(topics.REFERRALS, topics.DEADLINES, topics.CLIENTS),
            handlers={t: h for t, h in EVENT_HANDLERS.items() if t not in _OWN_SUBSCRIPTIONS},
            background=True,
        ),
        # Partners' signed acknowledgements of forwarded withdrawals and erasures, on every member's outbox.
        Subscription(
            ACKNOWLEDGEMENTS, channels=(PARTNER_OUTBOX,), handlers={t: EVENT_HANDLERS[t] for t in PARTNER_ACK_TYPES}, background=True
        ),
    ),
    publications=(
        Publication(
            topics.CONSENTS,
            ("lotse.consent.granted", "lotse.consent.withdrawn", "lotse.consent.expired", "lotse.acknowledgement.overdue"),
        ),
        Publication(topics.DISCLOSURES, ("lotse.disclosure.made", "lotse.disclosure.blocked")),
        # The gate's referral and corrections with exactly the consented data, sealed to the partner, and the
        # copies of forwarded events.
        Publication(PARTNER_INBOX, (PARTNER_REFERRAL.schema_id, PARTNER_CORRECTION.schema_id, *FORWARDED_TYPES)),
    ),
)
