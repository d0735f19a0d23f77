"""The referral life cycle (closed loop) and routing by process plan. Pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from contracts.vocab import Need
from lotse_kit.network import Network

from .errors import Conflict, Forbidden, Invalid


class ReferralStatus(StrEnum):
    SENT = "sent"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"
    REVOKED = "revoked"
    BLOCKED = "blocked"  # the consent gate refused the disclosure


class Action(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    COMPLETE = "complete"
    REVOKE = "revoke"
    BLOCK = "block"


TRANSITIONS: dict[tuple[ReferralStatus, Action], ReferralStatus] = {
    (ReferralStatus.SENT, Action.ACCEPT): ReferralStatus.ACCEPTED,
    (ReferralStatus.SENT, Action.DECLINE): ReferralStatus.DECLINED,
    (ReferralStatus.SENT, Action.REVOKE): ReferralStatus.REVOKED,
    (ReferralStatus.SENT, Action.BLOCK): ReferralStatus.BLOCKED,
    (ReferralStatus.ACCEPTED, Action.COMPLETE): ReferralStatus.COMPLETED,
    (ReferralStatus.ACCEPTED, Action.REVOKE): ReferralStatus.REVOKED,
    (ReferralStatus.ACCEPTED, Action.BLOCK): ReferralStatus.BLOCKED,
}

OPEN = frozenset({ReferralStatus.SENT, ReferralStatus.ACCEPTED})

# Who may act: the receiver answers, the sender revokes, the consent gate blocks.
RECEIVER_ACTIONS = frozenset({Action.ACCEPT, Action.DECLINE, Action.COMPLETE})
SENDER_ACTIONS = frozenset({Action.REVOKE})


_PAST = {
    Action.ACCEPT: "accepted",
    Action.DECLINE: "declined",
    Action.COMPLETE: "completed",
    Action.REVOKE: "revoked",
    Action.BLOCK: "blocked",
}


class IllegalTransition(Conflict):
    def __init__(self, status: ReferralStatus, action: Action) -> None:
        super().__init__(f"a referral in status {status.value!r} cannot be {_PAST[action]}")
        self.referral_status = status  # not `status`: that is the HTTP status of every DomainError
        self.action = action


class NotAllowed(Forbidden):
    """The acting organisation may not take this action on this referral."""


def next_status(status: ReferralStatus | str, action: Action) -> ReferralStatus:
    status = ReferralStatus(status)
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise IllegalTransition(status, action) from None


def check_actor(action: Action, acting_org: str, from_org: str, to_org: str) -> None:
    """Only the receiving organisation accepts, declines and completes; only the sender revokes."""
    if action in RECEIVER_ACTIONS and acting_org != to_org:
        raise NotAllowed(f"only the receiving organisation {to_org} may {action.value} this referral, not {acting_org}")
    if action in SENDER_ACTIONS and acting_org != from_org:
        raise NotAllowed(f"only the sending organisation {from_org} may {action.value} this referral, not {acting_org}")


@dataclass(frozen=True)
class Answer:
    """One step of the life cycle, from a caseworker (HTTP) or a partner system (its outbox topic)."""

    action: Action
    at: datetime
    appointment_at: datetime | None = None
    decline_reason: Any = None
    decline_text: str | None = None
    outcome: str | None = None
    revoke_reason: str | None = None


# ---------------------------------------------------------------- routing
@dataclass(frozen=True)
class Route:
    to_org: str
    service: str
    answer_within_working_days: int


def route_referral(
    network: Network, *, need: Need | None, to_org: str | None, service: str | None, acting_org: str, default_answer_days: int
) -> Route:
    """Receiver and service of a referral: as given, or from the process plan for the need. Raises Invalid naming the field."""
    plan = network.plan_for(need) if need else None
    if to_org is None or service is None:
        if need is None:
            raise Invalid("need", "is required when to_org or service is not given")
        if plan is None:
            raise Invalid("to_org" if to_org is None else "service", f"no process plan covers need {need.value!r}; name to_org and service")
        to_org = to_org or plan.organisation
        if service is None:
            if to_org == plan.organisation:
                service = plan.service
            else:
                org = network.organisation(to_org)
                matching = [s.id for s in org.services if need in s.needs] if org else []
                if len(matching) != 1:
                    raise Invalid("service", f"name the service: {to_org} has {len(matching)} services for need {need.value!r}")
                service = matching[0]
    org = network.organisation(to_org)
    if org is None:
        raise Invalid("to_org", f"unknown organisation {to_org!r}")
    svc = org.service(service)
    if svc is None:
        raise Invalid("service", f"{to_org} offers no service {service!r}")
    if need and need not in svc.needs:
        raise Invalid("need", f"service {to_org}/{service} does not cover need {need.value!r}")
    if to_org == acting_org:
        raise Invalid("to_org", "an organisation cannot refer a client to itself")
    days = default_answer_days
    if plan and plan.organisation == to_org and plan.service == service:
        days = plan.answer_within_working_days
    return Route(to_org, service, days)
