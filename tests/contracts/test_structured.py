"""contracts/structured.py: a Kafka record (binary mode) and its structured CloudEvent are the same event."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from contracts import DecodeError, decode, encode, new_event, validate
from contracts.events import PARTNER_REFERRAL, PartnerReferralV2, ReferralAccepted, Sealed
from contracts.structured import from_structured, structured_of, to_record, to_structured


def _accepted():
    data = ReferralAccepted(client_id=uuid.uuid4(), referral_id=uuid.uuid4(), to_org="awo-paderborn", accepted_at=datetime.now(UTC))
    return new_event(data, source="/partners/awo-paderborn", acting_org="awo-paderborn")


def test_a_record_and_its_structured_event_round_trip():
    env = _accepted()
    rec = encode(env)
    s = to_structured(rec.headers, rec.value)
    assert s["specversion"] == "1.0" and s["id"] == str(env.id) and s["type"] == env.type and s["source"] == env.source
    assert s["subject"] == str(env.data.client_id) and s["dataschema"] == env.dataschema and s["datacontenttype"] == "application/json"
    assert s["actingorg"] == "awo-paderborn"  # extensions travel as attributes
    assert s["data"] == json.loads(rec.value)
    assert validate(from_structured(s)) == decode(rec.headers, rec.value)
    back = to_record(from_structured(json.loads(json.dumps(s))))
    assert decode(back.headers, back.value) == decode(rec.headers, rec.value) and back.key == rec.key
    assert structured_of(env) == s


def test_sealed_content_stays_sealed():
    sealed = Sealed(kid="awo-enc-1", jwe="eyJhbGciOiJFQ0RILUVTIn0..iv.ciphertext.tag")
    data = PartnerReferralV2(
        client_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org="jobcenter-paderborn",
        to_org="awo-paderborn",
        service="mbe",
        consent_id=uuid.uuid4(),
        categories=["identity"],
        sealed=sealed,
        sent_at=datetime.now(UTC),
    )
    env = new_event(data, source="/lotse/consent", spec=PARTNER_REFERRAL)
    s = structured_of(env)
    assert s["data"]["sealed"] == {"kid": "awo-enc-1", "jwe": sealed.jwe}
    assert validate(from_structured(s)).data == env.data


def test_unknown_extensions_are_kept_both_ways():
    rec = encode(_accepted())
    headers = [*rec.headers, ("ce_traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    s = to_structured(headers, rec.value)
    assert s["traceparent"].startswith("00-0af7")
    assert ("ce_traceparent", s["traceparent"].encode()) in to_record(from_structured(s)).headers


@pytest.mark.parametrize(
    "change",
    [
        {"specversion": "0.3"},
        {"id": ""},
        {"source": 5},
        {"datacontenttype": "application/xml"},
        {"data_base64": "AAAA"},
        {"Bad-Name": "x"},
        {"traceparent": 5},
        {"time": 12},
    ],
)
def test_malformed_structured_events_are_undecodable(change):
    s = structured_of(_accepted()) | change
    with pytest.raises(DecodeError) as exc:
        from_structured(s)
    assert exc.value.kind == DecodeError.UNDECODABLE


@pytest.mark.parametrize("obj", [None, [], "x", 5])
def test_only_objects_are_events(obj):
    with pytest.raises(DecodeError):
        from_structured(obj)


def test_a_record_that_is_no_cloudevent_is_refused():
    with pytest.raises(DecodeError):
        to_structured([("content-type", b"application/json")], b"{}")
