"""Intake's own Prometheus metrics (the kit's, such as events consumed and outbox backlog, are in lotse_kit.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
data_keys_under_old_keks = Gauge(
    "lotse_intake_data_keys_under_old_keks",
    "Client data keys wrapped under another key-encryption key than the current one; at 0 an old KEK can be removed.",
    registry=REGISTRY,
)
disclosure_fetches = Counter(
    "lotse_intake_disclosure_fetches_total",
    "The consent gate's fetches of personal data on the internal API, by outcome: served, erased, not_found.",
    ["outcome"],
    registry=REGISTRY,
)
erasures = Counter(
    "lotse_intake_erasures_total",
    "Erasure requests (GDPR Art. 17) by outcome: erased, retained (a retention period runs), repeated.",
    ["outcome"],
    registry=REGISTRY,
)
