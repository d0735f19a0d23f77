"""The scaling model (bench/scaling.py): its arithmetic on small hand-checked inputs, the referral flow
against the services' declarations, and `--write-docs`. Pure: no broker, database or Keycloak."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import scaling as sc
from contracts.topics import DAY_MS

# ---------------------------------------------------------------- load


def test_load_counts_referral_events_and_other_events_per_client() -> None:
    a = sc.Assumptions(clients_per_area=100, referrals_per_client_year=2, other_events_per_client_year=10, peak_factor=10)
    ld = sc.load(a, sc.Scope("three areas", 3, "test"), events_per_ref=13)
    # 300 clients, 600 referrals; 600 x 13 + 300 x 10 = 10,800 events a year
    assert ld.clients == 300
    assert ld.referrals_per_year == 600
    assert ld.events_per_year == 10_800
    assert ld.events_per_day == pytest.approx(10_800 / 365)
    assert ld.events_per_s == pytest.approx(10_800 / 31_536_000)
    assert ld.peak_events_per_s == pytest.approx(10 * 10_800 / 31_536_000)
    assert ld.peak_referrals_per_s == pytest.approx(ld.peak_events_per_s / 13)


def test_default_assumptions_give_the_issues_national_load_on_paper() -> None:
    """Issue 14: about 4 events/s on average and 100/s at peaks nationally."""
    a = sc.Assumptions()
    germany = next(s for s in a.scopes if s.name == "Germany")
    ld = sc.load(a, germany, sc.events_per_referral())
    assert 3 <= ld.events_per_s <= 6
    assert 75 <= ld.peak_events_per_s <= 150


# ---------------------------------------------------------------- replicas and partitions


def test_replicas_follow_cpu_at_the_utilisation_target_and_never_fall_below_the_minimum() -> None:
    # 200/s x 18.8 ms = 3.76 cores; at half a core each: 7.52 -> 8 processes
    assert sc.replicas(200, 18.8, utilisation=0.5, minimum=2) == 8
    # exactly 2 cores at half a core each is 4 processes, not 5 (no rounding up of an exact figure)
    assert sc.replicas(40, 50, utilisation=0.5, minimum=2) == 4
    assert sc.replicas(0.01, 18.8, utilisation=0.5, minimum=2) == 2


def test_a_wall_time_bound_consumer_needs_replicas_by_the_rate_one_process_drains() -> None:
    # 200/s against 26.5/s per process at half load: 200 / 13.25 = 15.1 -> 16
    assert sc.replicas(200, 15.9, utilisation=0.5, minimum=2, serial_limit_per_s=26.5) == 16
    # CPU wins where it needs more
    assert sc.replicas(200, 100, utilisation=0.5, minimum=2, serial_limit_per_s=1000) == 40


def test_partitions_leave_room_for_twice_the_group_and_never_shrink() -> None:
    assert sc.partitions_for(1, current=3) == 3
    assert sc.partitions_for(2, current=3) == 6  # 4 -> the next of 3, 6, 12, ...
    assert sc.partitions_for(7, current=3) == 24  # 14 -> 24
    assert sc.partitions_for(2, current=12) == 12
    assert sc.partitions_for(100, current=3) == 200  # past the table: exactly what is needed


def test_partner_topics_share_a_groups_partitions_across_organisations() -> None:
    assert sc.partner_partitions_for(8, 10) == 2  # 16 partitions over 10 organisations' topics
    assert sc.partner_partitions_for(2, 4060) == 1
    assert sc.partner_partitions_for(5, 0) == 10  # no organisation known: as if one


def test_partition_replicas_count_partner_topics_once_per_organisation() -> None:
    parts = {"lotse.referrals.v1": 6, "lotse.referrals.v1.dlq": 1, "partner.{orgId}.inbox.v1": 1, "partner.{orgId}.outbox.v1": 2}
    # (6 + 1 + 10 x (1 + 2)) x 3
    assert sc.partition_replicas(parts, 10, rf=3) == 111


def test_serial_limit_only_when_the_cores_were_not_saturated() -> None:
    cpu = sc.measured_cpu(_result(busy_at_miss=1.5))
    assert sc.serial_limit(cpu) == 26.0
    cpu = sc.measured_cpu(_result(busy_at_miss=1.9))
    assert sc.serial_limit(cpu) is None


# ---------------------------------------------------------------- bytes


def test_varint_lengths_are_zigzag() -> None:
    assert [sc.varint_len(n) for n in (0, 63, 64, -64, -65, 8191, 8192)] == [1, 1, 2, 1, 2, 2, 3]


def test_kafka_record_bytes_of_one_record_in_its_own_batch() -> None:
    # body: attributes, timestamp delta, offset delta (3) + key 1 + 36 + value 2 + 300 + header count 1
    #       + header (1 + 2 + 1 + 3) = 350; length varint of 350 is 2 bytes; batch header 61
    assert sc.kafka_record_bytes(36, 300, [(2, 3)]) == 350 + 2 + 61
    assert sc.kafka_record_bytes(36, 300, [(2, 3)], records_per_batch=61) == 350 + 2 + 1


def test_postgres_row_and_index_estimates() -> None:
    # line pointer 4 + header 24 (no null bitmap) + 12 bytes of columns + 8 padding -> 24
    assert sc.heap_row_bytes([8, 4], columns=2, has_nulls=False) == 52
    # 15 columns with a null bitmap: header 23 + 2 -> 32
    assert sc.heap_row_bytes([8], columns=15) == 4 + 32 + 16
    assert sc.btree_entry_bytes(8, fill=1.0) == 20
    assert sc.btree_entry_bytes(9, fill=0.5) == (8 + 16 + 4) / 0.5
    assert sc.varlena(126) == 127
    assert sc.varlena(127) == 131


def test_audit_estimate_agrees_with_the_measured_footprint() -> None:
    """docs/audit.md measured about 1.7 kB per entry (table and indexes) with referral events."""
    row = sc.audit_row_bytes(1000, topic="lotse.referrals.v1", event_type="lotse.referral.sent", orgs=2)
    assert row.heap > 1000
    assert 1400 <= row.total <= 2000


def test_kafka_storage_is_bytes_per_day_times_retention_times_replication() -> None:
    (t,) = sc.kafka_storage({"x": 1000}, {"x": 500}, {"x": 7}, rf=3)
    assert t.bytes_per_day == 500_000
    assert t.retained_bytes == 500_000 * 7 * 3
    assert t.written_per_year == 500_000 * 365 * 3


def test_brokers_by_replication_disk_and_partition_replicas() -> None:
    gib = sc.GiB
    assert sc.brokers_needed(10 * gib, disk_per_broker=500 * gib, rf=3) == 3
    assert sc.brokers_needed(2000 * gib, disk_per_broker=500 * gib, rf=3) == 4
    assert sc.brokers_needed(10 * gib, disk_per_broker=500 * gib, rf=3, replicas=36_669, replicas_per_broker=4000) == 10


def test_retention_from_the_contracts_and_the_network_file() -> None:
    days = sc.retention_days()
    assert days["lotse.referrals.v1"] == 30
    assert days["lotse.disclosure-requests.v1"] == 7
    assert days["partner.{orgId}.inbox.v1"] == 14
    shorter = sc.retention_days({"partner.{orgId}.inbox.v1": {"retention.ms": str(7 * DAY_MS)}})
    assert shorter["partner.{orgId}.inbox.v1"] == 7
    assert sc.current_partitions()["lotse.referrals.v1.dlq"] == 1


# ---------------------------------------------------------------- the referral flow, against the code


def test_one_referral_causes_thirteen_records() -> None:
    assert sc.events_per_referral() == 13
    assert sc.reads_per_referral() == 27
    assert sc.processed_rows_per_referral() == 6
    by_topic = sc.events_by_topic()
    assert by_topic["lotse.notifications.v1"] == 4
    assert by_topic["partner.{orgId}.inbox.v1"] == 2


def test_the_flow_matches_what_the_services_declare() -> None:
    """Readers, handlers and producers of every hop are those of the services' declarations."""
    from services.audit.entrypoints.consumers import DECLARATION as AUDIT
    from services.consent.entrypoints.consumers import DECLARATION as CONSENT
    from services.intake.entrypoints.consumers import DECLARATION as INTAKE
    from services.notifications.entrypoints.consumers import DECLARATION as NOTIFICATIONS

    decls = {d.service: d for d in (INTAKE, CONSENT, NOTIFICATIONS)}
    audit_channels = {c for s in AUDIT.subscriptions for c in s.channels}
    for hop in sc.REFERRAL_FLOW:
        base = hop.event_type.split(" ")[0]
        assert hop.topic in audit_channels and "audit" in hop.readers
        for name, d in decls.items():
            subs = [s for s in d.subscriptions if hop.topic in s.channels]
            assert (name in hop.readers) == bool(subs), (hop, name)
            assert (name in hop.handled_by) == any(base in s.handlers for s in subs), (hop, name)
        if hop.producer in decls:
            produced = decls[hop.producer].produces().get(hop.topic, [])
            assert any(m == base or m.startswith(base + ".") for m in produced), hop


def test_two_e_mails_per_sent_and_per_accepted_referral() -> None:
    from services.notifications.domain.model import Channel
    from services.notifications.domain.routing import routes_for

    mails = sum(1 for t in ("lotse.referral.sent", "lotse.referral.accepted") for r in routes_for(t) if Channel.EMAIL in r.channels)
    assert mails == sum(1 for h in sc.REFERRAL_FLOW if h.event_type == "lotse.notification.delivered")


def test_sample_records_have_realistic_sizes() -> None:
    sized = sc.size_flow()
    assert len(sized) == 13
    sealed = sized[3]
    assert sealed.hop.topic == "partner.{orgId}.inbox.v1"
    assert sealed.value_bytes > 2 * max(s.value_bytes for s in sized if s is not sealed)  # the JWE
    assert all(400 < s.kafka_bytes < 4000 for s in sized)
    assert all(500 < s.audit.entry < 2000 for s in sized)


# ---------------------------------------------------------------- measured CPU and the model


def _result(busy_at_miss: float = 1.5) -> dict[str, Any]:
    def step(rate: float, holds: bool, system: float, delivered: float, busy: float) -> dict[str, Any]:
        per = {"intake": 20.0, "consent": 15.0, "notifications": 10.0, "audit": 10.0, "postgres": 99.0, "kafka": 12.0, "keycloak": 0.0}
        return {
            "target": "lotse",
            "offered_per_s": rate,
            "holds_goal": holds,
            "cpu_ms_per_referral": {**per, "partners": 1.0},
            "postgres_cpu_ms_per_referral_this_side": 13.0,
            "postgres_cpu_ms_per_referral_by_client": {"intake": 5.0, "audit": 3.0, "floor-api": 0.2},
            "system_cpu_ms_per_referral": system,
            "cores_busy": busy,
            "delivered_per_s": delivered,
        }

    return {
        "run": "abc",
        "started": "2026-11-30T12:00:00+00:00",
        "machine": {"cores": 2},
        "steps": [
            step(10, True, 90.0, 10, 1.0),
            {"target": "floor", "offered_per_s": 10, "holds_goal": True},
            step(20, True, 80.0, 20, 1.4),
            step(30, False, 75.0, 26, busy_at_miss),
        ],
        "summary": {"highest_rate_holding_goal": 20},
    }


def test_measured_cpu_takes_the_highest_step_holding_the_goal() -> None:
    cpu = sc.measured_cpu(_result())
    assert cpu.offered_per_s == 20 and cpu.holds_goal
    assert cpu.per_component_ms["postgres"] == 13.0  # this side only, not the floor's backends
    assert cpu.postgres_by_client_ms == {"intake": 5.0, "audit": 3.0}
    assert cpu.system_ms == 80.0
    assert (cpu.first_miss, cpu.delivered_at_first_miss, cpu.cores_busy_at_first_miss) == (30, 26, 1.5)
    assert sc.measured_cpu(_result(), rate=10).system_ms == 90.0
    with pytest.raises(ValueError, match="no Lotse step at 15"):
        sc.measured_cpu(_result(), rate=15)


def test_evaluate_sizes_every_scope_and_the_design_rate() -> None:
    cpu = sc.measured_cpu(_result())
    a = sc.Assumptions()
    sized = sc.size_flow()
    m = sc.evaluate(cpu, a, sized, sc.retention_days(), sc.current_partitions(), design_rates=((100.0, "100/s"),))
    assert [s.load.scope for s in m.scopes] == [s.name for s in a.scopes]
    (design,) = m.rates
    # intake: 100/s x 20 ms = 2 cores -> 4 processes at half a core; consent: 100 / (26 x 0.5) = 7.7 -> 8
    assert design.replicas["intake"] == 4
    assert design.replicas["consent"] == 8
    assert design.cores["intake"] == pytest.approx(2.0)
    # the gate's topic follows the gate's replicas (16 -> 24); a topic only intake and audit read, CPU replicas
    assert design.partitions["lotse.disclosure-requests.v1"] == 24
    assert design.partitions["lotse.disclosures.v1"] == 12  # intake 4, audit 2 -> 8 -> 12
    germany = m.scopes[-1]
    assert germany.sizing.organisations == 406 * a.organisations_per_area
    assert germany.storage.brokers >= a.replication_factor
    audit_per_ref = sum(s.audit.total for s in sized)
    expected = germany.load.referrals_per_year * audit_per_ref + germany.load.clients * a.other_events_per_client_year * audit_per_ref / 13
    assert germany.storage.audit_bytes_per_year == pytest.approx(expected)
    assert math.isclose(sum(t.records_per_day for t in germany.storage.topics), germany.load.events_per_day)


# ---------------------------------------------------------------- --write-docs


DOC_TEXT = """# Scaling

Prose before, kept.

<!-- bench:scaling:begin -->
old generated text
<!-- bench:scaling:end -->

Prose after, kept too.
"""


def test_replace_block_changes_only_the_marked_block() -> None:
    out = sc.replace_block(DOC_TEXT, "new table")
    before, after = DOC_TEXT.split(sc.MARK_BEGIN)[0], DOC_TEXT.split(sc.MARK_END)[1]
    assert out == f"{before}{sc.MARK_BEGIN}\nnew table\n{sc.MARK_END}{after}"
    assert sc.replace_block(out, "new table") == out  # idempotent
    with pytest.raises(ValueError):
        sc.replace_block("no markers", "x")
    with pytest.raises(ValueError):
        sc.replace_block(DOC_TEXT + DOC_TEXT, "x")


def test_write_docs_from_the_command_line_replaces_only_the_marked_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "scaling.md"
    doc.write_text(DOC_TEXT)
    results = tmp_path / "e2e-2026-11-30T1200.json"
    results.write_text(json.dumps(_result()))
    monkeypatch.setattr(sc, "DOC", doc)
    assert sc.main(["--results", str(results), "--write-docs"]) == 0
    text = doc.read_text()
    assert text.startswith(
        "# Scaling\n\nProse before, kept.\n\n" + sc.MARK_BEGIN + "\nGenerated by `python -m bench.scaling` from run `abc`"
    )
    assert text.endswith(sc.MARK_END + "\n\nProse after, kept too.\n")
    assert "old generated text" not in text
    assert text.split(sc.MARK_BEGIN)[1].split(sc.MARK_END)[0].strip() == capsys.readouterr().out.strip()


def test_newest_result_ignores_other_files(tmp_path: Path) -> None:
    for name in ("e2e-2026-11-30T1215.json", "e2e-2026-11-30T1300.json", "e2e-2026-11-30T1400-floor.json", "e2e-x.json"):
        (tmp_path / name).write_text("{}")
    assert sc.newest_result(tmp_path).name == "e2e-2026-11-30T1300.json"
