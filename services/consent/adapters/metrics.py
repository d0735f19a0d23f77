"""Consent service metrics, on the kit's registry so /metrics shows them."""

from __future__ import annotations

from prometheus_client import Counter

from lotse_kit.metrics import REGISTRY

decisions = Counter(
    "lotse_consent_decisions_total",
    "Decision API answers.",
    ["allowed", "cache"],
    registry=REGISTRY,
)
gate_decisions = Counter(
    "lotse_consent_gate_decisions_total",
    "Disclosure gate outcomes.",
    ["outcome"],
    registry=REGISTRY,
)
gate_prefetched = Counter(
    "lotse_consent_gate_prefetched_total",
    "Disclosure contents the gate fetched from intake in one batch request before a batch's transaction.",
    registry=REGISTRY,
)
