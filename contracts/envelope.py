"""CloudEvents 1.0 in Kafka binary content mode.

Attributes travel as `ce_*` headers, the data as the JSON record value, and the
record key is the pseudonymous client id so that all events about one client
stay in order on one partition.

Two optional extension attributes carry W3C Trace Context (the CloudEvents distributed-tracing
extension): `traceparent` and `tracestate`, as `ce_traceparent` / `ce_tracestate` headers. They name
the span that produced the event (`lotse_kit.tracing` stamps them), so a consumer's work joins the
producer's trace. Readers are tolerant: an event without them is valid, and a value that is not
well-formed is dropped on decoding (the event itself stays valid; tracing starts a new trace).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from .dates import EARLIEST, LATEST, is_supported
from .events import EventData, EventSpec, current_of, spec_for, spec_of
from .upcasting import UpcastError, upcast

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
_SOURCE = re.compile(r"^/(lotse/[a-z][a-z0-9-]*|partners/[a-z0-9][a-z0-9-]{1,62})$")
# W3C Trace Context: version-traceid-parentid-flags, lower-case hex; a future version may append fields.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[0-9a-f-]*)?$")
# W3C Trace Context lets a platform drop a tracestate longer than 512 characters.
TRACESTATE_MAX = 512
_ZERO_TRACE_ID, _ZERO_SPAN_ID = "0" * 32, "0" * 16

D = TypeVar("D", bound=EventData)


class DecodeError(Exception):
    """A record that is not a valid Lotse CloudEvent. `kind` goes into the DLQ headers."""

    UNDECODABLE = "undecodable"
    UNKNOWN_TYPE = "unknown-type"
    SCHEMA_INVALID = "schema-invalid"

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class RawEvent:
    """A record's CloudEvents attributes and its JSON data, not yet checked against a contract."""

    id: str
    type: str
    source: str
    time: str | None
    subject: str | None
    dataschema: str | None
    data: Any
    extensions: dict[str, str] = field(default_factory=dict)

    @property
    def acting_org(self) -> str | None:
        return self.extensions.get("actingorg")


@dataclass(frozen=True)
class Envelope(Generic[D]):
    id: uuid.UUID
    type: str
    source: str
    time: datetime
    subject: str | None
    dataschema: str
    data: D
    acting_org: str | None = None
    # The CloudEvents distributed-tracing extension (W3C Trace Context), see the module docstring.
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def client_id(self) -> str | None:
        return self.subject

    @property
    def source_partner(self) -> str | None:
        return self.source.removeprefix("/partners/") if self.source.startswith("/partners/") else None


@dataclass(frozen=True)
class KafkaRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def headers_dict(self) -> dict[str, str]:
        return {k: v.decode() for k, v in self.headers}


def service_source(service: str) -> str:
    return f"/lotse/{service}"


def partner_source(org_id: str) -> str:
    return f"/partners/{org_id}"


def new_event(
    data: D,
    *,
    source: str,
    acting_org: str | None = None,
    spec: EventSpec | None = None,
    event_id: uuid.UUID | None = None,
    time: datetime | None = None,
) -> Envelope[D]:
    spec = spec or spec_of(type(data))
    if not _SOURCE.match(source):
        raise ValueError(f"invalid ce_source {source!r}")
    client_id = getattr(data, "client_id", None)
    return Envelope(
        id=event_id or uuid.uuid4(),
        type=spec.type,
        source=source,
        time=time or datetime.now(UTC),
        subject=str(client_id) if client_id else None,
        dataschema=spec.dataschema,
        data=data,
        acting_org=acting_org,
    )


def encode(env: Envelope[Any]) -> KafkaRecord:
    headers = [
        ("ce_specversion", SPECVERSION),
        ("ce_id", str(env.id)),
        ("ce_source", env.source),
        ("ce_type", env.type),
        ("ce_time", env.time.astimezone(UTC).isoformat().replace("+00:00", "Z")),
        ("ce_dataschema", env.dataschema),
        ("content-type", CONTENT_TYPE),
    ]
    if env.subject:
        headers.append(("ce_subject", env.subject))
    if env.acting_org:
        headers.append(("ce_actingorg", env.acting_org))
    if env.traceparent:
        headers.append(("ce_traceparent", env.traceparent))
        if env.tracestate:
            headers.append(("ce_tracestate", env.tracestate))
    key = env.subject.encode() if env.subject else None
    value = env.data.model_dump_json().encode()
    return KafkaRecord(key=key, value=value, headers=[(k, v.encode()) for k, v in headers])


def _headers_to_dict(headers: Iterable[tuple[str, bytes]] | Mapping[str, Any]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for k, v in items:
        try:
            out[k.lower()] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
        except UnicodeDecodeError as exc:
            raise DecodeError(DecodeError.UNDECODABLE, f"header {k} is not UTF-8") from exc
    return out


def _check_headers(h: Mapping[str, str]) -> None:
    if h.get("ce_specversion") != SPECVERSION:
        raise DecodeError(DecodeError.UNDECODABLE, f"ce_specversion must be {SPECVERSION}, got {h.get('ce_specversion')!r}")
    for required in ("ce_id", "ce_source", "ce_type"):
        if not h.get(required):
            raise DecodeError(DecodeError.UNDECODABLE, f"missing header {required}")
    ctype = h.get("content-type", CONTENT_TYPE).split(";")[0].strip()
    if ctype != CONTENT_TYPE:
        raise DecodeError(DecodeError.UNDECODABLE, f"content-type must be {CONTENT_TYPE}, got {ctype!r}")


_KNOWN_ATTRIBUTES = frozenset({"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_dataschema"})


def extensions_of(h: Mapping[str, str]) -> dict[str, str]:
    """CloudEvents extension attributes (`ce_<name>` headers that are not core attributes), by name."""
    return {k[3:]: v for k, v in h.items() if k.startswith("ce_") and k not in _KNOWN_ATTRIBUTES}


def decode_raw(headers: Iterable[tuple[str, bytes]] | Mapping[str, Any], value: bytes | None) -> RawEvent:
    h = _headers_to_dict(headers)
    _check_headers(h)
    try:
        data = json.loads(value) if value else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(DecodeError.UNDECODABLE, f"value is not JSON: {exc}") from exc
    return RawEvent(
        id=h["ce_id"],
        type=h["ce_type"],
        source=h["ce_source"],
        time=h.get("ce_time"),
        subject=h.get("ce_subject"),
        dataschema=h.get("ce_dataschema"),
        data=data,
        extensions=extensions_of(h),
    )


def _checked_attributes(
    type_: str, id_: str, source: str, time: str | None, dataschema: str | None
) -> tuple[EventSpec, uuid.UUID, datetime]:
    spec = spec_for(type_, dataschema)
    if spec is None:
        raise DecodeError(DecodeError.UNKNOWN_TYPE, f"no contract for type {type_!r} with dataschema {dataschema!r}")
    try:
        event_id = uuid.UUID(id_)
    except ValueError as exc:
        raise DecodeError(DecodeError.UNDECODABLE, f"ce_id is not a UUID: {id_!r}") from exc
    if not _SOURCE.match(source):
        raise DecodeError(DecodeError.UNDECODABLE, f"ce_source {source!r} is neither /lotse/<service> nor /partners/<org>")
    try:
        parsed = datetime.fromisoformat(time) if time else None
    except ValueError as exc:
        raise DecodeError(DecodeError.UNDECODABLE, f"ce_time is not RFC 3339: {time!r}") from exc
    if parsed is None or parsed.tzinfo is None:
        raise DecodeError(DecodeError.UNDECODABLE, "ce_time must be an RFC 3339 timestamp with offset")
    if not is_supported(parsed):
        # A time PostgreSQL cannot store (or Python cannot convert to UTC) would fail every consumer that keeps it.
        raise DecodeError(DecodeError.UNDECODABLE, f"ce_time {time!r} is outside the supported range {EARLIEST}..{LATEST}")
    return spec, event_id, parsed


def trace_context(h: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The well-formed `ce_traceparent` and `ce_tracestate` of a record's headers, else None: a malformed
    trace context must not make an event invalid, nor travel on with it."""
    traceparent = h.get("ce_traceparent")
    if (
        traceparent is None
        or len(traceparent) > 512
        or not _TRACEPARENT.match(traceparent)
        or traceparent.startswith("ff")  # a version W3C forbids
        or (traceparent.startswith("00") and len(traceparent) != 55)  # version 00 has exactly four fields
        or traceparent[3:35] == _ZERO_TRACE_ID
        or traceparent[36:52] == _ZERO_SPAN_ID
    ):
        return None, None
    tracestate = h.get("ce_tracestate")
    if tracestate is not None and (not tracestate.strip() or len(tracestate) > TRACESTATE_MAX):
        tracestate = None
    return traceparent, tracestate


def _envelope(
    spec: EventSpec,
    event_id: uuid.UUID,
    type_: str,
    source: str,
    time: datetime,
    subject: str | None,
    data: Any,
    acting_org: str | None,
    trace: tuple[str | None, str | None] = (None, None),
) -> Envelope[Any]:
    client_id = getattr(data, "client_id", None)
    if client_id is not None and subject is not None and subject != str(client_id):
        raise DecodeError(DecodeError.SCHEMA_INVALID, "ce_subject does not match data.client_id")
    return Envelope(
        id=event_id,
        type=type_,
        source=source,
        time=time,
        subject=subject or (str(client_id) if client_id else None),
        dataschema=spec.dataschema,
        data=data,
        acting_org=acting_org,
        traceparent=trace[0],
        tracestate=trace[1],
    )


def _schema_invalid(exc: ValidationError, prefix: str = "") -> DecodeError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return DecodeError(DecodeError.SCHEMA_INVALID, f"{prefix}{where}: {first['msg']} ({exc.error_count()} error(s))")


def _upcast(spec: EventSpec, data: EventData) -> tuple[EventSpec, EventData]:
    """Data valid under an older version, as the current version (see contracts/upcasting.py)."""
    current = current_of(spec)
    if current is None:
        return spec, data
    try:
        upcast_json = upcast(spec.type, data.model_dump(mode="json"), spec.version, current.version)
    except UpcastError as exc:
        raise DecodeError(DecodeError.SCHEMA_INVALID, str(exc)) from exc
    try:
        return current, current.model.model_validate(upcast_json)
    except ValidationError as exc:
        raise _schema_invalid(exc, f"after upcasting v{spec.version} to v{current.version}: ") from exc


def validate(raw: RawEvent) -> Envelope[Any]:
    spec, event_id, time = _checked_attributes(raw.type, raw.id, raw.source, raw.time, raw.dataschema)
    try:
        data = spec.model.model_validate(raw.data)
    except ValidationError as exc:
        raise _schema_invalid(exc) from exc
    spec, data = _upcast(spec, data)
    trace = trace_context({f"ce_{k}": v for k, v in raw.extensions.items() if k in ("traceparent", "tracestate")})
    return _envelope(spec, event_id, raw.type, raw.source, time, raw.subject, data, raw.acting_org, trace)


def decode_headers(h: Mapping[str, str], value: bytes | None) -> Envelope[Any]:
    """`decode` for headers already read into a dict (lower-case names, text values).

    Valid records of the current version take one pass: pydantic parses and validates the JSON bytes
    together; a record of an older version is then upcast (contracts/upcasting.py). Anything
    that fails goes through `decode_raw` + `validate` again, so an invalid record gets exactly the
    error (kind and reason) that the step-by-step path defines.
    """
    try:
        _check_headers(h)
        type_, source = h["ce_type"], h["ce_source"]
        spec, event_id, time = _checked_attributes(type_, h["ce_id"], source, h.get("ce_time"), h.get("ce_dataschema"))
        data = spec.model.__pydantic_validator__.validate_json(value) if value else spec.model.model_validate(None)
        spec, data = _upcast(spec, data)
        trace = trace_context(h) if "ce_traceparent" in h else (None, None)
        return _envelope(spec, event_id, type_, source, time, h.get("ce_subject"), data, h.get("ce_actingorg"), trace)
    except (DecodeError, ValidationError, ValueError):
        return validate(decode_raw(h, value))


def decode(headers: Iterable[tuple[str, bytes]] | Mapping[str, Any], value: bytes | None) -> Envelope[Any]:
    return decode_headers(_headers_to_dict(headers), value)
