"""Each alert in deploy/observability/alerts.yml fires on the situation it is for, and not on a healthy one.

The rules are evaluated by Prometheus' own rule engine: `promtool test rules` over synthetic series, one test
group per situation, checking which alerts fire at a given time (so each rule's `for` is exercised too). Only
labels are compared: the rules are copied without their annotations, which are prose for people.

promtool comes with Debian's `prometheus` package (without installing the server: `apt-get download prometheus`,
then `dpkg-deb -x` it) or from the Go module (`go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0`,
some ten minutes of compiling on two cores); both pass. It is looked up as `$LOTSE_PROMTOOL`, on PATH, or in
~/go/bin. Without it only the coverage check runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "observability" / "alerts.yml"

LAG = {"job": "kafka-exporter", "instance": "kafka-exporter:9308"}
LOTSE = {"job": "lotse", "instance": "10.0.0.1:8001"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{body}}}", "values": values}


def group(name: str, input_series: list[dict[str, str]], checks: list[tuple[str, str, list[dict[str, str]]]]) -> dict[str, Any]:
    """One situation: input series (one sample a minute), and at each (time, alert) the label sets expected to fire."""
    return {
        "name": name,
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": [{"eval_time": t, "alertname": a, "exp_alerts": [{"exp_labels": e} for e in exp]} for t, a, exp in checks],
    }


def no_target(labels: dict[str, str]) -> dict[str, str]:
    """What is left of a series' labels after `sum by (...)`: not the scrape job's `job` and `instance`."""
    return {k: v for k, v in labels.items() if k not in ("job", "instance")}


def lag_labels(group_id: str, partition: str = "0") -> dict[str, str]:
    return {**LAG, "consumergroup": group_id, "topic": "lotse.referrals.v1", "partition": partition}


GROUPS = [
    group(
        "lag high but moving; small lag and partner groups ignored",
        [
            series("kafka_consumergroup_lag", lag_labels("lotse-intake-disclosures"), "2000x40"),
            series("kafka_consumergroup_current_offset", lag_labels("lotse-intake-disclosures"), "100+50x40"),
            series("kafka_consumergroup_lag", lag_labels("lotse-audit-ingest"), "10x40"),
            series("kafka_consumergroup_current_offset", lag_labels("lotse-audit-ingest"), "100+1x40"),
            series("kafka_consumergroup_lag", lag_labels("partner.caritas-paderborn.inbox"), "5000x40"),
            series("kafka_consumergroup_current_offset", lag_labels("partner.caritas-paderborn.inbox"), "7x40"),
        ],
        [
            ("5m", "LotseConsumerLagHigh", []),  # not yet: `for: 10m`
            ("20m", "LotseConsumerLagHigh", [{"severity": "warning", **no_target(lag_labels("lotse-intake-disclosures"))}]),
            ("30m", "LotseConsumerStalled", []),
        ],
    ),
    group(
        "a stalled partition, in a namespace",
        [
            series("kafka_consumergroup_lag", lag_labels("kreis-paderborn.lotse-consent-disclosure-gate", "2"), "5x40"),
            series("kafka_consumergroup_current_offset", lag_labels("kreis-paderborn.lotse-consent-disclosure-gate", "2"), "41x40"),
            series("kafka_consumergroup_lag", lag_labels("lotse-consent-disclosure-gate", "0"), "0x40"),
            series("kafka_consumergroup_current_offset", lag_labels("lotse-consent-disclosure-gate", "0"), "41x40"),
        ],
        [
            ("3m", "LotseConsumerStalled", []),  # `for: 5m` (from a fresh start the 15 m window is what there is)
            (
                "25m",
                "LotseConsumerStalled",
                [{"severity": "critical", **no_target(lag_labels("kreis-paderborn.lotse-consent-disclosure-gate", "2"))}],
            ),
            ("25m", "LotseConsumerLagHigh", []),
        ],
    ),
]

DLQ = {**LOTSE, "service": "intake", "consumer": "disclosures", "topic": "lotse.disclosures.v1", "kind": "schema-invalid"}
GROUPS += [
    group(
        "one dead letter, then a storm",
        [
            series("lotse_events_dead_lettered_total", DLQ, "0x5 1x25"),
            series("lotse_events_dead_lettered_total", {**DLQ, "kind": "rejected"}, "0x30 0+20x20"),
        ],
        [
            ("3m", "LotseEventsDeadLettered", []),
            ("10m", "LotseEventsDeadLettered", [{"severity": "warning", **no_target(DLQ)}]),
            ("25m", "LotseEventsDeadLettered", []),  # the one record is older than 15 minutes
            ("45m", "LotseDeadLetterStorm", [{"severity": "critical", **no_target({k: v for k, v in DLQ.items() if k != "kind"})}]),
        ],
    ),
]


OUT = {**LOTSE, "service": "consent"}
PUB = {**OUT, "topic": "lotse.consents.v1", "type": "lotse.consent.granted"}
GROUPS += [
    group(
        "outbox backlog high while publishing",
        [series("lotse_outbox_backlog", OUT, "2000x30"), series("lotse_events_published_total", PUB, "0+100x30")],
        [("15m", "LotseOutboxBacklogHigh", [{"severity": "warning", "service": "consent"}]), ("25m", "LotseOutboxStalled", [])],
    ),
    group(
        "outbox stalled: rows waiting, nothing published, publishing failing",
        [
            series("lotse_outbox_backlog", OUT, "5x30"),
            series("lotse_events_published_total", PUB, "40x30"),
            series("lotse_outbox_publish_failures_total", OUT, "0+3x30"),
        ],
        [
            ("25m", "LotseOutboxStalled", [{"severity": "critical", "service": "consent"}]),
            ("25m", "LotseOutboxPublishFailing", [{"severity": "warning", "service": "consent"}]),
            ("25m", "LotseOutboxBacklogHigh", []),
        ],
    ),
    group(
        "a service down, another not ready, a stale network file",
        [
            series("up", {**LOTSE, "service": "intake"}, "0x10"),
            series("up", {**LOTSE, "instance": "10.0.0.1:8002", "service": "consent"}, "1x10"),
            series("probe_success", {"job": "lotse-ready", "instance": "http://10.0.0.1:8002/health/ready", "service": "consent"}, "0x10"),
            series(
                "probe_success", {"job": "lotse-ready", "instance": "http://10.0.0.1:8003/health/ready", "service": "notifications"}, "1x10"
            ),
            series("lotse_network_file_stale", {**LOTSE, "service": "intake"}, "1x10"),
        ],
        [
            ("1m", "LotseServiceDown", []),
            ("5m", "LotseServiceDown", [{"severity": "critical", **LOTSE, "service": "intake"}]),
            (
                "5m",
                "LotseServiceNotReady",
                [{"severity": "critical", "job": "lotse-ready", "instance": "http://10.0.0.1:8002/health/ready", "service": "consent"}],
            ),
            ("8m", "LotseNetworkFileStale", [{"severity": "warning", "service": "intake"}]),
        ],
    ),
    group(
        "an overdue acknowledgement raised; other consent events are no alarm",
        [
            series("lotse_events_published_total", {**PUB, "type": "lotse.acknowledgement.overdue"}, "0x10 1x60"),
            series("lotse_events_published_total", PUB, "0+5x70"),
        ],
        [
            ("5m", "LotseAcknowledgementOverdue", []),
            ("20m", "LotseAcknowledgementOverdue", [{"severity": "warning", "service": "consent"}]),
        ],
    ),
]

AUDIT = {**LOTSE, "service": "audit"}
GROUPS += [
    group(
        "audit log grows, no tree head signed",
        [
            series("lotse_audit_tree_size", AUDIT, "100+10x30"),
            series("lotse_audit_signed_tree_size", AUDIT, "100x30"),
            series("lotse_audit_tree_head_signed_timestamp_seconds", AUDIT, "0x30"),
            series("lotse_audit_unloggable_total", AUDIT, "0x10 2x20"),
        ],
        [
            ("5m", "LotseAuditSigningStalled", []),  # the last head is 5 minutes old: within bounds
            ("15m", "LotseAuditSigningStalled", [{"severity": "critical", "service": "audit"}]),
            ("15m", "LotseAuditEntriesUnloggable", [{"severity": "warning", "service": "audit"}]),
        ],
    ),
    group(
        "audit log grows and heads keep up",
        [
            series("lotse_audit_tree_size", AUDIT, "100+10x30"),
            series("lotse_audit_signed_tree_size", AUDIT, "100+10x30"),
            series("lotse_audit_tree_head_signed_timestamp_seconds", AUDIT, "0+60x30"),
        ],
        [("20m", "LotseAuditSigningStalled", []), ("20m", "LotseAuditEntriesUnloggable", [])],
    ),
]

NOTE = {**LOTSE, "service": "notifications", "channel": "email"}
GROUPS += [
    group(
        "notifications failing on one channel, delivered on another",
        [
            series("lotse_notifications_completed_total", {**NOTE, "status": "permanent-failure"}, "0x5 0+1x40"),
            series("lotse_notifications_completed_total", {**NOTE, "channel": "webhook", "status": "delivered"}, "0+10x45"),
            series("lotse_notification_attempts_total", {**NOTE, "outcome": "retry"}, "0+9x45"),
            series("lotse_notification_attempts_total", {**NOTE, "outcome": "delivered"}, "0+1x45"),
            series("lotse_notification_attempts_total", {**NOTE, "channel": "webhook", "outcome": "delivered"}, "0+10x45"),
        ],
        [
            ("10m", "LotseNotificationsFailing", [{"severity": "warning", **no_target(NOTE), "status": "permanent-failure"}]),
            ("10m", "LotseNotificationChannelFailing", []),  # not yet: `for: 15m`
            ("35m", "LotseNotificationChannelFailing", [{"severity": "critical", **no_target(NOTE)}]),
        ],
    ),
]


def promtool() -> str | None:
    for candidate in (os.environ.get("LOTSE_PROMTOOL"), shutil.which("promtool"), str(Path.home() / "go" / "bin" / "promtool")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def rules() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def test_every_alert_is_shown_to_fire() -> None:
    alerts = {r["alert"] for g in rules()["groups"] for r in g["rules"]}
    fired = {c["alertname"] for g in GROUPS for c in g["alert_rule_test"] if c["exp_alerts"]}
    assert fired == alerts


@pytest.mark.skipif(promtool() is None, reason="promtool not installed (see the module docstring)")
def test_alerts_fire_as_expected(tmp_path: Path) -> None:
    doc = rules()
    for g in doc["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": GROUPS}
    (tmp_path / "alerts.test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    tool = promtool()
    assert tool is not None
    run = subprocess.run([tool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
