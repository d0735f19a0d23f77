"""Prometheus metrics shared by every service. Labelled by service so tests may run several in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

events_consumed = Counter(
    "lotse_events_consumed_total",
    "Events a consumer processed (including duplicates it skipped).",
    ["service", "consumer", "topic", "type", "outcome"],
    registry=REGISTRY,
)
events_published = Counter(
    "lotse_events_published_total",
    "Events published to Kafka by the outbox relay.",
    ["service", "topic", "type"],
    registry=REGISTRY,
)
events_dead_lettered = Counter(
    "lotse_events_dead_lettered_total",
    "Records moved to a dead-letter topic.",
    ["service", "consumer", "topic", "kind"],
    registry=REGISTRY,
)
handler_seconds = Histogram(
    "lotse_handler_seconds",
    "Time from receiving an event to committing its effects.",
    ["service", "consumer", "type"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
outbox_backlog = Gauge(
    "lotse_outbox_backlog",
    "Outbox rows not yet published.",
    ["service"],
    registry=REGISTRY,
)
outbox_publish_failures = Counter(
    "lotse_outbox_publish_failures_total",
    "Failed outbox publish attempts (each is retried).",
    ["service"],
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
