"""The notifications service's own metrics, registered in the kit's registry so /metrics shows them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from lotse_kit.metrics import REGISTRY

recorded = Counter(
    "lotse_notifications_recorded_total",
    "Notifications recorded from trigger events.",
    ["service", "channel", "recipient_kind"],
    registry=REGISTRY,
)
attempts = Counter(
    "lotse_notification_attempts_total",
    "Delivery attempts by outcome (delivered, retry, permanent, technical).",
    ["service", "channel", "outcome"],
    registry=REGISTRY,
)
completed = Counter(
    "lotse_notifications_completed_total",
    "Notifications that reached a final status.",
    ["service", "channel", "status"],
    registry=REGISTRY,
)
rate_limited = Counter(
    "lotse_notification_rate_limited_total",
    "Worker passes that found a channel's token bucket empty.",
    ["service", "channel"],
    registry=REGISTRY,
)
in_flight = Gauge("lotse_notifications_in_flight", "Attempts being sent right now by this replica.", ["service"], registry=REGISTRY)
secrets_under_old_keks = Gauge(
    "lotse_notifications_webhook_secrets_under_old_keks",
    "Stored webhook secrets sealed under another key-encryption key than the current one; at 0 an old KEK can be removed.",
    ["service"],
    registry=REGISTRY,
)
