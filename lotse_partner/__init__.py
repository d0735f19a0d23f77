"""The partner kit: what a member organisation's system needs to read its Lotse inbox and answer.

- `PartnerInbox`: the typed consumer of `partner.<org>.inbox.v1`, over Kafka (`KafkaTransport`) or over
  HTTPS through Lotse's gateway (`HttpsTransport`), with the same handler: it yields the
  contract models, opens the sealed personal data, commits only after the handler returned, and
  dead-letters what it cannot read to a directory on the partner's side (`DeadLetters`).
- `accept`, `book_appointment`, `decline`, `complete`: answers to a referral, for the outbox.
- `acknowledge`: the signed acknowledgement of a forwarded withdrawal or erasure, for the outbox.
- `verify_webhook` (`lotse_partner.webhooks.verify`): checks the Standard Webhooks signature of a webhook
  Lotse's notifications service sent to the organisation.
- `PartnerKeys`: the organisation's private keys (P-256 JWKs): `enc` keys open the personal data
  sealed to it, `sig` keys sign its acknowledgements. Kept in one file, mode 0600; rotation adds a key
  and keeps the old ones for records sealed before.
- `open_sealed`: the personal data (and the referral's notes) of an inbox record, opened with those keys.

It depends on `contracts` (the event models and the JOSE formats), aiokafka and httpx, never on Lotse's
services or `lotse_kit`: install it with `pip install 'lotse[partner]'` (see docs/partners.md).
"""

from .acks import acknowledge
from .answers import accept, book_appointment, complete, decline
from .consumer import DeadLetters, DeadLetterSink, Delivery, Handler, InboxRecord, Outbox, PartnerInbox, Rejected, Transport
from .https import GatewayError, HttpsTransport, OidcToken
from .inbox import open_sealed
from .kafka import KafkaTransport, kafka_options
from .keys import PartnerKeys
from .webhooks import WebhookVerificationError
from .webhooks import verify as verify_webhook

__all__ = [
    "DeadLetterSink",
    "DeadLetters",
    "Delivery",
    "GatewayError",
    "Handler",
    "HttpsTransport",
    "InboxRecord",
    "KafkaTransport",
    "OidcToken",
    "Outbox",
    "PartnerInbox",
    "PartnerKeys",
    "Rejected",
    "Transport",
    "WebhookVerificationError",
    "accept",
    "acknowledge",
    "book_appointment",
    "complete",
    "decline",
    "kafka_options",
    "open_sealed",
    "verify_webhook",
]
