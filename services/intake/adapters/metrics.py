"""Intake's own Prometheus metrics (the kit's, such as events consumed and outbox backlog, are in lotse_kit.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

from lotse_kit.metrics import REGISTRY

referrals = Counter(
    "lotse_intake_referrals_total",
    "Referral steps by outcome: sent, refused_no_consent, accepted, declined, completed, revoked, blocked.",
    ["outcome"],
    registry=REGISTRY,
)
deadline_notices = Counter(
    "lotse_intake_deadline_notices_total",
    "Deadline notices emitted by the scheduler (approaching, missed).",
    ["notice"],
    registry=REGISTRY,
)
