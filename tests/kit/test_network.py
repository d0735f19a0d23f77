"""The network loader (`lotse_kit.network.parse_network` / `load_network`): a broken file names the line and
field of every problem, cross references are checked, and the demo file is valid.

How a running service treats a missing or broken file (`OrgDirectory`) is tested in test_units.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contracts.topics import ORG_ID_PATTERN
from contracts.vocab import Need, OrgKind
from lotse_kit.network import NetworkConfigError, load_network, parse_network

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "network.yaml"

VALID = """\
version: 1
district: d
name: n
organisations:
  - id: org-a
    name: A
    kind: jobcenter
    languages: [de]
    contact_email: a@a.example
    services:
      - id: svc
        name: S
        needs: [interpreter]
process_plans:
  - need: interpreter
    service: svc
    organisation: org-a
    answer_within_working_days: 3
"""


def problems(text: str) -> list[tuple[int | None, str]]:
    """(line, field) of every problem the loader reports for `text`."""
    with pytest.raises(NetworkConfigError, match=r"^invalid network configuration test\.yaml:") as exc:
        parse_network(text, "test.yaml")
    return [(p.line, p.field) for p in exc.value.problems]


def test_demo_network_is_valid_and_complete() -> None:
    net = load_network(DEMO)
    assert net.version == 1
    assert {o.kind for o in net.organisations} == set(OrgKind)  # every kind of member is represented
    assert all(re.match(ORG_ID_PATTERN, o.id) for o in net.organisations)
    assert all(o.languages and o.contact_email for o in net.organisations)
    ids = net.org_ids()
    for org in (
        "jobcenter-kreis-paderborn",
        "caritas-paderborn",
        "caritas-bueren",
        "diakonie-paderborn-hoexter",
        "awo-kreis-paderborn",
        "in-via-paderborn",
        "ki-kreis-paderborn",
        "kim-kreis-paderborn",
        "auslaenderbehoerde-kreis-paderborn",
    ):
        assert org in ids
    assert net.service("in-via-paderborn", "jugendmigrationsdienst") is not None
    assert net.service("ki-kreis-paderborn", "sprachmittlerpool") is not None
    mbe = [o.id for o in net.organisations if o.service("mbe")]
    assert {"caritas-paderborn", "diakonie-paderborn-hoexter", "awo-kreis-paderborn"} <= set(mbe)
    plan = net.plan_for(Need.RECOGNITION_OF_QUALIFICATIONS)
    assert plan is not None
    service = net.service(plan.organisation, plan.service)
    assert service is not None and Need.RECOGNITION_OF_QUALIFICATIONS in service.needs


def test_a_valid_minimal_file_loads() -> None:
    plan = parse_network(VALID).plan_for("interpreter")
    assert plan is not None and plan.answer_within_working_days == 3


def test_schema_errors_name_line_and_field() -> None:
    bad = VALID.replace("kind: jobcenter", "kind: job_centre").replace("answer_within_working_days: 3", "answer_within_working_days: 0")
    assert problems(bad) == [(7, "organisations[0].kind"), (18, "process_plans[0].answer_within_working_days")]


def test_missing_field_points_at_its_parent_and_unknown_keys_are_refused() -> None:
    bad = VALID.replace("    contact_email: a@a.example\n", "").replace("    name: A\n", "    name: A\n    nmae: typo\n")
    assert sorted(problems(bad)) == [(5, "organisations[0].contact_email"), (7, "organisations[0].nmae")]


def test_cross_references_are_checked() -> None:
    unknown_org = VALID.replace("organisation: org-a", "organisation: org-b")
    assert problems(unknown_org) == [(17, "process_plans[0].organisation")]
    unknown_service = VALID.replace("    service: svc", "    service: other")
    assert problems(unknown_service) == [(16, "process_plans[0].service")]
    uncovered = VALID.replace("needs: [interpreter]", "needs: [housing]")
    assert problems(uncovered) == [(15, "process_plans[0].need")]
    duplicate = VALID.replace(
        "process_plans:",
        """  - id: org-a
    name: A again
    kind: jobcenter
    languages: [de]
    contact_email: b@a.example
process_plans:""",
    )
    assert problems(duplicate) == [(14, "organisations[1].id")]


def test_version_and_syntax() -> None:
    assert problems(VALID.replace("version: 1", "version: 2")) == [(1, "version")]
    assert problems(VALID.replace("languages: [de]", "languages: [de"))[0][1] == "(syntax)"
