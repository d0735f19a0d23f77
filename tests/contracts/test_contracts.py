"""The contracts: envelope, registry, exports, and what may travel where."""

from __future__ import annotations

import ast
import json
import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cloudevents.core.bindings import kafka as ce_kafka

from contracts import (
    EVENTS,
    PARTNER_REFERRAL,
    SCHEMAS,
    DecodeError,
    decode,
    decode_raw,
    encode,
    events,
    new_event,
    sealed,
    topics,
    validate,
)
from contracts.events import (
    PARTNER_ACK_TYPES,
    ClientRegistered,
    Contact,
    DisclosureRequested,
    Identity,
    PartnerReferral,
    PartnerReferralV2,
    PersonalData,
    ReferralNotes,
    Sealed,
    SealedContent,
)
from contracts.export import stale_files
from contracts.vocab import DataCategory, Need
from lotse_kit.kafka import ensure_topics
from tests.kafka_helpers import produce_raw, read_topic


def client_registered() -> ClientRegistered:
    return ClientRegistered(
        client_id=uuid.uuid4(),
        registering_org="caritas-paderborn",
        responsible_org="caritas-paderborn",
        preferred_language="ar",
        languages=["ar", "de"],
        needs=[Need.LANGUAGE_COURSE],
        registered_at=datetime.now(UTC),
    )


def test_committed_exports_are_up_to_date():
    assert stale_files() == [], "run `make contracts` and commit the result"


def test_every_event_has_an_explicit_name_and_a_topic():
    """Type names are written out as literals in the registry, never computed from a class or module name,
    so renaming or moving a model class cannot change what goes on the wire."""
    tree = ast.parse(Path(events.__file__).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "EventSpec"]
    computed = [ast.unparse(c.args[0]) for c in calls if not (isinstance(c.args[0], ast.Constant) and isinstance(c.args[0].value, str))]
    assert computed == [], f"EventSpec type names computed instead of written out: {computed}"
    literals = [c.args[0].value for c in calls]
    # Every registered contract comes from one of those calls (none is built elsewhere with a computed name).
    assert len(calls) == len(SCHEMAS) and {s.type for s in SCHEMAS.values()} == set(literals)
    for name, spec in EVENTS.items():
        assert re.fullmatch(r"lotse\.[a-z]+\.[a-z_]+", name), name
        assert spec.type == name
        # A topic, or None for what only travels on partner topics (acknowledgements on a partner's outbox).
        assert spec.topic is not None or name in PARTNER_ACK_TYPES


def test_personal_data_topics():
    assert topics.carries_personal_data(EVENTS["lotse.disclosure.requested"].topic)
    assert topics.carries_personal_data(topics.partner_inbox("awo-paderborn"))
    assert not topics.carries_personal_data(topics.partner_outbox("awo-paderborn"))
    assert not any(topics.carries_personal_data(t) for t in topics.INTERNAL_TOPICS)


def test_encode_decode_round_trip():
    data = client_registered()
    env = new_event(data, source="/lotse/intake", acting_org="caritas-paderborn")
    rec = encode(env)
    h = rec.headers_dict()
    assert rec.key == str(data.client_id).encode()
    assert h["ce_specversion"] == "1.0" and h["ce_type"] == "lotse.client.registered"
    assert h["ce_subject"] == str(data.client_id) and h["content-type"] == "application/json"
    assert h["ce_dataschema"] == "urn:lotse:schema:lotse.client.registered.v2"
    assert uuid.UUID(h["ce_id"]) == env.id
    assert datetime.fromisoformat(h["ce_time"]).tzinfo is not None
    back = decode(rec.headers, rec.value)
    assert back.data == data and back.acting_org == "caritas-paderborn" and back.source == "/lotse/intake"


def test_tolerant_reader_ignores_unknown_fields():
    rec = encode(new_event(client_registered(), source="/lotse/intake"))
    value = json.loads(rec.value)
    value["added_in_a_later_minor_version"] = {"x": 1}
    assert decode(rec.headers, json.dumps(value).encode()).data.preferred_language == "ar"


@pytest.mark.parametrize(
    ("mutate", "kind", "message"),
    [
        (lambda h, v: ({**h, "ce_specversion": b"0.3"}, v), DecodeError.UNDECODABLE, "specversion"),
        (lambda h, v: ({k: x for k, x in h.items() if k != "ce_id"}, v), DecodeError.UNDECODABLE, "ce_id"),
        (lambda h, v: ({**h, "ce_id": b"not-a-uuid"}, v), DecodeError.UNDECODABLE, "UUID"),
        (lambda h, v: ({**h, "content-type": b"text/plain"}, v), DecodeError.UNDECODABLE, "content-type"),
        (lambda h, v: ({**h, "ce_source": b"somewhere"}, v), DecodeError.UNDECODABLE, "ce_source"),
        (lambda h, v: ({**h, "ce_time": b"yesterday"}, v), DecodeError.UNDECODABLE, "ce_time"),
        (lambda h, v: (h, b"{not json"), DecodeError.UNDECODABLE, "JSON"),
        (lambda h, v: ({**h, "ce_type": b"lotse.client.teleported"}, v), DecodeError.UNKNOWN_TYPE, "no contract"),
        (lambda h, v: (h, v.replace(b'"ar"', b"42", 1)), DecodeError.SCHEMA_INVALID, "preferred_language"),
        (lambda h, v: ({**h, "ce_subject": str(uuid.uuid4()).encode()}, v), DecodeError.SCHEMA_INVALID, "ce_subject"),
        # Two faults: the step-by-step order decides which one is reported.
        (lambda h, v: ({**h, "ce_type": b"lotse.client.teleported"}, b"{not json"), DecodeError.UNDECODABLE, "JSON"),
        (lambda h, v: (h, b""), DecodeError.SCHEMA_INVALID, "(root)"),
    ],
)
def test_decode_rejects_bad_records_with_a_reason(mutate, kind, message):
    rec = encode(new_event(client_registered(), source="/lotse/intake"))
    headers, value = mutate(dict(rec.headers), rec.value)
    with pytest.raises(DecodeError) as err:
        decode(list(headers.items()), value)
    assert err.value.kind == kind
    assert message in err.value.reason
    # The one-pass decoder reports exactly what the step-by-step definition does.
    with pytest.raises(DecodeError) as stepwise:
        validate(decode_raw(list(headers.items()), value))
    assert (stepwise.value.kind, stepwise.value.reason) == (err.value.kind, err.value.reason)


def test_partner_referral_v2_seals_exactly_the_consented_categories_to_the_recipient():
    full = PersonalData(
        identity=Identity(given_name="Olena", family_name="Koval", date_of_birth=date(1990, 5, 1)),
        contact=Contact(email="olena@example.org", phone="+49 5251 000000"),
        needs=[Need.INTEGRATION_COURSE],
        health="diabetes",
    )
    allowed = full.restricted_to({DataCategory.IDENTITY, DataCategory.NEEDS})
    assert allowed.categories() == [DataCategory.IDENTITY, DataCategory.NEEDS]
    assert allowed.contact is None and allowed.health is None
    awo_private, awo_public = sealed.generate_key("awo-2026", "enc")
    other_private, _ = sealed.generate_key("awo-2026", "enc")  # same kid, another key: must not open it
    content = SealedContent(personal_data=allowed, notes=ReferralNotes(reason="Sprachkurs"))
    data = PartnerReferralV2(
        client_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org="jobcenter-paderborn",
        to_org="awo-paderborn",
        service="migration-counselling",
        consent_id=uuid.uuid4(),
        categories=allowed.categories(),
        sealed=Sealed(jwe=sealed.seal(content.model_dump(mode="json"), awo_public), kid=awo_public.kid),
        sent_at=datetime.now(UTC),
    )
    rec = encode(new_event(data, source="/lotse/consent", spec=PARTNER_REFERRAL))
    assert rec.headers_dict()["ce_type"] == "lotse.referral.sent"
    assert rec.headers_dict()["ce_dataschema"] == "urn:lotse:schema:lotse.referral.sent.partner.v2"
    assert b"Koval" not in rec.value and b"Sprachkurs" not in rec.value  # only ciphertext on the topic
    back = decode(rec.headers, rec.value)
    assert isinstance(back.data, PartnerReferralV2)
    opened = SealedContent.model_validate(sealed.unseal(back.data.sealed.jwe, [awo_private]))
    assert opened.personal_data == allowed and opened.notes.reason == "Sprachkurs"
    with pytest.raises(sealed.SealedError):
        sealed.unseal(back.data.sealed.jwe, [other_private])
    with pytest.raises(sealed.SealedError):
        sealed.unseal(back.data.sealed.jwe[:-8] + "AAAAAAAA", [awo_private])  # tampered tag


def test_v1_partner_referrals_in_clear_still_decode_until_the_inbox_retention_drops_them():
    data = PartnerReferral(
        client_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org="jobcenter-paderborn",
        to_org="awo-paderborn",
        service="migration-counselling",
        consent_id=uuid.uuid4(),
        categories=[DataCategory.NEEDS],
        personal_data=PersonalData(needs=[Need.INTEGRATION_COURSE]),
        sent_at=datetime.now(UTC),
    )
    rec = encode(new_event(data, source="/lotse/consent", spec=events.PARTNER_REFERRAL_V1))
    assert isinstance(decode(rec.headers, rec.value).data, PartnerReferral)


def test_a_v1_disclosure_request_is_upcast_to_v2_without_its_personal_data():
    v1 = events.DisclosureRequestedV1(
        client_id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org="jobcenter-paderborn",
        to_org="awo-paderborn",
        service="x",
        categories=[DataCategory.CONTACT],
        reason="Koval needs help",
        personal_data=PersonalData(contact=Contact(email="olena@example.org")),
        requested_at=datetime.now(UTC),
    )
    old = next(s for s in events.PREVIOUS_VERSIONS if s.model is events.DisclosureRequestedV1)
    rec = encode(new_event(v1, source="/lotse/intake", spec=old))
    back = decode(rec.headers, rec.value)
    assert isinstance(back.data, DisclosureRequested) and back.dataschema.endswith("lotse.disclosure.requested.v2")
    assert "olena" not in back.data.model_dump_json() and "Koval" not in back.data.model_dump_json()
    assert back.data.categories == [DataCategory.CONTACT] and back.data.request_id == v1.request_id


def test_acknowledgement_signatures_verify_only_for_the_signing_partner_and_event():
    private, public = sealed.generate_key("caritas-sig-1", "sig")
    other_private, _ = sealed.generate_key("caritas-sig-1", "sig")
    client, event = str(uuid.uuid4()), str(uuid.uuid4())
    sig = sealed.sign_ack(client, event, private)
    assert sealed.verify_ack(sig, client, event, [public]) == "caritas-sig-1"
    for bad in (
        lambda: sealed.verify_ack(sig, client, str(uuid.uuid4()), [public]),  # another event
        lambda: sealed.verify_ack(sealed.sign_ack(client, event, other_private), client, event, [public]),  # another key
        lambda: sealed.verify_ack(sig, client, event, []),  # no key registered
        lambda: sealed.verify_ack("eyJhbGciOiJub25lIn0.e30.", client, event, [public]),  # alg none
    ):
        with pytest.raises(sealed.SealedError):
            bad()


async def test_cloudevents_sdk_reads_our_records_from_kafka(kafka_bootstrap, unique):
    topic = f"test.contracts-{unique}.v1"
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic, partitions=1)])
    env = new_event(client_registered(), source="/lotse/intake", acting_org="caritas-paderborn")
    rec = encode(env)
    await produce_raw(kafka_bootstrap, topic, [(rec.key, rec.value, rec.headers)])
    [got] = await read_topic(kafka_bootstrap, topic)

    message = ce_kafka.KafkaMessage(headers=dict(got.headers), key=got.key, value=got.value)
    event = ce_kafka.from_binary_event(message)
    assert event.get_specversion() == "1.0"
    assert event.get_id() == str(env.id)
    assert event.get_type() == "lotse.client.registered"
    assert event.get_source() == "/lotse/intake"
    assert event.get_subject() == str(env.data.client_id)
    assert event.get_dataschema() == env.dataschema
    assert event.get_datacontenttype() == "application/json"
    assert event.get_time() == env.time
    assert event.get_extension("actingorg") == "caritas-paderborn"
    assert event.get_data()["preferred_language"] == "ar"


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-12:00", "1899-12-31T00:00:00+00:00"])
def test_a_ce_time_outside_the_supported_range_is_undecodable(when):
    """PostgreSQL cannot store such a time (or Python cannot convert it to UTC): every consumer keeping it would fail."""
    rec = encode(
        new_event(
            ClientRegistered(
                client_id=uuid.uuid4(),
                registering_org="a-org",
                responsible_org="a-org",
                preferred_language="uk",
                registered_at=datetime.now(UTC),
            ),
            source="/lotse/intake",
        )
    )
    headers = [(k, when.encode() if k == "ce_time" else v) for k, v in rec.headers]
    with pytest.raises(DecodeError, match="outside the supported range") as err:
        decode(headers, rec.value)
    assert err.value.kind == DecodeError.UNDECODABLE


def test_a_date_in_an_event_outside_the_supported_range_is_schema_invalid():
    """A partner's answer with an appointment at the end of the calendar is refused at decoding (DLQ with a reason),
    not retried in the consumer that would store it."""
    from contracts.events import ReferralAccepted

    ok = ReferralAccepted(client_id=uuid.uuid4(), referral_id=uuid.uuid4(), to_org="caritas-paderborn", accepted_at=datetime.now(UTC))
    rec = encode(new_event(ok, source="/partners/caritas-paderborn", acting_org="caritas-paderborn"))
    data = json.loads(rec.value)
    data["appointment_at"] = "9999-12-31T23:00:00-12:00"
    with pytest.raises(DecodeError, match="appointment_at") as err:
        decode(rec.headers, json.dumps(data).encode())
    assert err.value.kind == DecodeError.SCHEMA_INVALID
    assert decode(rec.headers, rec.value).data.accepted_at == ok.accepted_at
