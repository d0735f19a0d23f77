"""Kafka topic names and their configuration.

Internal `lotse.*` topics are shared: they carry pseudonymous data, and personal data
only where `contracts/privacy.py` lists a field with its category and the reason it
travels there. Identifying personal data travels only on each partner's own inbox topic, sealed to
the partner's key (contracts/sealed.py). `lotse.disclosure-requests.v1` is pseudonymous since
`lotse.disclosure.requested` v2, but is still treated as a personal-data topic: v1 records carried it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CLIENTS = "lotse.clients.v1"
CONSENTS = "lotse.consents.v1"
REFERRALS = "lotse.referrals.v1"
DEADLINES = "lotse.deadlines.v1"
DISCLOSURES = "lotse.disclosures.v1"
NOTIFICATIONS = "lotse.notifications.v1"
DISCLOSURE_REQUESTS = "lotse.disclosure-requests.v1"
# The HTTPS gateway's own facts about partner inboxes (pseudonymous: organisation ids and counts).
GATEWAY = "lotse.gateway.v1"

INTERNAL_TOPICS = (CLIENTS, CONSENTS, REFERRALS, DEADLINES, DISCLOSURES, NOTIFICATIONS, GATEWAY)
PERSONAL_DATA_TOPICS_PATTERN = re.compile(r"^(lotse\.disclosure-requests\.v1|partner\.[a-z0-9-]+\.inbox\.v1)$")

DLQ_SUFFIX = ".dlq"
ORG_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
_ORG_ID = re.compile(ORG_ID_PATTERN)

DAY_MS = 24 * 60 * 60 * 1000


def _check_org(org_id: str) -> str:
    if not _ORG_ID.match(org_id):
        raise ValueError(f"invalid organisation id {org_id!r}: expected {ORG_ID_PATTERN}")
    return org_id


def partner_inbox(org_id: str) -> str:
    return f"partner.{_check_org(org_id)}.inbox.v1"


def partner_outbox(org_id: str) -> str:
    return f"partner.{_check_org(org_id)}.outbox.v1"


_PARTNER_TOPIC = re.compile(r"^partner\.([a-z0-9][a-z0-9-]{1,62})\.(inbox|outbox)\.v1$")


def partner_of(topic: str) -> str | None:
    """The organisation id of a partner topic, or None for other topics."""
    m = _PARTNER_TOPIC.match(topic)
    return m.group(1) if m else None


def dlq(topic: str) -> str:
    return topic + DLQ_SUFFIX


def carries_personal_data(topic: str) -> bool:
    return bool(PERSONAL_DATA_TOPICS_PATTERN.match(topic))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def platform_topics() -> list[TopicSpec]:
    """Topics every deployment has, with their dead-letter topics."""
    specs = [TopicSpec(t, config={"retention.ms": str(30 * DAY_MS)}) for t in INTERNAL_TOPICS]
    # Personal data must not linger in the log longer than the gate needs to read it.
    specs.append(TopicSpec(DISCLOSURE_REQUESTS, config={"retention.ms": str(7 * DAY_MS)}))
    return specs + [dlq_spec(s.name) for s in specs]


def partner_topics(org_id: str) -> list[TopicSpec]:
    inbox = TopicSpec(partner_inbox(org_id), config={"retention.ms": str(14 * DAY_MS)})
    outbox = TopicSpec(partner_outbox(org_id), config={"retention.ms": str(14 * DAY_MS)})
    return [inbox, outbox, dlq_spec(outbox.name)]


def dlq_spec(topic: str) -> TopicSpec:
    return TopicSpec(dlq(topic), partitions=1, config={"retention.ms": str(30 * DAY_MS)})
