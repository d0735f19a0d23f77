"""Scaling past one machine: what a measured end-to-end run implies for a Kreis, North Rhine-Westphalia and Germany.

    .venv/bin/python -m bench.scaling                     # the newest bench/results/e2e-*.json, tables to stdout
    .venv/bin/python -m bench.scaling --results bench/results/e2e-2026-11-30T1215.json --rate 20
    .venv/bin/python -m bench.scaling --write-docs        # replaces the generated block of docs/scaling.md

It runs nothing against the stack. From the results of `bench/e2e.py` it takes the CPU per referral of
each component (the four services, PostgreSQL, Kafka, Keycloak) at one step: by default the highest
offered rate that held the goal. Everything else it derives here, from the code:

- the events one referral causes (`REFERRAL_FLOW`, read from the services' handlers: which record lands
  on which topic, who reads it, which consumers record it in `processed_events`);
- their record sizes: realistic events encoded with `contracts.encode` (the partner's inbox record
  sealed with a real P-256 key), sized as Kafka v2 records;
- the audit entry of each record (`services.audit.domain.entries.build_entry`) and an estimate of its
  PostgreSQL footprint (heap row, five indexes, Merkle tree nodes);
- the retention of every topic (`contracts/topics.py`, overridden by the network file's
  `kafka.topic_config` when `--network` names one).

The population (clients per Jobcenter area, areas in NRW and Germany, referrals per client and year,
the peak factor) is `Assumptions`, each figure with its source or marked as an assumption. The model
is the pure functions below (`load`, `replicas`, `partitions_for`, `kafka_storage`, ...); `render`
turns it into the markdown between `<!-- bench:scaling:begin -->` and `<!-- bench:scaling:end -->`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

from lotse_kit.settings import KitSettings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "scaling.md"
MARK_BEGIN, MARK_END = "<!-- bench:scaling:begin -->", "<!-- bench:scaling:end -->"

# How long a consumed event's id is kept (then pruned by the kit).
PROCESSED_EVENTS_KEPT_DAYS: float = KitSettings.model_fields["processed_events_retention_days"].default

SERVICES = ("intake", "consent", "notifications", "audit")
SHARED = ("postgres", "kafka", "keycloak")
COMPONENTS = (*SERVICES, *SHARED)
PARTNER_INBOX, PARTNER_OUTBOX = "partner.{orgId}.inbox.v1", "partner.{orgId}.outbox.v1"
KiB, MiB, GiB, TiB = 1024.0, 1024.0**2, 1024.0**3, 1024.0**4
SECONDS_PER_DAY, DAYS_PER_YEAR = 86_400, 365


# ---------------------------------------------------------------- what one referral causes
@dataclass(frozen=True)
class Hop:
    """One record a referral causes: its event type, the topic it lands on, who writes it and who reads it."""

    event_type: str
    topic: str  # logical name; partner topics as their template
    producer: str
    readers: tuple[str, ...]  # consumer groups (by service or partner) that fetch it
    handled_by: tuple[str, ...] = ()  # kit consumers that run a handler, i.e. write a processed_events row
    note: str = ""


# The referral as the e2e benchmark sends it: the Jobcenter refers a client with a consent to a partner,
# the partner accepts, clients and organisations are told by e-mail (no SMS number, no webhook endpoint).
# Sources: services/intake/handlers/referrals.py (send_referral, apply_referral_action), deadlines.py;
# services/consent/handlers/disclosures.py (the gate), forwarding.py + domain/forwarding.py (an answer goes
# to the sender's inbox); services/notifications/domain/routing.py (2 e-mails per sent/accepted referral);
# the audit service logs every record on every lotse.* and partner.* topic. Readers per topic from the
# services' entrypoints/consumers.py: referrals and deadlines are read by consent (forwarding) and
# notifications; the disclosure requests by consent's gate; disclosures by intake; a partner's outbox by
# intake (answers) and consent (acknowledgements); every topic by audit.
REFERRAL_FLOW: tuple[Hop, ...] = (
    Hop("lotse.referral.sent", "lotse.referrals.v1", "intake", ("consent", "notifications", "audit"), ("notifications",),
        "POST /v1/clients/{id}/referrals, in intake's transaction"),
    Hop("lotse.disclosure.requested", "lotse.disclosure-requests.v1", "intake", ("consent", "audit"), ("consent",),
        "same transaction; the gate's input"),
    Hop("lotse.deadline.registered", "lotse.deadlines.v1", "intake", ("consent", "notifications", "audit"), (),
        "the answer deadline (referral_answer_due)"),
    Hop("lotse.referral.sent (partner v2, sealed)", PARTNER_INBOX, "consent", ("partner", "audit"), (),
        "the gate: consent re-checked, data fetched from intake, sealed to the partner"),
    Hop("lotse.disclosure.made", "lotse.disclosures.v1", "consent", ("intake", "audit"), ("intake",),
        "same transaction as the inbox record"),
    Hop("lotse.referral.accepted", PARTNER_OUTBOX, "partner", ("intake", "consent", "audit"), ("intake",),
        "the partner's answer on its own outbox"),
    Hop("lotse.referral.accepted", "lotse.referrals.v1", "intake", ("consent", "notifications", "audit"), ("consent", "notifications"),
        "intake records the answer"),
    Hop("lotse.deadline.resolved", "lotse.deadlines.v1", "intake", ("consent", "notifications", "audit"), (),
        "the answer deadline is settled"),
    Hop("lotse.referral.accepted (forwarded)", PARTNER_INBOX, "consent", ("partner", "audit"), (),
        "copy to the sending organisation's inbox (REFERRAL_SENDER)"),
    *(
        Hop("lotse.notification.delivered", "lotse.notifications.v1", "notifications", ("audit",), (), what)
        for what in (
            "e-mail to the client: referral sent",
            "e-mail to the Jobcenter: referral sent",
            "e-mail to the client: referral accepted",
            "e-mail to the Jobcenter: referral accepted",
        )
    ),
)  # fmt: skip


def events_per_referral(flow: Sequence[Hop] = REFERRAL_FLOW) -> int:
    return len(flow)


def reads_per_referral(flow: Sequence[Hop] = REFERRAL_FLOW) -> int:
    """Records fetched from Kafka per referral, over every consumer group."""
    return sum(len(h.readers) for h in flow)


def processed_rows_per_referral(flow: Sequence[Hop] = REFERRAL_FLOW) -> int:
    return sum(len(h.handled_by) for h in flow)


def events_by_topic(flow: Sequence[Hop] = REFERRAL_FLOW) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in flow:
        out[h.topic] = out.get(h.topic, 0) + 1
    return out


# ---------------------------------------------------------------- assumptions about the population
@dataclass(frozen=True)
class Scope:
    name: str
    areas: int  # Jobcenter areas (Kreise and kreisfreie Städte)
    source: str


@dataclass(frozen=True)
class Assumptions:
    # job-com Kreis Düren: "circa 15.000 Menschen im erwerbsfähigem Alter [...] Bürgergeld", "zu 44 % Personen mit
    # Zuwanderungsgeschichte" (Kreis Düren, Integrationskonzept, Kommunales Integrationsmanagement page).
    clients_per_area: int = 6_600
    clients_source: str = "job-com Kreis Düren: ≈ 15,000 people receiving Bürgergeld, 44 % with a migration history → ≈ 6,600"
    referrals_per_client_year: float = 3.0
    referrals_source: str = "assumption (language/integration course, migration counselling, recognition counselling)"
    # Events outside referrals, per client and year: registration or update 1, consent granted 1 + receipt e-mail 1,
    # a residence-title deadline registered 1, approaching 3 (lead times 90/30/7 days) with 2 e-mails each 6,
    # forwarded to a serving partner 2, resolved 1.
    other_events_per_client_year: float = 15.0
    other_events_source: str = (
        "assumption: registration 1, consent 1 + receipt 1, residence deadline 1 + 3 notices + 6 e-mails + 2 forwards + 1"
    )
    # Office hours: 8760 h / (250 working days × 8.5 h) = 4.1; the busiest hour of the week ≈ 2× the office-hours mean;
    # bursts within it (a team after a group information session, a scheduler pass of deadline notices) ≈ 3×.
    peak_factor: float = 25.0
    peak_source: str = "assumption: office hours 4.1x the 24/7 mean x busiest hour 2x x bursts 3x ≈ 25 (the issue's 4 → 100 events/s)"
    scopes: tuple[Scope, ...] = (
        Scope("Kreis (one Jobcenter area)", 1, "—"),
        Scope("North Rhine-Westphalia", 53, "31 Kreise + 22 kreisfreie Städte"),
        Scope("Germany", 406, "104 kommunale Jobcenter + 302 gemeinsame Einrichtungen (Kreis Borken, 2022)"),
    )
    organisations_per_area: int = 10
    organisations_source: str = (
        "deploy/demo/network.yaml (Kreis Paderborn: Jobcenter, five welfare associations, KI, KIM, Ausländerbehörde, Sozialamt)"
    )
    # Sizing rules (assumptions, not measurements).
    target_utilisation: float = 0.5  # a consumer process busy half the time keeps its queue (and the p99) short
    min_replicas: int = 2  # one may fail or be redeployed
    replication_factor: int = 3  # deploy/local/cluster.sh: RF 3, min.insync.replicas 2
    broker_disk_bytes: float = 500 * GiB  # per broker, for the broker count (at least 3 in any case)
    # A common guideline for ZooKeeper-era clusters (Confluent, 2018: ~4,000 per broker, 200,000 per cluster); KRaft allows more.
    partition_replicas_per_broker: int = 4000
    business_bytes_per_referral: float = 4 * KiB  # intake, consent, notifications rows per referral (estimate, not measured)


# ---------------------------------------------------------------- measured CPU
@dataclass(frozen=True)
class Cpu:
    """CPU per referral (ms, net of the idle rate) at one step of an e2e run."""

    run: str
    started: str
    offered_per_s: float
    holds_goal: bool
    per_component_ms: Mapping[str, float]
    postgres_by_client_ms: Mapping[str, float]
    system_ms: float
    cores: int
    cores_busy: float
    highest_rate_holding_goal: float | None
    first_miss: float | None
    delivered_at_first_miss: float | None
    cores_busy_at_first_miss: float | None
    source: str = ""


def lotse_steps(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in result["steps"] if s.get("target") == "lotse"]


def pick_step(result: Mapping[str, Any], rate: float | None = None) -> Mapping[str, Any]:
    """The step at `rate`; else the highest offered rate that held the goal; else the lowest rate measured."""
    steps = lotse_steps(result)
    if not steps:
        raise ValueError("the results hold no Lotse step")
    if rate is not None:
        for s in steps:
            if float(s["offered_per_s"]) == rate:
                return s
        measured = ", ".join(f"{s['offered_per_s']:g}" for s in steps)
        raise ValueError(f"no Lotse step at {rate:g}/s; measured: {measured}")
    held = [s for s in steps if s.get("holds_goal")]
    return max(held, key=lambda s: s["offered_per_s"]) if held else min(steps, key=lambda s: s["offered_per_s"])


def measured_cpu(result: Mapping[str, Any], rate: float | None = None, source: str = "") -> Cpu:
    s = pick_step(result, rate)
    per = {g: float(s["cpu_ms_per_referral"].get(g) or 0.0) for g in COMPONENTS}
    # PostgreSQL serves the floor too: the step's own side is what the system sum counts (bench/e2e.py).
    if s.get("postgres_cpu_ms_per_referral_this_side") is not None:
        per["postgres"] = float(s["postgres_cpu_ms_per_referral_this_side"])
    by_client = {k: float(v) for k, v in s.get("postgres_cpu_ms_per_referral_by_client", {}).items() if k in SERVICES}
    summary = result.get("summary", {})
    miss = next((x for x in lotse_steps(result) if not x.get("holds_goal")), None)
    return Cpu(
        run=str(result.get("run", "?")),
        started=str(result.get("started", "?")),
        offered_per_s=float(s["offered_per_s"]),
        holds_goal=bool(s.get("holds_goal")),
        per_component_ms=per,
        postgres_by_client_ms=by_client,
        system_ms=float(s.get("system_cpu_ms_per_referral") or sum(per.values())),
        cores=int(result.get("machine", {}).get("cores", 0) or 0),
        cores_busy=float(s.get("cores_busy", 0.0)),
        highest_rate_holding_goal=summary.get("highest_rate_holding_goal"),
        first_miss=float(miss["offered_per_s"]) if miss else None,
        delivered_at_first_miss=float(miss["delivered_per_s"]) if miss and miss.get("delivered_per_s") is not None else None,
        cores_busy_at_first_miss=float(miss["cores_busy"]) if miss and miss.get("cores_busy") is not None else None,
        source=source,
    )


def per_core_rate(cpu_ms: float) -> float | None:
    """Referrals/s that one fully busy core of a component carries (a Python service process uses at most one);
    None below 0.005 ms, which the tables show as 0.00 (e.g. Keycloak with cached tokens: no meaningful ceiling)."""
    return 1000.0 / cpu_ms if cpu_ms >= 0.005 else None


# ---------------------------------------------------------------- load
@dataclass(frozen=True)
class Load:
    scope: str
    areas: int
    clients: int
    referrals_per_year: float
    events_per_year: float
    events_per_day: float
    events_per_s: float
    peak_events_per_s: float
    peak_referrals_per_s: float  # referral-equivalents: peak events/s over the events one referral causes


def load(a: Assumptions, scope: Scope, events_per_ref: int) -> Load:
    clients = a.clients_per_area * scope.areas
    referrals = clients * a.referrals_per_client_year
    events = referrals * events_per_ref + clients * a.other_events_per_client_year
    per_s = events / (DAYS_PER_YEAR * SECONDS_PER_DAY)
    peak = per_s * a.peak_factor
    return Load(
        scope=scope.name,
        areas=scope.areas,
        clients=clients,
        referrals_per_year=referrals,
        events_per_year=events,
        events_per_day=events / DAYS_PER_YEAR,
        events_per_s=per_s,
        peak_events_per_s=peak,
        peak_referrals_per_s=peak / events_per_ref,
    )


def cores_needed(referrals_per_s: float, cpu_ms: float) -> float:
    return referrals_per_s * cpu_ms / 1000.0


def replicas(referrals_per_s: float, cpu_ms: float, *, utilisation: float, minimum: int, serial_limit_per_s: float | None = None) -> int:
    """Consumer processes a service needs: its CPU at `utilisation` of one core each, and where one process is
    bound by wall time rather than CPU (`serial_limit_per_s`, the rate one process was measured to drain), that
    too; never fewer than `minimum`."""
    n = math.ceil(cores_needed(referrals_per_s, cpu_ms) / utilisation - 1e-9)
    if serial_limit_per_s:
        n = max(n, math.ceil(referrals_per_s / (serial_limit_per_s * utilisation) - 1e-9))
    return max(minimum, n)


NICE_PARTITIONS = (3, 6, 12, 24, 48, 96, 192)


def partitions_for(max_consumers: int, *, current: int = 3, headroom: float = 2.0) -> int:
    """Partitions for a topic: room for `headroom` x the largest consumer group reading it, at least today's count.

    Consumer groups scale only up to the partition count, and the key (the client id) fixes a client's
    partition: changing the count later moves clients between partitions, so pick it with room to grow."""
    need = max(current, math.ceil(max_consumers * headroom))
    return next((p for p in NICE_PARTITIONS if p >= need), need)


def partner_partitions_for(max_consumers: int, organisations: int, *, headroom: float = 2.0) -> int:
    """Partitions of each partner topic. Lotse's consumers read all partners' topics through one pattern
    subscription per group, so a group's parallelism is the partitions of all those topics together: with many
    organisations one partition per topic is enough (and keeps the cluster's partition count down)."""
    return max(1, math.ceil(max_consumers * headroom / max(1, organisations)))


def partition_replicas(partitions: Mapping[str, int], organisations: int, *, rf: int) -> int:
    """Partition replicas on the cluster: platform topics once, partner topics (`partner.{orgId}.…`) per organisation."""
    total = sum(n * (organisations if t.startswith("partner.") else 1) for t, n in partitions.items())
    return total * rf


# ---------------------------------------------------------------- bytes
def varint_len(n: int) -> int:
    """Bytes of a zigzag varint (Kafka record format v2)."""
    z = (n << 1) ^ (n >> 63)
    length = 1
    while z >= 0x80:
        z >>= 7
        length += 1
    return length


BATCH_HEADER = 61  # Kafka record batch header (v2)


def kafka_record_bytes(key: int, value: int, headers: Sequence[tuple[int, int]], *, records_per_batch: float = 1.0) -> float:
    """On-disk (and on-wire) bytes of one uncompressed v2 record, with its share of the batch header.

    At the national average rate the relay sends about one record per batch, so the default charges each
    record a whole batch header."""
    body = 1 + 1 + 1  # attributes, timestamp delta, offset delta (one byte each for small deltas)
    body += varint_len(key) + key + varint_len(value) + value + varint_len(len(headers))
    body += sum(varint_len(k) + k + varint_len(v) + v for k, v in headers)
    return varint_len(body) + body + BATCH_HEADER / records_per_batch


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def varlena(n: int) -> int:
    """Bytes of a text/bytea value of n bytes in a heap row (1-byte header up to 126 bytes, else 4)."""
    return n + (1 if n <= 126 else 4)


def heap_row_bytes(column_bytes: Iterable[int], *, columns: int, has_nulls: bool = True) -> int:
    """A heap tuple: line pointer, header (with the null bitmap), the columns, padding to 8 bytes (an estimate:
    alignment inside the row is approximated by 8 bytes of padding)."""
    header = _align(23 + (math.ceil(columns / 8) if has_nulls else 0), 8)
    return 4 + header + _align(sum(column_bytes) + 8, 8)


def btree_entry_bytes(key_bytes: int, *, fill: float) -> float:
    """One leaf entry of a B-tree index (index tuple header 8, key padded to 8, line pointer 4) at a page fill."""
    return (8 + _align(key_bytes, 8) + 4) / fill


SEQUENTIAL_FILL, RANDOM_FILL = 0.9, 0.7  # B-tree leaf fill: appends at the right edge vs inserts all over


@dataclass(frozen=True)
class AuditRow:
    entry: int
    heap: int
    indexes: float
    tree: float

    @property
    def total(self) -> float:
        return self.heap + self.indexes + self.tree


def audit_row_bytes(entry: int, *, topic: str, event_type: str, orgs: int, client: bool = True, acting_org: int = 20) -> AuditRow:
    """Estimated PostgreSQL bytes of one audit entry (services/audit/migrations/001_audit_log.sql).

    audit_log heap row; indexes: primary key (idx), position (topic, partition, offset), client (client_id, idx),
    type (event_type, idx), BRIN on event_time (≈ 0), GIN on orgs; tree_nodes: a tree of n leaves has n - 1
    stored inner nodes, so about one node row (and its primary-key entry) per entry."""
    uuid_text = 36
    org_array = 24 + orgs * _align(4 + acting_org, 4)  # 1-D text[]: array header and dimensions, then the elements
    columns = [
        8,  # idx
        varlena(len(topic)),
        4,  # partition
        8,  # offset
        varlena(len(topic)),  # logical_topic
        varlena(5),  # kind
        varlena(uuid_text),  # event_id
        varlena(len(event_type)),
        varlena(uuid_text) if client else 0,
        varlena(acting_org),
        org_array,
        8,  # event_time
        8,  # logged_at
        varlena(entry),
        varlena(32),  # leaf_hash
    ]
    heap = heap_row_bytes(columns, columns=15)
    indexes = (
        btree_entry_bytes(8, fill=SEQUENTIAL_FILL)
        + btree_entry_bytes(varlena(len(topic)) + 4 + 8, fill=RANDOM_FILL)
        + (btree_entry_bytes(varlena(uuid_text) + 8, fill=RANDOM_FILL) if client else 0.0)
        + btree_entry_bytes(varlena(len(event_type)) + 8, fill=RANDOM_FILL)
        + orgs * 3.0  # GIN: compressed posting lists, a few bytes per (org, row)
    )
    tree = heap_row_bytes([2, 8, varlena(32)], columns=3, has_nulls=False) + btree_entry_bytes(2 + 8, fill=SEQUENTIAL_FILL)
    return AuditRow(entry=entry, heap=heap, indexes=indexes, tree=tree)


def processed_event_row_bytes(consumer: str = "notifications-triggers", topic: str = "lotse.referrals.v1") -> float:
    """One `processed_events` row (lotse_kit/migrations/002_processed_events.sql) and its primary key."""
    heap = heap_row_bytes([varlena(len(consumer)), 16, varlena(24), varlena(len(topic)), 4, 8, 8], columns=7, has_nulls=False)
    return heap + btree_entry_bytes(varlena(len(consumer)) + 16, fill=RANDOM_FILL)


# ---------------------------------------------------------------- retention and Kafka storage
def _logical_specs() -> list[Any]:
    from contracts.topics import partner_topics, platform_topics

    return [*platform_topics(), *partner_topics("org-id")]


def _template(name: str) -> str:
    return name.replace("partner.org-id.", "partner.{orgId}.")


def retention_days(topic_config: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, float]:
    """Retention of every logical topic (partner topics by template), from the contracts and the network file."""
    from contracts.topics import DAY_MS

    cfg = topic_config or {}
    out: dict[str, float] = {}
    for s in _logical_specs():
        name = _template(s.name)
        conf = {**s.config, **cfg.get(name, {})}
        out[name] = int(conf.get("retention.ms", str(7 * DAY_MS))) / DAY_MS
    return out


def current_partitions() -> dict[str, int]:
    """Partitions of every logical topic as the contracts create it today."""
    return {_template(s.name): s.partitions for s in _logical_specs()}


@dataclass(frozen=True)
class TopicLoad:
    topic: str
    records_per_day: float
    bytes_per_day: float  # before replication
    retention_days: float
    retained_bytes: float  # with replication
    written_per_year: float  # with replication


def kafka_storage(
    records_per_day: Mapping[str, float], bytes_per_record: Mapping[str, float], retention: Mapping[str, float], *, rf: int
) -> list[TopicLoad]:
    out = []
    for topic, n in records_per_day.items():
        b = n * bytes_per_record[topic]
        days = retention.get(topic, 7.0)
        out.append(TopicLoad(topic, n, b, days, b * days * rf, b * DAYS_PER_YEAR * rf))
    return out


def brokers_needed(retained_bytes: float, *, disk_per_broker: float, rf: int, replicas: int = 0, replicas_per_broker: int = 4000) -> int:
    """RF 3 with min.insync.replicas 2 needs three brokers to survive the loss of one; more only when the retained
    data does not fit their disks or the partition replicas exceed a per-broker guideline."""
    return max(rf, math.ceil(retained_bytes / disk_per_broker), math.ceil(replicas / replicas_per_broker))


# ---------------------------------------------------------------- realistic records
@dataclass(frozen=True)
class Sized:
    hop: Hop
    kafka_bytes: float
    value_bytes: int
    audit: AuditRow


def sample_records() -> list[Any]:
    """One encoded record per hop of REFERRAL_FLOW, with realistic content (names, notes, a sealed payload)."""
    from contracts import PARTNER_REFERRAL, encode, new_event
    from contracts.events import (
        DeadlineRegistered,
        DeadlineResolved,
        DisclosureMade,
        DisclosureRequested,
        NotificationDelivered,
        PartnerReferralV2,
        ReferralAccepted,
        ReferralSent,
        Sealed,
        SealedContent,
    )
    from contracts.sealed import generate_key, seal
    from contracts.vocab import DataCategory, DeadlineKind, Need, NotificationChannel, Purpose, RecipientKind

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    due = date(2026, 12, 14)
    cid, rid, req, consent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sender, partner = "jobcenter-kreis-paderborn", "caritas-paderborn"
    service = "Migrationsberatung für erwachsene Zuwanderer (MBE)"
    cats = [DataCategory.IDENTITY, DataCategory.CONTACT]
    intake, consent_src, notif = "/lotse/intake", "/lotse/consent", "/lotse/notifications"
    _, public = generate_key(f"{partner}-enc-2026-11", "enc")
    content = SealedContent.model_validate(
        {
            "personal_data": {
                "identity": {"given_name": "Olena", "family_name": "Kovalenko-Shevchenko", "date_of_birth": "1987-04-12"},
                "contact": {
                    "email": "olena.kovalenko@example.org",
                    "phone": "+49 5251 1234567",
                    "preferred_language": "uk",
                    "languages": ["uk", "ru"],
                },
            },
            "notes": {
                "reason": "Begleitung bei der Anmeldung zum Integrationskurs und Klärung der Kinderbetreuung",
                "free_text": "Frau K. hat einen Aufenthaltstitel nach § 24 AufenthG bis 03/2027, zwei Kinder (4 und 9 Jahre). "
                "Termin möglichst vormittags; Sprachmittlung Ukrainisch erwünscht.",
            },
        }
    )
    sealed = Sealed(jwe=seal(content.model_dump(mode="json"), public), kid=public.kid)
    deadline: dict[str, Any] = {
        "client_id": cid,
        "deadline_id": uuid.uuid4(),
        "kind": DeadlineKind.REFERRAL_ANSWER_DUE,
        "due_at": datetime(2026, 12, 14, 22, 59, 59, tzinfo=UTC),
        "responsible_org": partner,
        "referral_id": rid,
    }
    accepted = ReferralAccepted(client_id=cid, referral_id=rid, to_org=partner, from_org=sender, accepted_at=now)

    def delivered(recipient: RecipientKind) -> Any:
        return NotificationDelivered(
            notification_id=uuid.uuid4(),
            client_id=cid,
            trigger_event_id=uuid.uuid4(),
            trigger_type="lotse.referral.sent",
            channel=NotificationChannel.EMAIL,
            recipient_kind=recipient,
            recipient_org=sender if recipient is RecipientKind.ORGANISATION else None,
            language="uk" if recipient is RecipientKind.CLIENT else "de",
            delivered_at=now,
        )

    envs: list[Any] = [
        new_event(
            ReferralSent(
                client_id=cid, referral_id=rid, from_org=sender, to_org=partner, service=service,
                need=Need.INTEGRATION_COURSE, requested_categories=cats, answer_due=due, sent_at=now,
            ),
            source=intake, acting_org=sender,
        ),
        new_event(
            DisclosureRequested(
                client_id=cid, request_id=req, referral_id=rid, from_org=sender, to_org=partner, purpose=Purpose.REFERRAL,
                service=service, need=Need.INTEGRATION_COURSE, categories=cats, answer_due=due, requested_at=now,
            ),
            source=intake, acting_org=sender,
        ),
        new_event(DeadlineRegistered(**deadline, lead_times_days=[1], registered_at=now), source=intake, acting_org=sender),
        new_event(
            PartnerReferralV2(
                client_id=cid, referral_id=rid, from_org=sender, to_org=partner, service=service, need=Need.INTEGRATION_COURSE,
                answer_due=due, consent_id=consent, categories=cats, sealed=sealed, sent_at=now,
            ),
            source=consent_src, acting_org=sender, spec=PARTNER_REFERRAL,
        ),
        new_event(
            DisclosureMade(
                client_id=cid, request_id=req, referral_id=rid, recipient=partner, purpose=Purpose.REFERRAL, categories=cats,
                consent_id=consent, payload_sha256="ab" * 32, disclosed_at=now,
            ),
            source=consent_src, acting_org=sender,
        ),
        new_event(ReferralAccepted(client_id=cid, referral_id=rid, to_org=partner, accepted_at=now), source=f"/partners/{partner}",
                  acting_org=partner),
        new_event(accepted, source=intake, acting_org=partner),
        new_event(DeadlineResolved(**deadline, resolved_at=now, resolution="referral accepted"), source=intake, acting_org=partner),
        new_event(accepted, source=consent_src, acting_org=partner),
        *(
            new_event(delivered(kind), source=notif, acting_org=sender)
            for kind in (RecipientKind.CLIENT, RecipientKind.ORGANISATION, RecipientKind.CLIENT, RecipientKind.ORGANISATION)
        ),
    ]  # fmt: skip
    return [encode(e) for e in envs]


def size_flow(flow: Sequence[Hop] = REFERRAL_FLOW, records: Sequence[Any] | None = None) -> list[Sized]:
    """Kafka bytes and audit bytes of every hop, from realistic encoded records."""
    from services.audit.domain.entries import Record, build_entry

    records = list(records) if records is not None else sample_records()
    if len(records) != len(flow):
        raise ValueError(f"{len(records)} records for {len(flow)} hops")
    out = []
    for offset, (hop, rec) in enumerate(zip(flow, records, strict=True)):
        headers = [(len(k.encode()), len(v)) for k, v in rec.headers]
        kbytes = kafka_record_bytes(len(rec.key or b""), len(rec.value), headers)
        physical = hop.topic.replace("{orgId}", "caritas-paderborn")
        record = Record(physical, 0, 1_000_000 + offset, 1_796_040_000_000, rec.key, rec.value, list(rec.headers))
        entry = build_entry(cast(Any, record))  # a frozen Record satisfies the protocol at run time
        row = audit_row_bytes(
            len(entry.entry), topic=physical, event_type=entry.event_type or "", orgs=len(entry.orgs), client=entry.client_id is not None
        )
        out.append(Sized(hop, kbytes, len(rec.value), row))
    return out


# ---------------------------------------------------------------- the whole model
@dataclass(frozen=True)
class Sizing:
    """Cores, consumer replicas and partitions for one rate of referral-equivalents per second."""

    name: str
    referrals_per_s: float
    cores: dict[str, float]
    replicas: dict[str, int]
    partitions: dict[str, int]
    organisations: int
    partition_replicas: int


@dataclass(frozen=True)
class Storage:
    topics: list[TopicLoad]
    kafka_retained: float
    kafka_written_per_year: float
    brokers: int
    audit_bytes_per_year: float
    processed_bytes_kept: float
    business_bytes_per_year: float


@dataclass(frozen=True)
class ScopeResult:
    load: Load
    sizing: Sizing
    storage: Storage


GATE_TOPIC = "lotse.disclosure-requests.v1"


# Consumers of each topic that are Lotse services (partners aside): a topic's partitions bound them all.
def readers_by_topic(flow: Sequence[Hop]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for h in flow:
        out.setdefault(h.topic, set()).update(r for r in h.readers if r in SERVICES)
    return out


def serial_limit(cpu: Cpu, busy_share: float = 0.85) -> float | None:
    """The rate the pipeline drained at the first step that missed the goal, when the machine's cores were not
    saturated then: a wall-time bound (a consumer handling one record at a time), not a CPU bound."""
    if cpu.delivered_at_first_miss is None or cpu.cores_busy_at_first_miss is None or not cpu.cores:
        return None
    return cpu.delivered_at_first_miss if cpu.cores_busy_at_first_miss < busy_share * cpu.cores else None


def size_for(
    name: str,
    referrals_per_s: float,
    cpu: Cpu,
    a: Assumptions,
    readers: Mapping[str, set[str]],
    current: Mapping[str, int],
    serial: float | None,
    organisations: int,
) -> Sizing:
    cores = {g: cores_needed(referrals_per_s, cpu.per_component_ms[g]) for g in COMPONENTS}
    by_cpu = {
        svc: replicas(referrals_per_s, cpu.per_component_ms[svc], utilisation=a.target_utilisation, minimum=a.min_replicas)
        for svc in SERVICES
    }
    # The consent gate is the consumer the measurement found wall-time bound (bench/README.md, *End to end*): its
    # replicas also follow the rate one process drained, and so do the partitions of the gate's topic only.
    gate = replicas(referrals_per_s, cpu.per_component_ms["consent"], utilisation=a.target_utilisation, minimum=a.min_replicas,
                    serial_limit_per_s=serial)  # fmt: skip
    reps = {**by_cpu, "consent": gate}
    parts = {}
    for t, n in sorted(current.items()):
        if not readers.get(t):
            parts[t] = n  # read by partners and audit only, or a dead-letter topic: as today
            continue
        group = max(gate if (r == "consent" and t == GATE_TOPIC) else by_cpu[r] for r in readers[t])
        parts[t] = partner_partitions_for(group, organisations) if t.startswith("partner.") else partitions_for(group, current=n)
    return Sizing(
        name, referrals_per_s, cores, reps, parts, organisations, partition_replicas(parts, organisations, rf=a.replication_factor)
    )


POOL_SIZE = 10  # lotse_kit/db.py: create_pool(max_size=10) per service process
OTHER = "other (clients, consents, deadlines, notifications)"


def storage_for(ld: Load, a: Assumptions, sized: Sequence[Sized], retention: Mapping[str, float], sizing: Sizing) -> Storage:
    flow = [s.hop for s in sized]
    by_topic = events_by_topic(flow)
    bytes_by_topic: dict[str, float] = {}
    for s in sized:
        bytes_by_topic[s.hop.topic] = bytes_by_topic.get(s.hop.topic, 0.0) + s.kafka_bytes
    mean_record = sum(s.kafka_bytes for s in sized) / len(sized)
    audit_per_ref = sum(s.audit.total for s in sized)
    refs_per_day = ld.referrals_per_year / DAYS_PER_YEAR
    other_per_year = ld.clients * a.other_events_per_client_year
    records = {t: n * refs_per_day for t, n in by_topic.items()}
    sizes = {t: bytes_by_topic[t] / by_topic[t] for t in by_topic}
    # Events outside referrals: the size of a referral's average record, kept as long as the internal topics.
    records[OTHER], sizes[OTHER] = other_per_year / DAYS_PER_YEAR, mean_record
    topics = kafka_storage(records, sizes, {**retention, OTHER: 30.0}, rf=a.replication_factor)
    retained = sum(t.retained_bytes for t in topics)
    return Storage(
        topics=topics,
        kafka_retained=retained,
        kafka_written_per_year=sum(t.written_per_year for t in topics),
        brokers=brokers_needed(
            retained,
            disk_per_broker=a.broker_disk_bytes,
            rf=a.replication_factor,
            replicas=sizing.partition_replicas,
            replicas_per_broker=a.partition_replicas_per_broker,
        ),
        audit_bytes_per_year=ld.referrals_per_year * audit_per_ref + other_per_year * audit_per_ref / len(sized),
        # Pruned after PROCESSED_EVENTS_KEPT_DAYS (lotse_kit settings): a constant size, not a growth.
        processed_bytes_kept=ld.referrals_per_year
        * PROCESSED_EVENTS_KEPT_DAYS
        / 365
        * processed_rows_per_referral(flow)
        * processed_event_row_bytes(),
        business_bytes_per_year=ld.referrals_per_year * a.business_bytes_per_referral,
    )


@dataclass(frozen=True)
class Model:
    cpu: Cpu
    assumptions: Assumptions
    sized: list[Sized]
    retention: dict[str, float]
    scopes: list[ScopeResult]
    rates: list[Sizing]  # sustained rates to size for (issue 14's goal), beside the population's peaks
    serial_limit: float | None
    current_partitions: dict[str, int]
    network_source: str = "contracts/topics.py"

    @property
    def events_per_referral(self) -> int:
        return len(self.sized)


DESIGN_RATES = ((200.0, "issue 14 goal: 200 referrals/s sustained"),)


def evaluate(
    cpu: Cpu,
    a: Assumptions,
    sized: list[Sized],
    retention: dict[str, float],
    current: Mapping[str, int],
    *,
    network_source: str = "contracts/topics.py",
    design_rates: Sequence[tuple[float, str]] = DESIGN_RATES,
) -> Model:
    flow = [s.hop for s in sized]
    readers = readers_by_topic(flow)
    serial = serial_limit(cpu)
    scopes = []
    for scope in a.scopes:
        ld = load(a, scope, len(flow))
        # Events outside referrals cost, on average, what a referral's events cost (assumption).
        orgs = a.organisations_per_area * scope.areas
        sizing = size_for(scope.name, ld.peak_referrals_per_s, cpu, a, readers, current, serial, orgs)
        scopes.append(ScopeResult(ld, sizing, storage_for(ld, a, sized, retention, sizing)))
    # A design rate is sized for one network (one area's organisations), like the benchmark's.
    rates = [size_for(name, r, cpu, a, readers, current, serial, a.organisations_per_area) for r, name in design_rates]
    return Model(cpu, a, sized, retention, scopes, rates, serial, dict(current), network_source)


# ---------------------------------------------------------------- output
def _n(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def _bytes(v: float) -> str:
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if v >= size:
            return f"{v / size:,.1f} {unit}"
    return f"{v:,.0f} B"


def _rate(v: float) -> str:
    return f"{v:,.2f}" if v < 10 else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _link(source: str) -> str:
    """A results file as a link from docs/ when it lies in this checkout, else its path."""
    return f"[`{source}`](../{source})" if source and not Path(source).is_absolute() else f"`{source}`"


def one_machine(m: Model) -> list[str]:
    """What limits first on the measured machine: the goal, the CPU ceiling, the single-process ceilings."""
    c = m.cpu
    cpu_cap = c.cores * 1000.0 / c.system_ms if c.system_ms and c.cores else None
    per_process = sorted((1000.0 / c.per_component_ms[g], g) for g in SERVICES if c.per_component_ms[g] > 0)
    lines = [f"- Held the goal up to **{_n(c.highest_rate_holding_goal or 0)} referrals/s**"]
    if c.first_miss is not None:
        lines[0] += (
            f"; at {c.first_miss:g}/s offered the pipeline drained {c.delivered_at_first_miss:g}/s with "
            f"{c.cores_busy_at_first_miss:.2f} of {c.cores} cores busy"
            + (
                " (cores not saturated: a wall-time bound, such as a consumer handling one record at a time)"
                if m.serial_limit
                else " (CPU-bound)"
            )
        )
    lines[0] += "."
    if cpu_cap:
        lines.append(
            f"- CPU ceiling of the whole system on {c.cores} cores at {c.system_ms:.1f} ms per referral: "
            f"{cpu_cap:.1f} referrals/s ({cpu_cap * m.events_per_referral:,.0f} events/s)."
        )
    if per_process:
        rate, svc = per_process[0]
        lines.append(
            f"- First single-process ceiling (a Python process uses one core): **{svc}** at {rate:.0f} referrals/s "
            "(then " + ", ".join(f"{g} {r:.0f}/s" for r, g in per_process[1:]) + ")."
        )
    return lines


def render(m: Model) -> str:
    c, a = m.cpu, m.assumptions
    epr = m.events_per_referral
    flow = [s.hop for s in m.sized]
    sizings = [*(r.sizing for r in m.scopes), *m.rates]
    out: list[str] = []
    goal = "held the goal" if c.holds_goal else "did **not** hold the goal"
    out += [
        f"Generated by `python -m bench.scaling` from run `{c.run}` ({c.started.replace('T', ' ')[:16]} UTC, {c.cores} cores; "
        f"{_link(c.source)}), CPU taken at the step of **{c.offered_per_s:g} referrals/s**, which {goal}.",
        "",
        *one_machine(m),
        "",
        "**Measured CPU per referral** (ms, net of idle; PostgreSQL without the floor's backends, split by the service "
        "that caused it) and what one core of each component carries at that cost:",
        "",
        "| component | CPU ms / referral | CPU ms / event | referrals/s per core | events/s per core |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for g in COMPONENTS:
        ms = c.per_component_ms[g]
        r = per_core_rate(ms)
        extra = ""
        if g == "postgres" and c.postgres_by_client_ms:
            extra = " (" + ", ".join(f"{k} {v:.1f}" for k, v in sorted(c.postgres_by_client_ms.items())) + ")"
        out.append(
            f"| {g}{extra} | {ms:.2f} | {ms / epr:.2f} | {'-' if r is None else _rate(r)} | {'-' if r is None else _rate(r * epr)} |"
        )
    sys_r = per_core_rate(c.system_ms) or 0.0
    out.append(f"| **system** | **{c.system_ms:.2f}** | **{c.system_ms / epr:.2f}** | {_rate(sys_r)} | {_rate(sys_r * epr)} |")

    out += [
        "",
        f"**One referral causes {epr} records** ({reads_per_referral(flow)} fetches over all consumer groups, "
        f"{processed_rows_per_referral(flow)} `processed_events` rows). Record bytes: realistic events through `contracts.encode`, "
        "as uncompressed Kafka v2 records with a whole batch header each; audit: the entry `build_entry` makes of the record, "
        "and its estimated PostgreSQL footprint (heap row, five indexes, one tree node).",
        "",
        "| # | event | topic | written by | read by | value B | record B | audit entry B | audit in PostgreSQL B |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for i, s in enumerate(m.sized, 1):
        h = s.hop
        out.append(
            f"| {i} | `{h.event_type}` | `{h.topic}` | {h.producer} | {', '.join(h.readers)} | {s.value_bytes:,} | {s.kafka_bytes:,.0f} | "
            f"{s.audit.entry:,} | {s.audit.total:,.0f} |"
        )
    tot_k = sum(s.kafka_bytes for s in m.sized)
    tot_a = sum(s.audit.total for s in m.sized)
    out.append(f"| | **per referral** | | | | | **{tot_k:,.0f}** | | **{tot_a:,.0f}** |")

    out += [
        "",
        f"**Load.** Events per year = clients x (referrals per client x {epr} + other events per client); "
        f"peak = mean x {a.peak_factor:g}; referral-equivalents = events / {epr}.",
        "",
        "| scope | Jobcenter areas | clients | referrals / year | events / year | events / day | mean events/s | peak events/s "
        "| peak referral-equivalents/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for sc in m.scopes:
        ld = sc.load
        out.append(
            f"| {ld.scope} | {ld.areas} | {_n(ld.clients)} | {_n(ld.referrals_per_year)} | {_n(ld.events_per_year)} | "
            f"{_n(ld.events_per_day)} | {_rate(ld.events_per_s)} | {_rate(ld.peak_events_per_s)} | {_rate(ld.peak_referrals_per_s)} |"
        )

    out += [
        "",
        "**CPU and consumer replicas.** Cores at the peak, at the measured cost per referral; replicas per service: enough "
        f"processes to stay under {a.target_utilisation:.0%} of a core each, at least {a.min_replicas}"
        + (f"; consent also by the rate one process drained in the run ({m.serial_limit:g} referrals/s)" if m.serial_limit else "")
        + ". The last row sizes for issue 14's goal instead of a population.",
        "",
        "| sized for | referrals/s | " + " | ".join(COMPONENTS) + " | **all cores** | replicas " + " / ".join(SERVICES) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in COMPONENTS) + " | ---: | --- |",
    ]
    for z in sizings:
        out.append(
            f"| {z.name} | {_rate(z.referrals_per_s)} | "
            + " | ".join(f"{z.cores[g]:.2f}" for g in COMPONENTS)
            + f" | **{sum(z.cores.values()):.2f}** | "
            + " / ".join(str(z.replicas[s]) for s in SERVICES)
            + " |"
        )

    out += [
        "",
        "**Partitions per topic**: room for twice the largest Lotse consumer group reading the topic, never fewer than today; "
        "topics no service reads keep today's count. A partner topic exists once per organisation and Lotse's groups read "
        "all of them through one pattern subscription, so their partitions add up: each needs only its share. "
        f"Retention from {m.network_source}.",
        "",
        "| topic | retention (days) | today | " + " | ".join(z.name for z in sizings) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in sizings) + " |",
    ]
    today = m.current_partitions
    for t in sorted(m.retention):
        out.append(f"| `{t}` | {m.retention[t]:g} | {today.get(t, '-')} | " + " | ".join(str(z.partitions[t]) for z in sizings) + " |")
    rf = a.replication_factor
    out.append("| organisations (partner topics x this) | | | " + " | ".join(_n(z.organisations) for z in sizings) + " |")
    out.append(
        f"| **partition replicas on the cluster** (RF {rf}) | | | " + " | ".join(f"**{_n(z.partition_replicas)}**" for z in sizings) + " |"
    )
    out.append(
        "| same with today's counts | | | " + " | ".join(_n(partition_replicas(today, z.organisations, rf=rf)) for z in sizings) + " |"
    )

    out += [
        "",
        f"**Kafka storage** (replication factor {a.replication_factor}; retained = bytes per day x retention x RF; brokers: "
        f"at least {a.replication_factor}, more only if the retained data exceeds {_bytes(a.broker_disk_bytes)} per broker or the "
        f"partition replicas {_n(a.partition_replicas_per_broker)} per broker):",
        "",
        "| scope | records / day | MiB / day (one copy) | retained (all copies) | written / year (all copies) | mean kB/s in "
        "| partition replicas | brokers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for sc in m.scopes:
        st = sc.storage
        per_day = sum(t.bytes_per_day for t in st.topics)
        out.append(
            f"| {sc.load.scope} | {_n(sum(t.records_per_day for t in st.topics))} | {per_day / MiB:,.1f} | {_bytes(st.kafka_retained)} | "
            f"{_bytes(st.kafka_written_per_year)} | {per_day / SECONDS_PER_DAY / 1e3:,.2f} | {_n(sc.sizing.partition_replicas)} | "
            f"{st.brokers} |"
        )

    out += [
        "",
        f"**PostgreSQL size after a year** (the audit log is never pruned; `processed_events` keeps {PROCESSED_EVENTS_KEPT_DAYS:.0f} days; business rows "
        f"≈ {_bytes(a.business_bytes_per_referral)} per referral, an estimate) and **connections** (replicas x "
        f"(pool of {POOL_SIZE} + the relay's listener)):",
        "",
        "| scope | audit log / year | processed_events (kept) | business rows / year | **total after a year** | PostgreSQL cores at peak "
        "| connections |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for sc in m.scopes:
        st = sc.storage
        total = st.audit_bytes_per_year + st.processed_bytes_kept + st.business_bytes_per_year
        conns = sum(sc.sizing.replicas.values()) * (POOL_SIZE + 1)
        out.append(
            f"| {sc.load.scope} | {_bytes(st.audit_bytes_per_year)} | {_bytes(st.processed_bytes_kept)} | "
            f"{_bytes(st.business_bytes_per_year)} | **{_bytes(total)}** | {sc.sizing.cores['postgres']:.2f} | {conns} |"
        )

    out += [
        "",
        "**Assumptions**",
        "",
        "| figure | value | source |",
        "| --- | ---: | --- |",
        f"| clients per Jobcenter area | {_n(a.clients_per_area)} | {a.clients_source} |",
        f"| referrals per client and year | {a.referrals_per_client_year:g} | {a.referrals_source} |",
        f"| other events per client and year | {a.other_events_per_client_year:g} | {a.other_events_source} |",
        f"| peak factor (busiest second / mean) | {a.peak_factor:g} | {a.peak_source} |",
    ]
    for scope in a.scopes[1:]:
        out.append(f"| Jobcenter areas, {scope.name} | {scope.areas} | {scope.source} |")
    out.append(f"| organisations per area (each with its partner topics) | {a.organisations_per_area} | {a.organisations_source} |")
    out.append(
        f"| partition replicas per broker | {_n(a.partition_replicas_per_broker)} | guideline for ZooKeeper-era clusters "
        "(Confluent, 2018); KRaft allows more |"
    )
    out += [
        f"| CPU of an event outside referrals | system ms / {epr} | assumption: like the average event of a referral |",
        f"| consumer utilisation target | {a.target_utilisation:.0%} | assumption |",
        f"| minimum replicas per service | {a.min_replicas} | assumption: one may fail |",
        "| size and retention of the other events | a referral's mean record, 30 days | assumption; contracts/topics.py (internal topics) |",
    ]
    return "\n".join(out)


def replace_block(text: str, block: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> str:
    """`text` with everything between the markers (inclusive) replaced by begin + block + end."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"expected exactly one {begin} … {end} block")
    start, stop = text.index(begin), text.index(end) + len(end)
    return text[:start] + f"{begin}\n{block}\n{end}" + text[stop:]


def write_docs(block: str, path: Path) -> None:
    path.write_text(replace_block(path.read_text(), block))


def newest_result(directory: Path = RESULTS) -> Path:
    found = sorted(p for p in directory.glob("e2e-*.json") if re.fullmatch(r"e2e-\d{4}-\d\d-\d\dT\d{4}\.json", p.name))
    if not found:
        raise SystemExit(f"no e2e results in {directory}: run `make bench-e2e` first")
    return found[-1]


def network_topic_config(path: Path | None) -> tuple[dict[str, dict[str, str]], str]:
    if path is None:
        return {}, "contracts/topics.py"
    from lotse_kit.network import load_network

    net = load_network(path)
    return {k: dict(v) for k, v in net.kafka.topic_config.items()}, f"contracts/topics.py and `kafka.topic_config` of {path.name}"


def build(results: Path, rate: float | None, network: Path | None, assumptions: Assumptions | None = None) -> Model:
    result = json.loads(results.read_text())
    try:
        rel = str(results.resolve().relative_to(REPO))
    except ValueError:
        rel = str(results)
    cpu = measured_cpu(result, rate, source=rel)
    cfg, net_source = network_topic_config(network)
    return evaluate(cpu, assumptions or Assumptions(), size_flow(), retention_days(cfg), current_partitions(), network_source=net_source)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, help="an e2e results JSON (default: the newest bench/results/e2e-*.json)")
    ap.add_argument("--rate", type=float, help="the step to take the CPU from (default: the highest rate holding the goal)")
    ap.add_argument("--network", type=Path, help="a network file whose kafka.topic_config overrides the contracts' retention")
    ap.add_argument("--referrals-per-client", type=float, help=f"default {Assumptions.referrals_per_client_year:g}")
    ap.add_argument("--clients-per-area", type=int, help=f"default {Assumptions.clients_per_area:,}")
    ap.add_argument("--peak-factor", type=float, help=f"default {Assumptions.peak_factor:g}")
    ap.add_argument("--write-docs", action="store_true", help="replace the generated block of docs/scaling.md")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    a = Assumptions()
    if args.referrals_per_client is not None:
        a = replace(a, referrals_per_client_year=args.referrals_per_client, referrals_source="given with --referrals-per-client")
    if args.clients_per_area is not None:
        a = replace(a, clients_per_area=args.clients_per_area, clients_source="given with --clients-per-area")
    if args.peak_factor is not None:
        a = replace(a, peak_factor=args.peak_factor, peak_source="given with --peak-factor")
    model = build(args.results or newest_result(), args.rate, args.network, a)
    text = render(model)
    print(text)
    if args.write_docs:
        write_docs(text, DOC)
        print(f"\nwritten into {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
