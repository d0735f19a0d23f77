"""The alert rules and the dashboard in deploy/observability/ ask only for metrics and labels that exist.

A rule on a misspelt metric, or grouped by a label the metric lacks, is valid PromQL and never fires. So every
expression is parsed (promql-parser, the Rust PromQL parser's Python binding) and walked: each metric it
selects must be one Lotse exports (collected from `lotse_kit.metrics.REGISTRY` after importing every service,
which registers each service's adapters/metrics.py on it) or one listed in metric-sources.yml as another
program's (kafka_exporter, blackbox_exporter, Prometheus), and each label used in a matcher, `by`/`without`,
`on`/`ignoring`/`group_*` or a legend must exist on what it is applied to.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml

from contracts.export import SERVICES
from lotse_kit import metrics

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
OPERATIONS = ROOT / "docs" / "operations.md"
SEVERITIES = {"warning", "critical"}
# Grafana's variables are not PromQL: each is replaced by a value of its kind before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$service": ".+"}


@dataclass(frozen=True)
class Metric:
    name: str
    source: str  # "lotse", "external" or "proposed"
    labels: frozenset[str]


def _sample_names(name: str, kind: str) -> list[tuple[str, tuple[str, ...]]]:
    """What a metric family of prometheus_client exposes: sample names, with the labels they add."""
    if kind == "counter":
        return [(f"{name}_total", ()), (f"{name}_created", ())]
    if kind == "histogram":
        return [(f"{name}_bucket", ("le",)), (f"{name}_sum", ()), (f"{name}_count", ()), (f"{name}_created", ())]
    if kind == "summary":
        return [(name, ("quantile",)), (f"{name}_sum", ()), (f"{name}_count", ()), (f"{name}_created", ())]
    return [(name, ())]


@cache
def sources() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((OBS / "metric-sources.yml").read_text())
    return doc


@cache
def exported() -> dict[str, Metric]:
    """Every sample name Lotse's registry exposes, with its labels and the `lotse` job's target labels."""
    for service in SERVICES:  # a service's bootstrap imports everything that registers its metrics
        importlib.import_module(f"services.{service}.bootstrap")
    target = frozenset(sources()["target_labels"]["lotse"])
    out: dict[str, Metric] = {}
    for family in metrics.REGISTRY.collect():  # a labelled metric with no series yet is collected too, unsampled
        own = getattr(metrics.REGISTRY._names_to_collectors[family.name], "_labelnames", ())
        for name, extra in _sample_names(family.name, family.type):
            out[name] = Metric(name, "lotse", frozenset(own) | frozenset(extra) | target)
    return out


@cache
def known() -> dict[str, Metric]:
    out = dict(exported())
    for source in ("external", "proposed"):
        for name, spec in sources()[source].items():
            job = spec.get("job")
            target = frozenset(sources()["target_labels"][job]) if job else frozenset()
            out.setdefault(name, Metric(name, source, frozenset(spec["labels"]) | target))
    return out


# ------------------------------------------------------------------ the walk
def labels_of(expr: Any, errors: list[str]) -> frozenset[str] | None:
    """The labels an expression's result may carry (None for a scalar), appending every misuse to `errors`."""
    if isinstance(expr, pp.VectorSelector):
        if expr.name is None:
            errors.append(f"a selector without a metric name: {expr}")
            return frozenset()
        metric = known().get(expr.name)
        if metric is None:
            errors.append(f"unknown metric {expr.name}")
            return frozenset()
        for m in expr.matchers.matchers:
            if m.name not in metric.labels:
                errors.append(f"{expr.name} has no label {m.name!r} (it has {sorted(metric.labels)})")
        return metric.labels
    if isinstance(expr, pp.MatrixSelector):
        return labels_of(expr.vector_selector, errors)
    if isinstance(expr, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        return labels_of(expr.expr, errors)
    if isinstance(expr, pp.NumberLiteral | pp.StringLiteral):
        return None
    if isinstance(expr, pp.Call):
        args = [labels_of(a, errors) for a in expr.args]
        vectors = [a for a in args if a is not None]
        if expr.func.name == "time" or not vectors:
            return None
        result = frozenset().union(*vectors)
        return result - {"le"} if expr.func.name == "histogram_quantile" else result
    if isinstance(expr, pp.AggregateExpr):
        if expr.param is not None:
            labels_of(expr.param, errors)
        inner = labels_of(expr.expr, errors) or frozenset()
        if expr.modifier is None:
            return frozenset()
        used = frozenset(expr.modifier.labels)
        missing = used - inner
        if missing:
            errors.append(f"{expr.op} {expr.modifier} over labels the expression lacks: {sorted(missing)}")
        return used if expr.modifier.type == pp.AggModifierType.By else inner - used
    if isinstance(expr, pp.BinaryExpr):
        lhs, rhs = labels_of(expr.lhs, errors), labels_of(expr.rhs, errors)
        mod = expr.modifier
        if lhs is None or rhs is None:
            return lhs if rhs is None else rhs
        if mod is not None and mod.matching is not None:
            on = frozenset(mod.matching.labels)
            if mod.matching.type == pp.LabelModifierType.Include:
                for side, labels in (("left", lhs), ("right", rhs)):
                    if on - labels:
                        errors.append(f"on {sorted(on)}: the {side} side lacks {sorted(on - labels)}")
            elif on - (lhs | rhs):
                errors.append(f"ignoring {sorted(on)}: no side has {sorted(on - (lhs | rhs))}")
        if mod is not None and mod.group_labels:
            extra = frozenset(mod.group_labels)
            other = rhs if mod.card == pp.VectorMatchCardinality.ManyToOne else lhs
            if extra - other:
                errors.append(f"group_* {sorted(extra)}: the 'one' side lacks {sorted(extra - other)}")
        return lhs
    errors.append(f"no rule for {type(expr).__name__} in this test: {expr}")
    return frozenset()


def check(expr_text: str, legend: str | None = None) -> list[str]:
    errors: list[str] = []
    try:
        expr = pp.parse(expr_text)
    except Exception as exc:  # the parser's error names the position
        return [f"does not parse: {exc}"]
    labels = labels_of(expr, errors)
    for used in re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend or ""):
        if labels is None or used not in labels:
            errors.append(f"legend uses {used!r}, not a label of the result ({sorted(labels or ())})")
    return errors


def grafana(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unhandled Grafana variable in {expr}"
    return expr


# ------------------------------------------------------------------ the files
def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((OBS / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((OBS / "dashboard.json").read_text())
    return doc


def dashboard_queries() -> list[tuple[str, str, str | None]]:
    """(where, PromQL, legend) for every target, annotation and variable query of the dashboard."""
    doc = dashboard()
    out = [(f"panel {p['title']!r}", t["expr"], t.get("legendFormat")) for p in doc["panels"] for t in p.get("targets", [])]
    out += [(f"annotation {a['name']!r}", a["expr"], None) for a in doc["annotations"]["list"] if "expr" in a]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", var["definition"])
            assert m, f"variable {var['name']}: expected label_values(selector, label)"
            out.append((f"variable {var['name']!r}", m.group(1), f"{{{{{m.group(2)}}}}}"))
    return out


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_rule_uses_exported_metrics_and_their_labels(rule: dict[str, Any]) -> None:
    assert check(rule["expr"]) == []


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: q[0])
def test_dashboard_query_uses_exported_metrics_and_their_labels(query: tuple[str, str, str | None]) -> None:
    _, expr, legend = query
    assert check(grafana(expr), legend) == []


def test_every_rule_has_for_severity_summary_and_a_runbook_section() -> None:
    headings = {_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", OPERATIONS.read_text(), re.M)}
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    missing = []
    for rule in rules():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/operations.md", rule["alert"]
        if anchor not in headings:
            missing.append(f"{rule['alert']}: #{anchor}")
    assert missing == [], "runbook sections missing in docs/operations.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_whole_of_the_walk_is_checked() -> None:
    """The walk finds what it is meant to find (else the tests above could pass by finding nothing)."""
    assert check('sum by (service) (rate(lotse_events_consumed_total{outcome="ok"}[5m]))') == []
    assert check("rate(lotse_events_consumd_total[5m])") == ["unknown metric lotse_events_consumd_total"]
    assert check('lotse_outbox_backlog{topic="x"}')[0].startswith("lotse_outbox_backlog has no label 'topic'")
    assert "over labels the expression lacks: ['topic']" in check("sum by (topic) (lotse_outbox_backlog)")[0]
    assert "the right side lacks ['consumer']" in check("lotse_events_dead_lettered_total > on (service, consumer) lotse_outbox_backlog")[0]
    assert "legend uses 'le'" in check("histogram_quantile(0.9, sum by (le) (rate(lotse_handler_seconds_bucket[5m])))", "{{le}}")[0]
    assert check("rate(kafka_consumergroup_lag{consumergroup=~'lotse-.+', partition='0'}[5m])") == []


def test_proposed_metrics_are_not_exported_yet() -> None:
    """Once a proposed metric is exported, remove it from metric-sources.yml: its real labels are then checked."""
    both = sorted(set(sources()["proposed"]) & set(exported()))
    assert both == [], f"exported now, remove from `proposed` in metric-sources.yml: {both}"
    assert not set(sources()["external"]) & set(exported())


def test_dashboard_shape() -> None:
    doc = dashboard()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {v["name"] for v in doc["templating"]["list"]} >= {"datasource", "service"}
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs)), p["title"]


def test_prometheus_config_attaches_the_target_labels_the_test_assumes() -> None:
    conf = yaml.safe_load((OBS / "prometheus.yml").read_text())
    assert conf["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    assert set(jobs) == set(sources()["target_labels"])
    for name, labels in sources()["target_labels"].items():
        static = {k for sc in jobs[name]["static_configs"] for k in sc.get("labels", {})}
        assert static | {"job", "instance"} == set(labels), name
