"""The fault suite's own logic that needs no cluster: what counts as a reordering, which records are malformed and
who must dead-letter them, how the table reports a failure, and services.sh reading every service of SERVICE_PORTS."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench.chaos import checker
from bench.chaos.__main__ import table
from bench.chaos.scenarios import by_name, consumed_topics, malformed_record
from contracts import decode, topics
from contracts.envelope import DecodeError
from lotse_kit.settings import SERVICE_PORTS

REPO = Path(__file__).resolve().parents[2]


def test_a_referral_overtaking_an_earlier_one_of_the_same_client_is_a_reordering() -> None:
    # (sent, answered): r2 was answered before r3 was sent, yet r3 reached the inbox first.
    window = {"r1": (0.0, 0.5), "r2": (2.0, 2.5), "r3": (4.0, 4.5)}
    found = checker.reorderings({("inbox", "c1"): ["r1", "r3", "r2"]}, window)
    assert [(x["arrived_first"], x["sent_first"], x["answered_before_the_other_was_sent_ms"]) for x in found] == [("r3", "r2", 1500)]


def test_referrals_in_order_or_sent_while_another_was_in_flight_are_no_reordering() -> None:
    window = {"r1": (0.0, 0.5), "r2": (2.0, 5.0), "r3": (4.0, 4.5)}
    # r2 and r3 overlapped (r3 was sent before r2 was answered): either order is right.
    assert checker.reorderings({("inbox", "c1"): ["r1", "r3", "r2"], ("inbox", "c2"): ["r2"]}, window) == []
    assert checker.reorderings({("inbox", "c1"): ["r1", "r2", "r3"]}, window) == []


@pytest.mark.parametrize(("i", "kind"), [(0, DecodeError.UNDECODABLE), (1, DecodeError.SCHEMA_INVALID), (2, DecodeError.UNKNOWN_TYPE)])
def test_each_malformed_record_is_one_a_consumer_must_dead_letter(i: int, kind: str) -> None:
    key, value, headers = malformed_record(i, "run")
    assert key == f"chaos-malformed-run-{i}".encode()
    with pytest.raises(DecodeError) as err:
        decode(headers, value)
    assert err.value.kind == kind


def test_every_consumed_topic_gets_malformed_records_and_has_a_subscription_that_dead_letters_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOTSE_TOPIC_NAMESPACE", raising=False)  # the suite's network has none; other tests may set one
    # Every service of the checkout (the suite's default, those with cluster credentials, needs `make up-cluster`).
    expected = checker.expected_dlq_consumers([s for s in SERVICE_PORTS if (Path("services") / s / "__main__.py").exists()])
    names = consumed_topics()
    assert topics.REFERRALS in names and topics.DISCLOSURE_REQUESTS in names
    assert any(t.startswith("partner.") and t.endswith(".outbox.v1") for t in names)
    # The partner outbox matches the templated channel of intake's answers and consent's acknowledgements.
    outbox = next(t for t in names if t.endswith(".outbox.v1"))
    assert expected.get(outbox) >= 2
    assert expected.get(topics.DISCLOSURE_REQUESTS) >= 1  # the consent gate
    assert expected.get("no.such.topic") == 0


def test_the_findings_fail_on_loss_duplicates_disclosure_after_withdrawal_or_merkle() -> None:
    assert checker.Findings().ok
    assert not checker.Findings(lost=1).ok
    assert not checker.Findings(duplicated=1).ok
    assert not checker.Findings(after_withdrawal=1).ok
    assert not checker.Findings(merkle_ok=False).ok
    assert checker.Findings(copies=3, reordered=2).ok  # counted and listed; deduplicated by event id


def test_the_table_has_one_row_per_scenario_and_names_why_a_row_failed() -> None:
    ok = {**checker.to_json(checker.Findings(accepted=10)), "scenario": "a", "recovery_s": 3.0, "ready_within_s": 90.0, "ok": True}
    bad = {**checker.to_json(checker.Findings(accepted=10, lost=2)), "scenario": "b", "recovery_s": None, "ready_within_s": 90.0}
    bad["ok"], bad["error"] = False, None
    text = table({"scenarios": [ok, bad, {"scenario": "c", "skipped": "not there"}]})
    lines = text.splitlines()
    assert lines[0].startswith("| scenario | accepted | lost | duplicated | reordered |")
    assert "| a | 10 | 0 | 0 | 0 | 0 | 3.0 | 0.0 | ok |" in lines
    assert any(line.startswith("| b | 10 | 2 |") and "lost 2" in line and "not ready within 90 s" in line for line in lines)
    assert any(line.startswith("| c |") and "skipped: not there" in line for line in lines)


def test_every_scenario_of_the_issue_is_registered() -> None:
    names = {s.name for s in by_name(None)}
    assert names == {
        "broker-leader-kill",
        "service-kill",
        "replica-kill",
        "postgres-restart",
        "webhook-503",
        "network-delay-loss",
        "malformed-records",
    }


def test_services_sh_reports_every_service_of_service_ports(tmp_path: Path) -> None:
    # Ports nobody listens on and an empty services directory: every service is reported, none is ready.
    env = {**os.environ, "LOTSE_SERVICES_DIR": str(tmp_path / "services"), "LOTSE_SERVICES_CREDENTIALS_DIR": str(tmp_path)}
    for k, name in enumerate(SERVICE_PORTS):
        env[f"LOTSE_{name.upper()}_HTTP_PORT"] = str(47900 + k)
    out = subprocess.run([REPO / "deploy" / "local" / "services.sh", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    present = [s for s in SERVICE_PORTS if (REPO / "services" / s / "__main__.py").exists()]
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == sorted(present, key=_start_order)
    assert all("not provisioned" in line for line in out.stdout.splitlines())  # no credentials in tmp_path


def _start_order(name: str) -> tuple[int, int]:
    fixed = ["consent", "intake", "notifications", "audit"]
    return (fixed.index(name), 0) if name in fixed else (len(fixed), list(SERVICE_PORTS).index(name))
