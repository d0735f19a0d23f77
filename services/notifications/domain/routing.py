"""Which event notifies whom, on which channels, with which template: the one table.

Read a row as: when <trigger> arrives, notify <audience> — the client, or the
organisation(s) named in the event field <orgs> — on <channels>, using the
message <template>. For a client row, <orgs> names the organisation on whose
behalf the client is contacted: the client must have consented that this
organisation may contact them (purpose `contact_for_notifications`, category
`contact`), which intake's contact API checks.

Organisation rows send e-mail to the organisation's `contact_email` from the
network file and a signed webhook to each active endpoint the organisation
registered (for the event type, if the endpoint filters by type). Data-protection
rows send e-mail to the organisation's data-protection contact (`dpo_email`, else
`contact_email`). Client rows send on every listed channel for which the consented
contact has an address, unless the client asked not to be contacted.

<orgs> is one event field, or several whose organisations are notified alike (each once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .model import Channel

EMAIL, SMS, WEBHOOK = Channel.EMAIL, Channel.SMS, Channel.WEBHOOK


class Audience(StrEnum):
    CLIENT = "client"
    ORGANISATION = "organisation"  # the organisation's team (contact_email) and its webhook endpoints
    DATA_PROTECTION = "data_protection"  # the organisation's data-protection contact (Organisation.data_protection_email)


CLIENT, ORG, DPO = Audience.CLIENT, Audience.ORGANISATION, Audience.DATA_PROTECTION


@dataclass(frozen=True)
class Route:
    trigger: str
    audience: Audience
    orgs: str | tuple[str, ...]  # event field(s) naming the organisation(s): each a single id or a list of ids
    channels: tuple[Channel, ...]
    template: str


# fmt: off
ROUTES: tuple[Route, ...] = (
    #      trigger                       audience  orgs (field)        channels               template
    Route("lotse.deadline.approaching",  CLIENT,   "responsible_org",  (EMAIL, SMS),          "deadline_approaching.client"),
    Route("lotse.deadline.approaching",  ORG,      "responsible_org",  (EMAIL, WEBHOOK),      "deadline_approaching.org"),
    Route("lotse.deadline.missed",       CLIENT,   "responsible_org",  (EMAIL, SMS),          "deadline_missed.client"),
    Route("lotse.deadline.missed",       ORG,      "responsible_org",  (EMAIL, WEBHOOK),      "deadline_missed.org"),
    Route("lotse.referral.sent",         CLIENT,   "from_org",         (EMAIL, SMS),          "referral_sent.client"),
    Route("lotse.referral.sent",         ORG,      "from_org",         (EMAIL, WEBHOOK),      "referral_sent.org"),
    Route("lotse.referral.accepted",     CLIENT,   "from_org",         (EMAIL, SMS),          "referral_accepted.client"),
    Route("lotse.referral.accepted",     ORG,      "from_org",         (EMAIL, WEBHOOK),      "referral_accepted.org"),
    Route("lotse.referral.declined",     CLIENT,   "from_org",         (EMAIL, SMS),          "referral_declined.client"),
    Route("lotse.referral.declined",     ORG,      "from_org",         (EMAIL, WEBHOOK),      "referral_declined.org"),
    Route("lotse.consent.granted",       CLIENT,   "collecting_org",   (EMAIL,),              "consent_receipt.client"),
    Route("lotse.consent.withdrawn",     ORG,      "disclosed_to",     (EMAIL, WEBHOOK),      "consent_withdrawn.org"),
    Route("lotse.case.handed_over",      ORG,      "to_org",           (EMAIL, WEBHOOK),      "case_handed_over.org"),
    # The recipient that did not acknowledge a forwarded withdrawal or erasure, and the organisation that collected the data.
    Route("lotse.acknowledgement.overdue", DPO,    ("org", "collecting_org"), (EMAIL,),       "acknowledgement_overdue.dpo"),
    # The HTTPS gateway: records on the organisation's inbox left unfetched; its technical contact, by e-mail only.
    Route("lotse.inbox.left_unfetched",  ORG,      "org",              (EMAIL,),              "inbox_left_unfetched.org"),
)
# fmt: on

TRIGGERS: frozenset[str] = frozenset(r.trigger for r in ROUTES)


def routes_for(event_type: str) -> list[Route]:
    return [r for r in ROUTES if r.trigger == event_type]


def orgs_named(route: Route, data: dict[str, Any]) -> list[str]:
    """The organisation ids the route's field(s) name in the event, in field order, without duplicates; may be empty."""
    fields = (route.orgs,) if isinstance(route.orgs, str) else route.orgs
    seen: list[str] = []
    for f in fields:
        value = data.get(f)
        items: Iterable[Any] = value if isinstance(value, list | tuple) else [value]
        for v in items:
            if v and str(v) not in seen:
                seen.append(str(v))
    return seen


def webhook_orgs(event_type: str, data: dict[str, Any]) -> list[str]:
    """The organisations whose webhook endpoints the event's routes notify (`data` completed as the handler completes it)."""
    out: list[str] = []
    for route in routes_for(event_type):
        if route.audience is not CLIENT and WEBHOOK in route.channels:
            out.extend(o for o in orgs_named(route, data) if o not in out)
    return out


def endpoint_takes(event_types: Iterable[str] | None, event_type: str) -> bool:
    """An endpoint registered without a filter takes every event routed to its organisation, else the types it names."""
    return event_types is None or event_type in event_types


def templates_used() -> dict[str, set[Channel]]:
    """Every template the table refers to and the channels it must render for (webhooks are not templated)."""
    out: dict[str, set[Channel]] = {}
    for r in ROUTES:
        out.setdefault(r.template, set()).update(c for c in r.channels if c is not WEBHOOK)
    return out


# Organisations an event concerns: their staff may see the notifications it caused in the status API.
CONCERNED_ORG_FIELDS = ("responsible_org", "from_org", "to_org", "collecting_org", "recorded_by_org", "recipients", "disclosed_to", "org")


def concerned_orgs(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for f in CONCERNED_ORG_FIELDS:
        v = data.get(f)
        for o in v if isinstance(v, list) else [v]:
            if o and o not in out:
                out.append(str(o))
    return out
