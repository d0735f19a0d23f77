"""The gateway's own Prometheus metrics (the kit's registry; served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from lotse_kit import metrics

RECORDS_FETCHED = Counter(
    "lotse_gateway_records_fetched_total", "Inbox records returned to partners over HTTPS.", ["org"], registry=metrics.REGISTRY
)
ACKNOWLEDGEMENTS = Counter("lotse_gateway_acknowledgements_total", "Cursors partners acknowledged.", ["org"], registry=metrics.REGISTRY)
PUSHED = Counter(
    "lotse_gateway_push_attempts_total",
    "Webhook attempts by outcome (delivered, failed, no_secret: the organisation has no valid secret).",
    ["org", "outcome"],
    registry=metrics.REGISTRY,
)
EVENTS_ACCEPTED = Counter(
    "lotse_gateway_outbox_events_total",
    "Events partners posted to their outbox, by result (accepted, repeated).",
    ["org", "result"],
    registry=metrics.REGISTRY,
)
PENDING = Gauge(
    "lotse_gateway_inbox_pending", "Inbox records not acknowledged yet, per HTTPS organisation.", ["org"], registry=metrics.REGISTRY
)
OLDEST_PENDING_AGE = Gauge(
    "lotse_gateway_inbox_oldest_pending_seconds",
    "Age of the oldest unacknowledged inbox record, per HTTPS organisation (0: none).",
    ["org"],
    registry=metrics.REGISTRY,
)
UNFETCHED_NOTICES = Counter(
    "lotse_gateway_unfetched_notices_total", "lotse.inbox.left_unfetched events emitted.", ["org"], registry=metrics.REGISTRY
)
