"""Which organisations get a correction (GDPR Art. 19), with which categories, under which consent.

An organisation gets the corrected categories it received under a consent that is still in effect now and
that still allows them to it (the decision rule of `model.decide`, for that one consent). Several consents:
each category goes once, under the newest consent that allows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from contracts.vocab import DataCategory, Purpose

from .model import Consent, decide

_NS = uuid.UUID("7e3c9a51-0b2d-4f86-a4c1-58d9e2f36b07")


@dataclass(frozen=True)
class Received:
    """What the ledger says an organisation received under one consent, for one purpose."""

    recipient: str
    consent_id: uuid.UUID
    purpose: Purpose
    categories: frozenset[DataCategory]


@dataclass(frozen=True)
class Correction:
    recipient: str
    consent_id: uuid.UUID
    purpose: Purpose
    categories: tuple[DataCategory, ...]


def plan_corrections(
    received: Iterable[Received], consents: Sequence[Consent], corrected: Iterable[DataCategory], *, now: datetime
) -> list[Correction]:
    by_id = {c.consent_id: c for c in consents}
    wanted = set(corrected)
    # Newest consent first, so a category is sent under the most recent consent that allows it.
    ordered = sorted(received, key=lambda r: (r.recipient, -by_id[r.consent_id].granted_at.timestamp() if r.consent_id in by_id else 0))
    covered: dict[str, set[DataCategory]] = {}
    plans: list[Correction] = []
    for r in ordered:
        consent = by_id.get(r.consent_id)
        if consent is None:
            continue
        cats = [c for c in DataCategory if c in wanted and c in r.categories and c not in covered.get(r.recipient, set())]
        if not cats:
            continue
        if not decide([consent], recipient=r.recipient, purpose=r.purpose, categories=cats, now=now, erased_at=None).allowed:
            continue
        covered.setdefault(r.recipient, set()).update(cats)
        plans.append(Correction(r.recipient, r.consent_id, r.purpose, tuple(cats)))
    return plans


def correction_request_id(corrected_event_id: uuid.UUID, org: str, consent_id: uuid.UUID) -> uuid.UUID:
    """The ledger id of one correction: a redelivered lotse.client.corrected is the same correction."""
    return uuid.uuid5(_NS, f"correction:{corrected_event_id}:{org}:{consent_id}")
