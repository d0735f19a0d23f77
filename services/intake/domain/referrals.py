"""The referral life cycle (closed loop). Pure rules, no I/O."""

from __future__ import annotations

from enum import StrEnum


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


_PAST = {Action.ACCEPT: "accepted", Action.DECLINE: "declined", Action.COMPLETE: "completed", Action.REVOKE: "revoked", Action.BLOCK: "blocked"}


class IllegalTransition(Exception):
    def __init__(self, status: ReferralStatus, action: Action) -> None:
        super().__init__(f"a referral in status {status.value!r} cannot be {_PAST[action]}")
        self.status = status
        self.action = action


class NotAllowed(Exception):
    pass


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
