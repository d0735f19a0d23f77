"""The five services share one shape: a newcomer who read one finds everything in the others.

This compares the trees and the wiring and fails when one service drifts.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from lotse_kit.declaration import ServiceDeclaration

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("intake", "consent", "notifications", "audit", "gateway")

# Top level of every service. Optional: cli.py (a service with commands), templates/ and locale/ (a service with
# texts for people: intake has none, its API speaks JSON and its errors are for developers).
REQUIRED_TOP = {
    "__init__.py",
    "__main__.py",
    "bootstrap.py",
    "config.py",
    "views.py",
    "domain",
    "handlers",
    "adapters",
    "entrypoints",
    "migrations",
    "tests",
}
OPTIONAL_TOP = {"cli.py", "templates", "locale"}
ENTRYPOINTS = {"__init__.py", "http.py", "consumers.py", "workers.py"}
REQUIRED_ADAPTERS = {"__init__.py", "repository.py", "metrics.py"}
REQUIRED_HANDLERS = {"__init__.py", "deps.py"}
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|COPY\s+\w+|CREATE\s+TABLE)\b", re.S
)  # SQL here is upper-case


def _entries(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.name != "__pycache__"}


@pytest.mark.parametrize("service", SERVICES)
def test_the_tree_has_the_common_shape(service):
    root = REPO / "services" / service
    top = _entries(root)
    assert top >= REQUIRED_TOP, f"{service} lacks {sorted(REQUIRED_TOP - top)}"
    assert top <= REQUIRED_TOP | OPTIONAL_TOP, f"{service} has {sorted(top - REQUIRED_TOP - OPTIONAL_TOP)} at its top level"
    assert _entries(root / "entrypoints") == ENTRYPOINTS
    assert _entries(root / "adapters") >= REQUIRED_ADAPTERS
    assert _entries(root / "handlers") >= REQUIRED_HANDLERS
    assert (root / "domain" / "__init__.py").exists()
    if (root / "templates").exists():
        assert list((root / "locale").glob("*/LC_MESSAGES/messages.po")), f"{service} has templates but no gettext catalogue"


@pytest.mark.parametrize("service", SERVICES)
def test_sql_lives_only_in_the_repository(service):
    root = REPO / "services" / service
    offenders = []
    for py in root.rglob("*.py"):
        rel = py.relative_to(root)
        if rel.parts[0] == "tests" or rel == Path("adapters/repository.py"):
            continue
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == [], f"SQL outside adapters/repository.py in {service}: {offenders}"


@pytest.mark.parametrize("service", SERVICES)
def test_domain_does_no_io(service):
    root = REPO / "services" / service / "domain"
    forbidden = {"asyncpg", "httpx", "aiokafka", "faststream", "fastapi", "smtplib", "aiosmtplib"}
    found = []
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{py.name}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert found == []


def test_bootstrap_has_one_signature_everywhere():
    sigs = {}
    for service in SERVICES:
        bootstrap = importlib.import_module(f"services.{service}.bootstrap").bootstrap
        params = inspect.signature(bootstrap).parameters
        sigs[service] = [
            (p.name, p.kind.name, p.default is None if p.default is not inspect.Parameter.empty else "required") for p in params.values()
        ]
    expected = [
        ("settings", "POSITIONAL_OR_KEYWORD", True),
        ("schema", "KEYWORD_ONLY", True),
        ("clock", "KEYWORD_ONLY", True),
        ("adapters", "VAR_KEYWORD", "required"),
    ]
    assert sigs == dict.fromkeys(SERVICES, expected)


@pytest.mark.parametrize("service", SERVICES)
def test_bootstrap_refuses_an_unknown_adapter(service):
    bootstrap = importlib.import_module(f"services.{service}.bootstrap").bootstrap
    with pytest.raises(TypeError, match="flux_capacitor"):
        bootstrap(flux_capacitor=object())


@pytest.mark.parametrize("service", SERVICES)
def test_handlers_are_a_plain_dict_and_consumers_a_declaration(service):
    handlers = importlib.import_module(f"services.{service}.handlers")
    consumers = importlib.import_module(f"services.{service}.entrypoints.consumers")
    assert type(handlers.EVENT_HANDLERS) is dict
    decl = consumers.DECLARATION
    assert isinstance(decl, ServiceDeclaration) and decl.service == service
    for sub in decl.subscriptions:
        for event_type, handler in sub.handlers.items():
            assert handlers.EVENT_HANDLERS[event_type] is handler, f"{service}: {event_type} not registered from EVENT_HANDLERS"
            assert list(inspect.signature(handler).parameters) == ["env", "conn", "deps"], handler.__qualname__
