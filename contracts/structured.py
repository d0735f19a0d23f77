"""CloudEvents 1.0 in structured JSON mode, converted to and from the Kafka binary mode of `contracts.envelope`.

On Kafka a Lotse event is a record in binary content mode: the attributes are `ce_*` headers, the data is
the record value. Over HTTPS (the gateway's inbox and outbox, `services/gateway`) the same event travels as
one JSON object (`application/cloudevents+json`) or a list of them (`application/cloudevents-batch+json`):

    {"specversion": "1.0", "id": "...", "source": "/lotse/consent", "type": "lotse.referral.sent",
     "time": "2026-...Z", "subject": "<client id>", "dataschema": "urn:lotse:schema:...",
     "datacontenttype": "application/json", "data": {...}, "actingorg": "..."}

`to_structured` is lossless for what Lotse writes: every `ce_*` header becomes an attribute (extensions
included, e.g. `traceparent`), the value is parsed as JSON and becomes `data` as it is (sealed content stays
sealed: a JWE string is a string). `from_structured` is its inverse and checks the shape only;
`contracts.validate(from_structured(obj))` checks the contract, exactly as `contracts.decode` does for a record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .envelope import CONTENT_TYPE, SPECVERSION, DecodeError, Envelope, KafkaRecord, RawEvent, decode_raw, encode

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"

_CORE = ("id", "source", "type", "time", "subject", "dataschema")
# CloudEvents attribute names: lower-case letters and digits (spec 1.0, "Attribute Naming Convention").
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_RESERVED = frozenset({"specversion", "datacontenttype", "data", "data_base64", *_CORE})


def to_structured(headers: Iterable[tuple[str, bytes]] | Mapping[str, Any], value: bytes | None) -> dict[str, Any]:
    """A Kafka record (binary mode) as one structured CloudEvent; `DecodeError` if it is not a CloudEvent."""
    raw = decode_raw(headers, value)
    out: dict[str, Any] = {"specversion": SPECVERSION}
    for name in _CORE:
        v = getattr(raw, name)
        if v is not None:
            out[name] = v
    out["datacontenttype"] = CONTENT_TYPE
    for name, v in sorted(raw.extensions.items()):
        if _ATTRIBUTE_NAME.match(name) and name not in _RESERVED:
            out[name] = v
    out["data"] = raw.data
    return out


def structured_of(env: Envelope[Any]) -> dict[str, Any]:
    """An envelope as the structured CloudEvent of the record `encode(env)` writes."""
    rec = encode(env)
    return to_structured(rec.headers, rec.value)


def from_structured(obj: Any) -> RawEvent:
    """A structured CloudEvent (parsed JSON) as a `RawEvent`; `DecodeError` (kind undecodable) if its shape is wrong.

    Only JSON data is accepted (`datacontenttype` absent or application/json, no `data_base64`), as on Kafka.
    """
    if not isinstance(obj, dict):
        raise DecodeError(DecodeError.UNDECODABLE, "a structured CloudEvent is a JSON object")
    if obj.get("specversion") != SPECVERSION:
        raise DecodeError(DecodeError.UNDECODABLE, f"specversion must be {SPECVERSION}, got {obj.get('specversion')!r}")
    for required in ("id", "source", "type"):
        if not isinstance(obj.get(required), str) or not obj[required]:
            raise DecodeError(DecodeError.UNDECODABLE, f"missing attribute {required}")
    for optional in ("time", "subject", "dataschema"):
        if optional in obj and obj[optional] is not None and not isinstance(obj[optional], str):
            raise DecodeError(DecodeError.UNDECODABLE, f"attribute {optional} must be a string")
    ctype = obj.get("datacontenttype", CONTENT_TYPE)
    if not isinstance(ctype, str) or ctype.split(";")[0].strip() != CONTENT_TYPE:
        raise DecodeError(DecodeError.UNDECODABLE, f"datacontenttype must be {CONTENT_TYPE}, got {ctype!r}")
    if "data_base64" in obj:
        raise DecodeError(DecodeError.UNDECODABLE, "data_base64 is not accepted: Lotse events carry JSON data")
    extensions: dict[str, str] = {}
    for name, v in obj.items():
        if name in _RESERVED:
            continue
        if not _ATTRIBUTE_NAME.match(name):
            raise DecodeError(DecodeError.UNDECODABLE, f"{name[:40]!r} is not a CloudEvents attribute name")
        if not isinstance(v, str):
            raise DecodeError(DecodeError.UNDECODABLE, f"extension attribute {name} must be a string")
        extensions[name] = v
    return RawEvent(
        id=obj["id"],
        type=obj["type"],
        source=obj["source"],
        time=obj.get("time"),
        subject=obj.get("subject"),
        dataschema=obj.get("dataschema"),
        data=obj.get("data"),
        extensions=extensions,
    )


def to_record(raw: RawEvent) -> KafkaRecord:
    """A `RawEvent` as a Kafka record in binary mode (the record key is the subject, as `encode` writes it)."""
    headers = [("ce_specversion", SPECVERSION), ("ce_id", raw.id), ("ce_source", raw.source), ("ce_type", raw.type)]
    for name, v in (("ce_time", raw.time), ("ce_dataschema", raw.dataschema), ("ce_subject", raw.subject)):
        if v is not None:
            headers.append((name, v))
    headers += [(f"ce_{k}", v) for k, v in sorted(raw.extensions.items())]
    headers.append(("content-type", CONTENT_TYPE))
    value = json.dumps(raw.data, ensure_ascii=False, separators=(",", ":")).encode()
    return KafkaRecord(key=raw.subject.encode() if raw.subject else None, value=value, headers=[(k, v.encode()) for k, v in headers])


__all__ = ["BATCH", "STRUCTURED", "from_structured", "structured_of", "to_record", "to_structured"]
