"""The audit service's own Prometheus metrics (on the kit's registry, served at /metrics)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from lotse_kit.metrics import REGISTRY

from ..domain.entries import Entry
from .repository import AppendResult

SERVICE = "audit"

ENTRIES_LOGGED = Counter("lotse_audit_entries_total", "Records appended to the audit log.", ["service", "kind"], registry=REGISTRY)
DUPLICATES_SKIPPED = Counter("lotse_audit_duplicates_total", "Redelivered records already in the log.", ["service"], registry=REGISTRY)
ENTRIES_UNLOGGABLE = Counter(
    "lotse_audit_unloggable_total", "Entries the database refused, logged as stand-ins naming the record.", ["service"], registry=REGISTRY
)
TREE_SIZE = Gauge("lotse_audit_tree_size", "Entries in the audit log (as appended by this replica).", ["service"], registry=REGISTRY)
SIGNED_TREE_SIZE = Gauge(
    "lotse_audit_signed_tree_size", "Tree size of the latest tree head this replica signed.", ["service"], registry=REGISTRY
)
SIGNED_AT = Gauge(
    "lotse_audit_tree_head_signed_timestamp_seconds",
    "Unix time of the latest tree head this replica signed.",
    ["service"],
    registry=REGISTRY,
)
APPEND_SECONDS = Histogram(
    "lotse_audit_append_seconds",
    "Time to append one batch durably.",
    ["service"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def tree_head_signed(tree_size: int, signed_at_s: float) -> None:
    """The signer keeps up when this follows lotse_audit_tree_size (alert LotseAuditSigningStalled)."""
    SIGNED_TREE_SIZE.labels(SERVICE).set(tree_size)
    SIGNED_AT.labels(SERVICE).set(signed_at_s)


def batch_appended(result: AppendResult, entries: Iterable[Entry], seconds: float) -> None:
    APPEND_SECONDS.labels(SERVICE).observe(seconds)
    TREE_SIZE.labels(SERVICE).set(result.tree_size)
    if result.appended:
        for kind, n in Tally(e.kind for e in entries).items():
            ENTRIES_LOGGED.labels(SERVICE, kind).inc(n)
    if result.duplicates:
        DUPLICATES_SKIPPED.labels(SERVICE).inc(result.duplicates)
