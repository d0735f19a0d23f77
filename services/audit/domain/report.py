"""The GDPR Art. 15 view of one client, in the spirit of the German *Datenschutzcockpit* (the
citizens' portal that shows which authority exchanged which of one's data): which organisations
received which categories of the client's data, when, under which consent, which consents exist
and which were withdrawn or expired.

Built only from log entries (and only from their bytes, not from the lookup columns), each item
names the log entries it rests on, so every line can be proven with an inclusion proof against the
signed tree head the report names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from contracts.topics import DLQ_SUFFIX, partner_of
from lotse_kit.i18n import choose_language

from .tree_head import TreeHead, b64


@dataclass
class ConsentItem:
    consent_id: str
    collecting_org: str | None
    recipients: list[str]
    purposes: list[str]
    categories: list[str]
    legal_basis: list[str]
    granted_at: str | None
    valid_until: str | None
    status: str = "active"  # active | withdrawn | expired
    withdrawn_at: str | None = None
    expired_at: str | None = None
    disclosed_to: list[str] = field(default_factory=list)
    log_entries: list[int] = field(default_factory=list)


@dataclass
class DisclosureItem:
    recipient: str
    purpose: str | None
    categories: list[str]
    consent_id: str | None
    at: str | None
    log_entry: int


@dataclass
class DeliveryItem:
    """A record on a partner's own inbox topic: what reached the partner system."""

    recipient: str
    event_type: str | None
    categories: list[str]
    at: str | None
    log_entry: int


@dataclass
class BlockedItem:
    recipient: str
    purpose: str | None
    categories: list[str]
    missing_categories: list[str]
    at: str | None
    log_entry: int


@dataclass
class ReferralItem:
    referral_id: str
    from_org: str | None
    to_org: str | None
    service: str | None
    status: str
    sent_at: str | None
    updated_at: str | None
    log_entries: list[int] = field(default_factory=list)


@dataclass
class HandoverItem:
    from_org: str
    to_org: str
    at: str | None
    log_entry: int


@dataclass
class SubjectReport:
    client_id: str
    language: str
    generated_at: str
    tree_head: dict[str, Any] | None
    entries_examined: int
    tampered_entries: list[int]
    consents: list[ConsentItem]
    disclosures: list[DisclosureItem]
    deliveries: list[DeliveryItem]
    blocked: list[BlockedItem]
    referrals: list[ReferralItem]
    handovers: list[HandoverItem]
    erased_at: str | None = None
    erased_by: str | None = None

    @property
    def organisations(self) -> list[str]:
        """Every organisation that received data about the client."""
        orgs = {d.recipient for d in self.disclosures} | {d.recipient for d in self.deliveries}
        return sorted(orgs)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["organisations"] = self.organisations
        return doc


_REFERRAL_STATUS = {
    "lotse.referral.sent": "sent",
    "lotse.referral.accepted": "accepted",
    "lotse.referral.declined": "declined",
    "lotse.referral.completed": "completed",
    "lotse.referral.revoked": "revoked",
}


def _str_list(v: Any) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def build_report(
    client_id: str,
    items: Iterable[tuple[int, dict[str, Any] | None, bool]],
    *,
    head: TreeHead | None,
    language: str | None,
    generated_at: datetime,
) -> SubjectReport:
    """`items`: (log index, entry document or None, whether the entry matches its leaf hash), in index order."""
    consents: dict[str, ConsentItem] = {}
    referrals: dict[str, ReferralItem] = {}
    disclosures: list[DisclosureItem] = []
    deliveries: list[DeliveryItem] = []
    blocked: list[BlockedItem] = []
    handovers: list[HandoverItem] = []
    tampered: list[int] = []
    examined = 0
    preferred: list[str | None] = []
    erased_at = erased_by = None

    for index, doc, intact in items:
        examined += 1
        if not intact or doc is None:
            tampered.append(index)
            continue
        if doc.get("client_id") != client_id:
            continue  # the lookup column disagreed with the entry: do not trust it
        topic = str(doc.get("topic", ""))
        if topic.endswith(DLQ_SUFFIX) or doc.get("kind") != "event":
            continue  # dead-lettered or invalid records were not acted upon
        ce = doc.get("ce", {})
        etype = ce.get("type")
        at = ce.get("time")
        data = doc.get("data") or {}

        partner = partner_of(topic)
        if partner and topic.endswith(".inbox.v1"):
            cats = sorted(set(_str_list(doc.get("categories"))) | set(_str_list(doc.get("categories_present"))))
            deliveries.append(DeliveryItem(recipient=partner, event_type=etype, categories=cats, at=at, log_entry=index))
            continue

        if etype == "lotse.consent.granted":
            cid = str(data.get("consent_id"))
            c = consents.get(cid) or ConsentItem(
                consent_id=cid,
                collecting_org=data.get("collecting_org"),
                recipients=_str_list(data.get("recipients")),
                purposes=_str_list(data.get("purposes")),
                categories=_str_list(data.get("categories")),
                legal_basis=_str_list(data.get("legal_basis")),
                granted_at=data.get("granted_at"),
                valid_until=data.get("valid_until"),
            )
            c.log_entries.append(index)
            consents[cid] = c
        elif etype in ("lotse.consent.withdrawn", "lotse.consent.expired"):
            cid = str(data.get("consent_id"))
            c = consents.get(cid) or ConsentItem(cid, None, [], [], [], [], None, None)
            if etype == "lotse.consent.withdrawn":
                c.status, c.withdrawn_at = "withdrawn", data.get("withdrawn_at")
            elif c.status != "withdrawn":
                c.status, c.expired_at = "expired", data.get("expired_at")
            c.disclosed_to = sorted(set(c.disclosed_to) | set(_str_list(data.get("disclosed_to"))))
            c.log_entries.append(index)
            consents[cid] = c
        elif etype == "lotse.disclosure.made":
            disclosures.append(
                DisclosureItem(
                    recipient=str(data.get("recipient")),
                    purpose=data.get("purpose"),
                    categories=_str_list(data.get("categories")),
                    consent_id=data.get("consent_id"),
                    at=data.get("disclosed_at") or at,
                    log_entry=index,
                )
            )
        elif etype == "lotse.disclosure.blocked":
            blocked.append(
                BlockedItem(
                    recipient=str(data.get("recipient")),
                    purpose=data.get("purpose"),
                    categories=_str_list(data.get("categories")),
                    missing_categories=_str_list(data.get("missing_categories")),
                    at=data.get("blocked_at") or at,
                    log_entry=index,
                )
            )
        elif etype in _REFERRAL_STATUS and data.get("referral_id"):
            rid = str(data["referral_id"])
            r = referrals.get(rid) or ReferralItem(
                referral_id=rid,
                from_org=data.get("from_org"),
                to_org=data.get("to_org"),
                service=data.get("service"),
                status="sent",
                sent_at=None,
                updated_at=None,
            )
            if etype == "lotse.referral.sent":
                r.sent_at = data.get("sent_at") or at
                r.service = r.service or data.get("service")
            else:
                r.status = _REFERRAL_STATUS[etype]
                r.updated_at = at
            r.from_org = r.from_org or data.get("from_org")
            r.to_org = r.to_org or data.get("to_org")
            r.log_entries.append(index)
            referrals[rid] = r
        elif etype == "lotse.case.handed_over":
            handovers.append(
                HandoverItem(
                    from_org=str(data.get("from_org")), to_org=str(data.get("to_org")), at=data.get("handed_over_at") or at, log_entry=index
                )
            )
        elif etype in ("lotse.client.registered", "lotse.client.updated"):
            if data.get("preferred_language"):
                preferred.insert(0, data.get("preferred_language"))  # the latest first
            for lang in _str_list(data.get("languages")):
                preferred.append(lang)
        elif etype == "lotse.client.erased":
            erased_at, erased_by = data.get("erased_at") or at, data.get("requested_by_org")

    return SubjectReport(
        client_id=client_id,
        language=choose_language(language, *preferred),
        generated_at=generated_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        tree_head=_head_summary(head),
        entries_examined=examined,
        tampered_entries=tampered,
        consents=list(consents.values()),
        disclosures=disclosures,
        deliveries=deliveries,
        blocked=blocked,
        referrals=list(referrals.values()),
        handovers=handovers,
        erased_at=erased_at,
        erased_by=erased_by,
    )


def data_holders(client_id: str, items: Iterable[tuple[int, dict[str, Any] | None, bool]]) -> set[str]:
    """The organisations that hold data on the client, as the log shows it: the registering and
    responsible organisation, every organisation the case was handed over to, and every recipient of a
    disclosure or of a record on its own inbox. Read from intact entries' bytes only, like the report."""
    holders: set[str] = set()
    for _index, doc, intact in items:
        if not intact or doc is None or doc.get("client_id") != client_id or doc.get("kind") != "event":
            continue
        topic = str(doc.get("topic", ""))
        if topic.endswith(DLQ_SUFFIX):
            continue
        partner = partner_of(topic)
        if partner and topic.endswith(".inbox.v1"):
            holders.add(partner)
            continue
        etype, data = doc.get("ce", {}).get("type"), doc.get("data") or {}
        names = {
            "lotse.client.registered": ("registering_org", "responsible_org"),
            "lotse.case.handed_over": ("to_org",),
            "lotse.disclosure.made": ("recipient",),
        }.get(etype, ())
        holders.update(v for v in (data.get(n) for n in names) if isinstance(v, str) and v)
    return holders


def _head_summary(head: TreeHead | None) -> dict[str, Any] | None:
    if head is None:
        return None
    return {
        "tree_size": head.tree_size,
        "timestamp": head.timestamp_ms,
        "sha256_root_hash": b64(head.root_hash),
        "key_id": head.key_id,
    }
