"""The services' declarations say what their code does.

Each service declares, in `services/<name>/entrypoints/consumers.py: DECLARATION`, what it consumes and
produces; the runtime and the outbox enforce it and `contracts.export` generates the AsyncAPI documents
from it. These tests compare the declarations with the code itself, read statically with `ast`:

- every message a service declares it produces is built somewhere in that service's code (an event model
  constructed, e.g. `ReferralSent(...)`), or is a copy the consent service forwards to partner inboxes
  under `services/consent/domain/forwarding.py: FORWARDING_RULES`;
- every event model the code constructs is declared by that service;
- every keyword passed to an event model is a field of it (event models ignore unknown fields, so a renamed
  field would otherwise vanish silently);
- every message a service consumes is produced by some service (or by a partner, on its outbox).
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

from contracts.events import PREVIOUS_VERSIONS, SCHEMAS, EventData
from contracts.export import ASYNCAPI_DIR, SERVICES, declaration
from lotse_kit.declaration import PARTNER_INBOX, PARTNER_OUTBOX, ServiceDeclaration, message_id

ROOT = Path(__file__).resolve().parents[2]
EVENTS_MODULES = ("contracts.events", "contracts")
BUILDERS = ("model_validate", "model_validate_json", "model_construct")

# Consumed messages nobody produces yet, and why. The test fails when one of them gets a producer (remove it here).
# Consumed contracts that no service builds yet (each with the reason). Empty: everything consumed is produced.
NOT_PRODUCED_YET: dict[str, str] = {}


def event_models() -> dict[str, type[EventData]]:
    return {s.model.__name__: s.model for s in SCHEMAS.values()}


def message_ids(model: type[EventData]) -> set[str]:
    return {message_id(s) for s in SCHEMAS.values() if s.model is model}


@dataclass(frozen=True)
class Construction:
    where: str  # path:line
    model: type[EventData]
    keywords: tuple[str, ...]


def _constructions_in(path: Path) -> list[Construction]:
    models = event_models()
    tree = ast.parse(path.read_text(), filename=str(path))
    local: dict[str, type[EventData]] = {}  # local name -> event model
    modules: set[str] = set()  # local names bound to contracts.events (or contracts)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in EVENTS_MODULES and node.level == 0:
            for alias in node.names:
                if alias.name in models:
                    local[alias.asname or alias.name] = models[alias.name]
                elif node.module == "contracts" and alias.name == "events":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in EVENTS_MODULES:
                    modules.add(alias.asname or alias.name)

    def model_of(expr: ast.expr) -> type[EventData] | None:
        if isinstance(expr, ast.Name):
            return local.get(expr.id)
        if isinstance(expr, ast.Attribute) and expr.attr in models:
            return models[expr.attr] if ast.unparse(expr.value) in modules else None
        return None

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        model = model_of(node.func)
        if model is None and isinstance(node.func, ast.Attribute) and node.func.attr in BUILDERS:
            model = model_of(node.func.value)
        if model is not None:
            keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
            found.append(Construction(f"{path.relative_to(ROOT)}:{node.lineno}", model, keywords))
    return found


@cache
def constructions(service: str) -> list[Construction]:
    """Every construction of an event model in the service's code (its tests excluded)."""
    base = ROOT / "services" / service
    paths = sorted(p for p in base.rglob("*.py") if "tests" not in p.relative_to(base).parts)
    return [c for p in paths for c in _constructions_in(p)]


def produced_in_code(service: str) -> dict[str, list[str]]:
    """Message id -> where the service's code builds it."""
    out: dict[str, list[str]] = {}
    for c in constructions(service):
        for mid in message_ids(c.model):
            out.setdefault(mid, []).append(c.where)
    return out


def forwarded_by_consent() -> set[str]:
    rules = importlib.import_module("services.consent.domain.forwarding").FORWARDING_RULES
    return set(rules)


def produced_by_forwarding(decl: ServiceDeclaration) -> set[str]:
    """Messages the declaration publishes on partner inboxes as copies under the forwarding rules."""
    if decl.service != "consent":
        return set()
    return set(decl.produces().get(PARTNER_INBOX, ())) & forwarded_by_consent()


@pytest.mark.parametrize("service", SERVICES)
def test_every_declared_message_has_a_producer_in_the_code(service):
    decl = declaration(service)
    in_code = produced_in_code(service)
    forwarded = produced_by_forwarding(decl)
    missing = {
        f"{channel}: {mid}"
        for channel, mids in decl.produces().items()
        for mid in mids
        if mid not in in_code and not (channel == PARTNER_INBOX and mid in forwarded)
    }
    assert not missing, f"{service} declares messages its code never builds: {sorted(missing)}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_event_the_code_builds_is_declared(service):
    declared = declaration(service).produced_messages()
    undeclared = {mid: where for mid, where in produced_in_code(service).items() if mid not in declared}
    assert not undeclared, f"{service} builds events it does not declare: {undeclared}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_keyword_passed_to_an_event_model_is_one_of_its_fields(service):
    unknown = [
        f"{c.where}: {c.model.__name__}({k}=...)" for c in constructions(service) for k in c.keywords if k not in c.model.model_fields
    ]
    assert not unknown, f"event models ignore unknown fields, so these values are lost: {unknown}"


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_produces_an_older_version(service):
    """Old versions are only read (and upcast); everything new is written as the current version."""
    old = {message_id(s) for s in PREVIOUS_VERSIONS}
    assert declaration(service).produced_messages() & old == set()


def test_forwarded_messages_are_consumed_or_produced_and_declared_by_consent():
    """Consent forwards what it consumes (referral answers, deadlines, ...) and what it produces itself (withdrawals)."""
    decl = declaration("consent")
    consumed = {mid for mids in decl.consumes().values() for mid in mids}
    own = {mid for channel, mids in decl.produces().items() if channel != PARTNER_INBOX for mid in mids}
    forwarded = forwarded_by_consent()
    assert forwarded - consumed - own == set(), "a forwarding rule for an event consent never sees never fires"
    assert forwarded - set(decl.produces().get(PARTNER_INBOX, ())) == set(), "the outbox would refuse these copies"


def test_every_consumed_message_is_produced_somewhere():
    decls = [declaration(s) for s in SERVICES]
    # A forwarded copy exists only if the original does: copies do not count as producers.
    produced = {
        mid
        for d in decls
        for channel, mids in d.produces().items()
        for mid in mids
        if not (channel == PARTNER_INBOX and mid in produced_by_forwarding(d))
    }
    unproduced: dict[str, list[str]] = {}
    for d in decls:
        for channel, mids in d.consumes().items():
            if channel == PARTNER_OUTBOX:
                continue  # written by the partners' own systems
            for mid in mids:
                if mid not in produced:
                    unproduced.setdefault(mid, []).append(f"{d.service} on {channel}")
    assert set(unproduced) == set(NOT_PRODUCED_YET), f"consumed but produced by no service: {unproduced}"


def test_intake_declares_client_erased_exactly_when_its_code_builds_it():
    erased = "lotse.client.erased"
    builds_it = erased in produced_in_code("intake")
    assert builds_it  # erasure exists (DELETE /v1/clients/{id})
    assert (erased in declaration("intake").produced_messages()) == builds_it
    committed = yaml.safe_load((ASYNCAPI_DIR / "intake.yaml").read_text())
    sent = {m["$ref"].rsplit("/", 1)[-1] for op in committed["operations"].values() if op["action"] == "send" for m in op["messages"]}
    assert (erased in sent) == builds_it


def test_the_scan_finds_constructions_however_the_model_is_imported(tmp_path, monkeypatch):
    """The scanner itself: direct, aliased and module-qualified constructions count; annotations do not."""
    source = tmp_path / "handlers.py"
    source.write_text(
        "import contracts.events as ev\n"
        "from contracts import events\n"
        "from contracts.events import ReferralSent, ReferralRevoked as Revoked, DisclosureMade\n"
        "def f(env: DisclosureMade) -> None:\n"
        "    ReferralSent(client_id=1, referral_id=2, to_org='x', recipient='typo')\n"
        "    Revoked(**{})\n"
        "    ev.ConsentGranted(client_id=1)\n"
        "    events.DeadlineMissed.model_validate({})\n"
    )
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    found = _constructions_in(source)
    assert [(c.where, c.model.__name__) for c in found] == [
        ("handlers.py:5", "ReferralSent"),
        ("handlers.py:6", "ReferralRevoked"),
        ("handlers.py:7", "ConsentGranted"),
        ("handlers.py:8", "DeadlineMissed"),
    ]
    assert found[0].keywords == ("client_id", "referral_id", "to_org", "recipient")
