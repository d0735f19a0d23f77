"""Acknowledgements a recipient owes for a forwarded withdrawal or erasure, and when they are due.

A recipient that received data about a client must confirm, on its own outbox and signed with its registered
key, that it acted on a forwarded `lotse.consent.withdrawn` (stopped processing) or `lotse.client.erased`
(erased). Each copy forwarded to its inbox is one acknowledgement due, named by the copy's event id (what the
partner signs). It is due at the end of the N-th NRW working day after the day it was forwarded (Europe/Berlin);
after that, `lotse.acknowledgement.overdue` is raised once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from lotse_kit.calendar import add_working_days, end_of_day, local_date


class AckStatus(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    PENDING = "pending"
    OVERDUE = "overdue"


AckKind = Literal["withdrawal", "erasure"]

# Forwarded event type -> the acknowledgement it asks for, and the acknowledgement's event type.
ACKNOWLEDGED: dict[str, AckKind] = {"lotse.consent.withdrawn": "withdrawal", "lotse.client.erased": "erasure"}
ACK_TYPES: dict[str, AckKind] = {"lotse.withdrawal.acknowledged": "withdrawal", "lotse.erasure.acknowledged": "erasure"}

_NS = uuid.UUID("b0f7b1a4-3d55-4b8e-9f3c-6a1d2e0c9b71")


def due_at(forwarded_at: datetime, working_days: int) -> datetime:
    """The end of the `working_days`-th NRW working day after the day of `forwarded_at` (Berlin time)."""
    return end_of_day(add_working_days(local_date(forwarded_at), working_days))


@dataclass(frozen=True)
class AckDue:
    event_id: uuid.UUID
    client_id: uuid.UUID
    org: str
    kind: AckKind
    consent_id: uuid.UUID | None
    collecting_org: str | None
    forwarded_at: datetime
    due_at: datetime
    acknowledged_at: datetime | None = None
    received_at: datetime | None = None
    overdue_raised_at: datetime | None = None

    def status(self, now: datetime) -> AckStatus:
        if self.acknowledged_at is not None:
            return AckStatus.ACKNOWLEDGED
        if self.overdue_raised_at is not None or now > self.due_at:
            return AckStatus.OVERDUE
        return AckStatus.PENDING


def overdue_event_id(event_id: uuid.UUID) -> uuid.UUID:
    """One lotse.acknowledgement.overdue per acknowledgement due, whichever replica raises it."""
    return uuid.uuid5(_NS, f"overdue:{event_id}")
