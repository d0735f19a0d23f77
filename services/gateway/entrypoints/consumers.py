"""What the gateway consumes and produces: the one place its Kafka channels are declared.

It reads partner inboxes (`partner.{orgId}.inbox.v1`) on request, with its own reader that assigns partitions
and seeks to the partner's position (adapters/inbox.py), not with the kit's consumer: the records are handed
out as they are, never decoded, upcast or dead-lettered here. So the subscription is `custom=True` (it still
says what it reads, for provisioning's ACLs and the AsyncAPI document). It writes partners' answers and
acknowledgements to their outbox topics and its unfetched notices to lotse.gateway.v1.
"""

from __future__ import annotations

from contracts import PARTNER_REFERRAL, topics
from contracts.events import PARTNER_ACK_TYPES, PARTNER_ANSWER_TYPES, PARTNER_CORRECTION
from lotse_kit.declaration import PARTNER_INBOX, PARTNER_OUTBOX, Publication, ServiceDeclaration, Subscription, message_id

from ..handlers import EVENT_HANDLERS

# The copies the consent service forwards to partner inboxes (services/consent/domain/forwarding.py).
INBOX_COPIES = (
    *PARTNER_ANSWER_TYPES,
    "lotse.referral.revoked",
    "lotse.deadline.approaching",
    "lotse.deadline.missed",
    "lotse.case.handed_over",
    "lotse.consent.withdrawn",
    "lotse.consent.expired",
    "lotse.client.erased",
)

DECLARATION = ServiceDeclaration(
    service="gateway",
    title="Lotse HTTPS gateway",
    description="A partner's inbox and outbox over HTTPS (pull with cursors, or signed webhooks) for partners without a Kafka client.",
    subscriptions=(
        Subscription(
            "inboxes",
            channels=(PARTNER_INBOX,),
            handlers=EVENT_HANDLERS,
            custom=True,
            # Every record is handed out whatever its type; these are the ones consent writes to inboxes today.
            types={PARTNER_INBOX: (message_id(PARTNER_REFERRAL), message_id(PARTNER_CORRECTION), *INBOX_COPIES)},
        ),
    ),
    publications=(
        Publication(PARTNER_OUTBOX, (*PARTNER_ANSWER_TYPES, *PARTNER_ACK_TYPES)),
        Publication(topics.GATEWAY, ("lotse.inbox.left_unfetched",)),
    ),
)
