"""Upcasting: records written as lotse.client.registered v1 decode to the v2 model, on both decode paths."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from contracts import EVENTS, SCHEMAS, DecodeError, Envelope, decode, decode_raw, encode, new_event, topics, validate
from contracts.events import PREVIOUS_VERSIONS, ClientRegistered, ClientRegisteredV1, ResidenceStatus, current_of
from contracts.upcasting import UPCASTERS, upcaster
from contracts.vocab import Need, ResidenceTitle
from lotse_kit.consumer import EventConsumer
from lotse_kit.kafka import ensure_topics, make_broker
from tests.kafka_helpers import produce_raw, read_topic

ORG = "caritas-paderborn"
V1 = "urn:lotse:schema:lotse.client.registered.v1"
V2 = "urn:lotse:schema:lotse.client.registered.v2"


def v1_record(client_id: uuid.UUID, **data: Any) -> tuple[list[tuple[str, bytes]], bytes]:
    """A v1 record as an intake of the v1 era wrote it: hand-made headers and JSON bytes, no v1 model involved."""
    body = {
        "client_id": str(client_id),
        "registering_org": ORG,
        "responsible_org": ORG,
        "preferred_language": "uk",
        "languages": ["uk", "ru"],
        "needs": ["integration_course"],
        "residence_title": "aufenthg_24",
        "residence_valid_until": "2027-03-04",
        "legal_regime": "sgb_ii",
        "registered_at": "2026-01-15T09:30:00Z",
        **data,
    }
    headers = {
        "ce_specversion": "1.0",
        "ce_id": str(uuid.uuid4()),
        "ce_source": "/lotse/intake",
        "ce_type": "lotse.client.registered",
        "ce_time": "2026-01-15T09:30:00Z",
        "ce_subject": str(client_id),
        "ce_dataschema": V1,
        "ce_actingorg": ORG,
        "content-type": "application/json",
    }
    return [(k, v.encode()) for k, v in headers.items()], json.dumps(body).encode()


def both_paths(headers: list[tuple[str, bytes]], value: bytes) -> Envelope[Any]:
    """Decodes one-pass and step by step, asserts they agree, returns the envelope."""
    one_pass = decode(headers, value)
    stepwise = validate(decode_raw(headers, value))
    assert one_pass == stepwise
    return one_pass


def decode_error(headers: list[tuple[str, bytes]], value: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as one_pass:
        decode(headers, value)
    with pytest.raises(DecodeError) as stepwise:
        validate(decode_raw(headers, value))
    assert (one_pass.value.kind, one_pass.value.reason) == (stepwise.value.kind, stepwise.value.reason)
    return one_pass.value


def test_v2_is_current_and_v1_is_still_decodable():
    assert EVENTS["lotse.client.registered"].version == 2
    assert EVENTS["lotse.client.registered"].model is ClientRegistered
    assert SCHEMAS[V1].model is ClientRegisteredV1 and SCHEMAS[V1].topic == topics.CLIENTS
    assert current_of(SCHEMAS[V1]) is EVENTS["lotse.client.registered"]


def test_every_older_version_has_a_chain_of_upcasters_to_the_current_one():
    for spec in PREVIOUS_VERSIONS:
        current = EVENTS[spec.type]
        missing = [v for v in range(spec.version, current.version) if (spec.type, v) not in UPCASTERS]
        assert not missing, f"{spec.schema_id}: no upcaster from version(s) {missing}"


def test_a_v1_record_decodes_to_the_v2_model_with_the_upcast_values():
    client_id = uuid.uuid4()
    env = both_paths(*v1_record(client_id))
    assert isinstance(env.data, ClientRegistered)
    assert env.dataschema == V2 and env.type == "lotse.client.registered"
    assert env.data.residence == ResidenceStatus(title=ResidenceTitle.TEMPORARY_PROTECTION_24, valid_until=date(2027, 3, 4))
    assert not hasattr(env.data, "residence_title")
    # Everything else is carried over unchanged.
    assert env.data.client_id == client_id and env.subject == str(client_id) and env.acting_org == ORG
    assert env.data.languages == ["uk", "ru"] and env.data.needs == [Need.INTEGRATION_COURSE]
    assert env.data.registered_at == datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("v1_fields", "residence"),
    [
        ({"residence_title": None, "residence_valid_until": None}, None),
        ({"residence_title": "duldung_60a", "residence_valid_until": None}, ResidenceStatus(title=ResidenceTitle.DULDUNG_60A)),
    ],
)
def test_a_v1_record_without_a_full_residence_status(v1_fields, residence):
    env = both_paths(*v1_record(uuid.uuid4(), **v1_fields))
    assert env.data.residence == residence


def test_a_v1_record_from_the_v1_model_decodes_like_the_hand_made_one():
    client_id = uuid.uuid4()
    old = ClientRegisteredV1(
        client_id=client_id,
        registering_org=ORG,
        responsible_org=ORG,
        preferred_language="ar",
        residence_title=ResidenceTitle.CHANCEN_104C,
        residence_valid_until=date(2027, 8, 31),
        registered_at=datetime.now(UTC),
    )
    rec = encode(new_event(old, source="/lotse/intake"))
    assert rec.headers_dict()["ce_dataschema"] == V1
    env = both_paths(rec.headers, rec.value)
    assert env.data.residence == ResidenceStatus(title=ResidenceTitle.CHANCEN_104C, valid_until=date(2027, 8, 31))


def test_a_v2_record_decodes_unchanged():
    data = ClientRegistered(
        client_id=uuid.uuid4(),
        registering_org=ORG,
        responsible_org=ORG,
        preferred_language="fa",
        residence=ResidenceStatus(title=ResidenceTitle.REFUGEE_25_2, valid_until=date(2028, 1, 1)),
        registered_at=datetime.now(UTC),
    )
    rec = encode(new_event(data, source="/lotse/intake"))
    assert rec.headers_dict()["ce_dataschema"] == V2
    env = both_paths(rec.headers, rec.value)
    assert env.data == data and env.dataschema == V2


def test_an_invalid_v1_record_is_reported_against_the_v1_schema():
    err = decode_error(*v1_record(uuid.uuid4(), residence_title="permanent_vacation"))
    assert err.kind == DecodeError.SCHEMA_INVALID
    assert err.reason.startswith("residence_title:")


def _replace_upcaster(monkeypatch: pytest.MonkeyPatch, fn: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
    key = ("lotse.client.registered", 1)
    if fn is None:
        monkeypatch.delitem(UPCASTERS, key)
    else:
        monkeypatch.setitem(UPCASTERS, key, fn)


def test_an_upcaster_that_raises_is_a_schema_invalid_decode_error(monkeypatch):
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("residence_title")

    _replace_upcaster(monkeypatch, broken)
    err = decode_error(*v1_record(uuid.uuid4()))
    assert err.kind == DecodeError.SCHEMA_INVALID
    assert err.reason == "upcasting lotse.client.registered v1 to v2 failed: KeyError('residence_title')"


def test_an_upcaster_whose_result_the_current_model_rejects_is_schema_invalid(monkeypatch):
    _replace_upcaster(monkeypatch, lambda data: {**data, "residence": {"title": "no such title"}})
    err = decode_error(*v1_record(uuid.uuid4()))
    assert err.kind == DecodeError.SCHEMA_INVALID
    assert err.reason.startswith("after upcasting v1 to v2: residence.title:")


def test_without_the_upcaster_a_v1_record_is_not_handed_over_as_v1(monkeypatch):
    _replace_upcaster(monkeypatch, None)
    err = decode_error(*v1_record(uuid.uuid4()))
    assert err.kind == DecodeError.SCHEMA_INVALID
    assert err.reason == "no upcaster from lotse.client.registered v1 to v2"


def test_an_upcaster_is_registered_once_per_version():
    with pytest.raises(ValueError, match=r"lotse.client.registered v1 already has an upcaster: _client_registered_v1_to_v2"):
        upcaster("lotse.client.registered", from_version=1)(lambda data: data)


async def test_a_record_whose_upcaster_fails_is_dead_lettered_and_the_consumer_carries_on(kafka_bootstrap, unique, monkeypatch):
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("upcaster bug")

    _replace_upcaster(monkeypatch, broken)
    topic = f"test.upcast-{unique}.v1"
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic, partitions=1), topics.dlq_spec(topic)])
    records = [v1_record(uuid.uuid4()) for _ in range(2)]
    await produce_raw(kafka_bootstrap, topic, [(None, value, headers) for headers, value in records])

    def no_database() -> Any:
        raise AssertionError("a record that does not decode never reaches a handler's transaction")

    async def handler(env: Envelope[Any], conn: Any, deps: Any) -> None:
        raise AssertionError("a record that does not decode never reaches its handler")

    consumer = EventConsumer(
        service="contracts-test",
        name=f"upcast-{unique}",
        pool_getter=no_database,
        bootstrap=kafka_bootstrap,
        handlers={"lotse.client.registered": handler},
        topics=[topic],
    )
    broker = make_broker(kafka_bootstrap, "contracts-test")
    consumer.register(broker)
    await broker.start()
    try:
        dead = await read_topic(kafka_bootstrap, topics.dlq(topic), until=2)
    finally:
        await broker.stop()
    assert [dict(r.headers)["ce_id"] for r in dead] == [dict(h)["ce_id"] for h, _ in records]  # both: it carried on
    for r in dead:
        h = {k: v.decode() for k, v in r.headers}
        assert h["lotse_dlq_error_kind"] == DecodeError.SCHEMA_INVALID
        assert h["lotse_dlq_reason"] == "upcasting lotse.client.registered v1 to v2 failed: RuntimeError('upcaster bug')"
        assert h["ce_dataschema"] == V1  # the record is dead-lettered unchanged, as written
