"""What intake consumes and produces: the declaration the runtime subscribes, the outbox checks and the AsyncAPI is generated from.

Consumed: partner answers on every member's `partner.<org>.outbox.v1` (one pattern subscription) and the
consent gate's outcomes on `lotse.disclosures.v1`. Produced: exactly what the handlers write to the outbox.
"""

from __future__ import annotations

from contracts import topics
from contracts.events import PARTNER_ANSWER_TYPES
from lotse_kit.declaration import PARTNER_OUTBOX, Publication, ServiceDeclaration, Subscription

from ..handlers import EVENT_HANDLERS
from ..handlers.referrals import lock_batch_referrals

DISCLOSURE_OUTCOMES = ("lotse.disclosure.blocked", "lotse.disclosure.made")

DECLARATION = ServiceDeclaration(
    service="intake",
    title="Lotse intake service",
    description="Client registry, referrals, process plans and deadlines. Owns the client's personal data.",
    subscriptions=(
        # Both background: they record outcomes; no latency goal waits on them (docs/architecture.md). Both lock
        # a batch's referrals in one order first: their batches touch the same referrals and deadlocked without.
        Subscription(
            "partner-answers",
            channels=(PARTNER_OUTBOX,),
            handlers={t: EVENT_HANDLERS[t] for t in PARTNER_ANSWER_TYPES},
            lock=lock_batch_referrals,
            background=True,
        ),
        Subscription(
            "disclosures",
            channels=(topics.DISCLOSURES,),
            handlers={t: EVENT_HANDLERS[t] for t in DISCLOSURE_OUTCOMES},
            lock=lock_batch_referrals,
            background=True,
        ),
    ),
    publications=(
        # handlers/clients.py (corrected: a PATCH changed personal data of these categories; erased: GDPR Art. 17)
        Publication(
            topics.CLIENTS,
            ("lotse.client.registered", "lotse.client.updated", "lotse.client.corrected", "lotse.case.handed_over", "lotse.client.erased"),
        ),
        # handlers/referrals.py (HTTP answers and partner answers alike)
        Publication(topics.REFERRALS, ("lotse.referral.sent", *PARTNER_ANSWER_TYPES, "lotse.referral.revoked")),
        # handlers/deadlines.py (registered, resolved; approaching and missed from the scheduler step)
        Publication(
            topics.DEADLINES,
            ("lotse.deadline.registered", "lotse.deadline.approaching", "lotse.deadline.missed", "lotse.deadline.resolved"),
        ),
        # handlers/referrals.py: pseudonymous since v2 (ids, purpose, recipient, categories); the consent gate fetches
        # the personal data from the internal API (GET /internal/v1/clients/{id}/disclosure)
        Publication(topics.DISCLOSURE_REQUESTS, ("lotse.disclosure.requested",)),
    ),
)
