"""The entry builder's one-pass path for valid events gives exactly the entry of the general path, for
realistic records and for hostile variations of them (property test); an entry's content is pinned."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contracts import encode, new_event, topics
from contracts.events import SCHEMAS, ConsentGranted, DisclosureMade, ReferralAccepted, ReferralSent
from services.audit.domain import entries as E
from services.audit.domain.entries import Record, build_entry, build_entry_general
from services.audit.tests.conftest import ORG, PARTNER, partner_referral
from services.audit.tests.test_ingest import disclosure_requested, registered

NS = "t1."
T0 = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
CLIENT = uuid.UUID("7d3c1a52-5b7e-4a8e-9d0c-2f6b1e4a9c31")


def _consent(client_id: uuid.UUID):
    data = ConsentGranted(
        client_id=client_id,
        consent_id=uuid.uuid4(),
        collecting_org=ORG,
        recipients=[PARTNER, "diakonie-paderborn"],
        purposes=["referral"],
        categories=["identity", "contact"],
        legal_basis=["GDPR Art. 6(1)(a)"],
        form="paper",
        information_language="uk",
        granted_at=T0,
    )
    return new_event(data, source="/lotse/consent", acting_org=ORG)


def _realistic() -> list[tuple[str, Any]]:
    """(logical topic, encoded record) of the kinds the network produces, current versions and older ones."""
    c = CLIENT
    sent = ReferralSent(
        client_id=c,
        referral_id=uuid.uuid4(),
        from_org=ORG,
        to_org=PARTNER,
        service="migrationsberatung",
        need="language_course",
        requested_categories=["identity", "needs"],
        sent_at=T0,
    )
    accepted = ReferralAccepted(client_id=c, referral_id=uuid.uuid4(), to_org=PARTNER, from_org=ORG, accepted_at=T0)
    made = DisclosureMade(
        client_id=c,
        request_id=uuid.uuid4(),
        recipient=PARTNER,
        purpose="referral",
        categories=["identity"],
        consent_id=uuid.uuid4(),
        payload_sha256="0" * 64,
        disclosed_at=T0,
    )
    return [
        (topics.CLIENTS, encode(registered(c))),
        (topics.REFERRALS, encode(new_event(sent, source="/lotse/intake", acting_org=ORG, time=T0))),
        (topics.partner_outbox(PARTNER), encode(new_event(accepted, source=f"/partners/{PARTNER}", time=T0))),
        (topics.CONSENTS, encode(_consent(c))),
        (topics.DISCLOSURES, encode(new_event(made, source="/lotse/consent", acting_org=ORG))),
        (topics.DISCLOSURE_REQUESTS, encode(disclosure_requested(c))),  # v1: upcast, general path
        (topics.partner_inbox(PARTNER), encode(partner_referral(c, uuid.uuid4()))),  # personal data topic
    ]


REALISTIC = _realistic()


def fields(entry: E.Entry) -> tuple[Any, ...]:
    return dataclasses.astuple(entry)


def same_entry(record: Record) -> None:
    assert fields(build_entry(record, namespace=NS)) == fields(build_entry_general(record, namespace=NS))


def record_of(topic: str, rec: Any, offset: int = 7) -> Record:
    return Record(NS + topic, 2, offset, int(T0.timestamp() * 1000), rec.key, rec.value, list(rec.headers))


def test_realistic_records_take_the_one_pass_path_and_give_the_general_paths_entries():
    one_pass = 0
    for topic, rec in REALISTIC:
        r = record_of(topic, rec)
        same_entry(r)
        for dlq in (record_of(topic + topics.DLQ_SUFFIX, rec), _with_dlq_headers(r)):
            same_entry(dlq)
        headers, _ = E._read_headers(r.headers)
        if E._valid_event_entry(r, E._topic_facts(r.topic, NS), r.value or b"", headers) is not None:
            one_pass += 1
    # All but the v1 disclosure request (upcast) and the clear partner referral v1 (its own schema, read as is).
    assert one_pass >= len(REALISTIC) - 1


def _with_dlq_headers(r: Record) -> Record:
    dlq = [
        ("lotse_dlq_error_kind", b"handler-failed"),
        ("lotse_dlq_reason", b"KeyError: Olena"),
        ("lotse_dlq_original_topic", r.topic.encode()),
        ("lotse_dlq_original_offset", b"3"),
    ]
    return dataclasses.replace(r, topic=r.topic + topics.DLQ_SUFFIX, headers=[*r.headers, *dlq])


def test_an_entrys_content_is_unchanged():
    """Pinned bytes: the entry of this record must never change (logs written before must still verify)."""
    sent = ReferralSent(
        client_id=CLIENT,
        referral_id=uuid.UUID("0b6f7f6e-3f43-4c51-a3a5-7d1f0c9e2b11"),
        from_org=ORG,
        to_org=PARTNER,
        service="migrationsberatung",
        need="language_course",
        requested_categories=["identity", "needs"],
        sent_at=T0,
    )
    env = new_event(sent, source="/lotse/intake", acting_org=ORG, time=T0, event_id=uuid.UUID("5a0b3c0e-8f7d-4e5b-9c2a-1d3e4f5a6b7c"))
    rec = record_of(topics.REFERRALS, encode(env))
    for build in (build_entry, build_entry_general):
        e = build(rec, namespace=NS)
        assert e.entry == PINNED_ENTRY
        assert e.leaf_hash.hex() == PINNED_LEAF_HASH


PINNED_ENTRY = (
    b'{"acting_org":"jobcenter-paderborn","ce":{"dataschema":"urn:lotse:schema:lotse.referral.sent.v1",'
    b'"ext_actingorg":"jobcenter-paderborn","id":"5a0b3c0e-8f7d-4e5b-9c2a-1d3e4f5a6b7c","source":"/lotse/intake",'
    b'"specversion":"1.0","subject":"7d3c1a52-5b7e-4a8e-9d0c-2f6b1e4a9c31","time":"2026-11-30T12:00:00.123456Z",'
    b'"type":"lotse.referral.sent"},"client_id":"7d3c1a52-5b7e-4a8e-9d0c-2f6b1e4a9c31",'
    b'"data":{"client_id":"7d3c1a52-5b7e-4a8e-9d0c-2f6b1e4a9c31","referral_id":"0b6f7f6e-3f43-4c51-a3a5-7d1f0c9e2b11",'
    b'"from_org":"jobcenter-paderborn","to_org":"caritas-paderborn","service":"migrationsberatung","need":"language_course",'
    b'"requested_categories":["identity","needs"],"answer_due":null,"sent_at":"2026-11-30T12:00:00.123456Z"},'
    b'"data_sha256":"042b5d9e4da533c9b6ac297f5ba5f59d9309af4a0bf525603db982a47b93e636","data_size":325,"key":"7d3c1a52-5b7e-4a8e-9d0c-2f6b1e4a9c31","kind":"event",'
    b'"position":{"offset":7,"partition":2,"topic":"t1.lotse.referrals.v1"},"record_timestamp_ms":1796040000123,'
    b'"topic":"lotse.referrals.v1","v":1}'
)
PINNED_LEAF_HASH = "d1522aa70e279d4b6a4a561a60e9fce3f640c3e7739ddcd5782b10c4a14acb6d"


# ------------------------------------------------------------------ hostile variations
UUID_TEXTS = [
    str(CLIENT),
    str(CLIENT).upper(),
    "{" + str(CLIENT) + "}",
    "urn:uuid:" + str(CLIENT),
    str(CLIENT).replace("-", ""),
    str(CLIENT) + "\n",
    str(uuid.uuid4()),
    "",
    "not-a-uuid",
    "\x00",
]
TIMES = [
    "2026-11-30T12:00:00Z",
    "2026-11-30T12:00:00.123456+00:00",
    "2026-11-30T12:00:00",  # no offset
    "2026-11-30",
    "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+14:00",
    "1899-12-31T23:00:00+00:00",
    "yesterday",
    "",
]
HEADER_CHOICES: dict[str, list[str]] = {
    "ce_specversion": ["1.0", "0.3", "", "1.0 "],
    "ce_id": UUID_TEXTS,
    "ce_subject": UUID_TEXTS,
    "ce_time": TIMES,
    "ce_source": ["/lotse/intake", f"/partners/{PARTNER}", "/partners/X", "/lotse/intake\n", "bogus", ""],
    "ce_type": ["lotse.referral.sent", "lotse.client.registered", "lotse.nothing", "", "lotse.referral.sent\x00"],
    "ce_dataschema": [*sorted(SCHEMAS)[:6], "urn:lotse:schema:nothing", ""],
    "content-type": ["application/json", "application/json; charset=utf-8", " application/json", "text/plain", ""],
    "ce_actingorg": [ORG, PARTNER, "Not An Org", "", "a"],
    "lotse_dlq_error_kind": ["schema-invalid", "handler-failed"],
    "lotse_dlq_reason": ["", "KeyError: Olena", "\u00e9\n"],
}
uuid_texts = st.sampled_from(UUID_TEXTS)
times = st.sampled_from(TIMES)
HEADER_VALUES: dict[str, Any] = {name: st.sampled_from(values) for name, values in HEADER_CHOICES.items()}
HEADER_VALUES["lotse_dlq_reason"] = st.text(max_size=20)
header_names = st.sampled_from(sorted(HEADER_VALUES)) | st.text(max_size=12)


@st.composite
def header_edits(draw: st.DrawFn, headers: list[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
    out = list(headers)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "set", "bytes", "none", "upper", "add"]))
        name = draw(header_names)
        if op == "drop" and out:
            out.pop(draw(st.integers(0, len(out) - 1)))
            continue
        if op == "upper" and out:
            i = draw(st.integers(0, len(out) - 1))
            out[i] = (out[i][0].upper(), out[i][1])
            continue
        if op == "bytes":
            value: bytes | None = draw(st.binary(max_size=12) | st.just(b"\xff\xfe"))
        elif op == "none":
            value = None
        else:
            strategy = HEADER_VALUES.get(name, st.text(max_size=12))
            value = draw(strategy).encode()
        if op == "add" or name.startswith("lotse_dlq_"):
            out.append((name, value))
        else:
            out = [(k, v) for k, v in out if k.lower() != name.lower()] + [(name, value)]
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def value_edits(draw: st.DrawFn, value: bytes) -> bytes | None:
    op = draw(st.sampled_from(["keep", "keep", "field", "extra", "drop", "bytes", "none", "empty", "truncate", "json"]))
    if op == "keep":
        return value
    if op == "none":
        return None
    if op == "empty":
        return b""
    if op == "bytes":
        return draw(st.binary(max_size=40))
    if op == "truncate":
        return value[: draw(st.integers(0, max(0, len(value) - 1)))]
    if op == "json":
        return json.dumps(draw(json_values)).encode()
    data = json.loads(value)
    key = draw(st.sampled_from(sorted(data)))
    if op == "field":
        data[key] = draw(json_values | uuid_texts | times)
    elif op == "extra":
        data[draw(st.text(max_size=8))] = draw(json_values)
    else:
        del data[key]
    return json.dumps(data).encode()


@st.composite
def hostile_records(draw: st.DrawFn) -> Record:
    topic, rec = draw(st.sampled_from(REALISTIC))
    topic = draw(st.sampled_from([topic, topic + topics.DLQ_SUFFIX, topics.partner_inbox("diakonie-paderborn"), topics.REFERRALS]))
    key = draw(
        st.sampled_from([rec.key, None, b"\xff", str(CLIENT).upper().encode(), (str(CLIENT) + "\n").encode()]) | st.binary(max_size=8)
    )
    return Record(
        draw(st.sampled_from([NS + topic, topic, "other." + topic])),
        draw(st.integers(0, 11)),
        draw(st.integers(0, 2**40)),
        draw(st.sampled_from([int(T0.timestamp() * 1000), 0, -1, 2**62]) | st.integers(-(2**63), 2**63 - 1)),
        key,
        draw(value_edits(rec.value)),
        draw(header_edits(list(rec.headers))),
    )


def test_each_attribute_changed_alone_gives_the_same_entry_on_both_paths():
    """Every realistic record with one header replaced (or dropped, or added) at a time: a grid, so that
    the cases one broken check would let through are all there, not left to chance."""
    cases = 0
    for topic, rec in REALISTIC:
        base = record_of(topic, rec)
        for name, values in HEADER_CHOICES.items():
            others = [(k, v) for k, v in base.headers if k != name]
            for value in [*values, None]:
                headers = others if value is None else [*others, (name, value.encode())]
                same_entry(dataclasses.replace(base, headers=headers))
                cases += 1
            same_entry(dataclasses.replace(base, headers=[*others, (name.upper(), (values[0]).encode())]))
    assert cases > 300


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(record=hostile_records())
@example(record=record_of(topics.REFERRALS, REALISTIC[1][1]))
def test_hostile_records_give_the_same_entry_on_both_paths(record):
    same_entry(record)
