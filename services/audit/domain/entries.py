"""What one Kafka record becomes in the audit log: a canonical JSON document (the Merkle leaf).

Every record is logged, whatever it is:

- `event`: a valid Lotse CloudEvent; its data is logged as the contract model serialises it
  (unknown fields a producer added are left out: they are not part of any contract and could
  carry anything);
- `invalid`: a CloudEvent of an unknown type or with schema-invalid data: attributes and the
  error are logged, the data only as its SHA-256;
- `undecodable`: not a CloudEvent at all (missing headers, not JSON, not UTF-8): the readable
  headers, the error and the SHA-256 and size of the value.

Records on topics that carry personal data (`lotse.disclosure-requests.v1`,
`partner.<org>.inbox.v1` and their dead-letter topics) never have their data logged: only its
SHA-256 and the data categories it names and contains. The log holds no names, birth dates or
contact details.

The entry bytes are deterministic JSON: UTF-8, object keys sorted, no insignificant whitespace,
with the event data embedded as the contract model serialises it (fields in model order). They
are stored as written and hashed as stored; verifiers never re-serialise them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

import orjson

from contracts import DecodeError, decode_headers, decode_raw, validate
from contracts.dates import is_supported
from contracts.envelope import _SOURCE, CONTENT_TYPE, SPECVERSION, extensions_of  # _SOURCE: the ce_source rule itself
from contracts.events import current_of, spec_for
from contracts.topics import DLQ_SUFFIX, ORG_ID_PATTERN, carries_personal_data, partner_of
from contracts.vocab import DataCategory

from .merkle import leaf_hash

ENTRY_VERSION = 1

KIND_EVENT = "event"
KIND_INVALID = "invalid"
KIND_UNDECODABLE = "undecodable"

_ORG = re.compile(ORG_ID_PATTERN)
_CATEGORIES = {c.value for c in DataCategory}
_DLQ_HEADER_PREFIX = "lotse_dlq_"
_DLQ_ERROR_KIND = _DLQ_HEADER_PREFIX + "error_kind"

# Event data fields that name an organisation; they make an entry findable by `org`.
ORG_FIELDS = (
    "registering_org",
    "responsible_org",
    "updated_by_org",
    "requested_by_org",
    "from_org",
    "to_org",
    "collecting_org",
    "recorded_by_org",
    "recipient",
    "recipient_org",
)
ORG_LIST_FIELDS = ("recipients", "disclosed_to")


class RecordLike(Protocol):
    """The parts of a Kafka record the audit log reads; aiokafka's ConsumerRecord has them."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Record:
    """A Kafka record without aiokafka (tests, benchmarks)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]


@dataclass(slots=True)
class Entry:
    """A log entry before it has an index: its bytes, leaf hash and the columns it is found by.

    Not frozen: a frozen dataclass costs a `object.__setattr__` per field, and one is built per record."""

    topic: str
    partition: int
    offset: int
    logical_topic: str
    kind: str
    event_id: str | None
    event_type: str | None
    client_id: str | None
    acting_org: str | None
    orgs: list[str]
    event_time: datetime
    entry: bytes
    leaf_hash: bytes

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def canonical_json(doc: Any) -> bytes:
    """UTF-8 JSON, object keys sorted, no insignificant whitespace (embedded fragments are kept as they are)."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def logical_topic(physical: str, namespace: str) -> str:
    return physical[len(namespace) :] if namespace and physical.startswith(namespace) else physical


def topic_carries_personal_data(logical: str) -> bool:
    """Personal-data topics and their dead-letter topics (a DLQ holds the same records)."""
    base = logical[: -len(DLQ_SUFFIX)] if logical.endswith(DLQ_SUFFIX) else logical
    return carries_personal_data(base)


def _sha256(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_headers(raw: Sequence[tuple[str, bytes | None]]) -> tuple[dict[str, str], list[str]]:
    """Header values as text by lower-case name, and the sorted names of values that are not UTF-8."""
    try:
        return {k.lower(): v.decode() for k, v in raw}, []
    except (UnicodeDecodeError, AttributeError):  # not UTF-8, or a header without a value (None): below
        pass
    headers: dict[str, str] = {}
    unreadable: list[str] = []
    for k, v in raw:
        text = _text(v) if v is not None else ""
        if text is None:
            unreadable.append(k)
        else:
            headers[k.lower()] = text
    return headers, sorted(unreadable)


def _json_or_none(value: bytes | None) -> Any:
    try:
        return json.loads(value) if value else None
    except (ValueError, UnicodeDecodeError):
        return None


def _decode_stepwise(headers: dict[str, str], value: bytes) -> tuple[Any, str, DecodeError | None, Any]:
    """(envelope or None, entry kind, error or None, the JSON data if the record is a CloudEvent),
    telling a CloudEvent a contract refuses from no CloudEvent at all."""
    try:
        raw = decode_raw(headers, value)
    except DecodeError as exc:
        return None, KIND_UNDECODABLE, exc, None
    try:
        return validate(raw), KIND_EVENT, None, raw.data
    except DecodeError as exc:
        return None, KIND_INVALID, exc, raw.data


_CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _uuid_text(value: str | None) -> str | None:
    """The canonical form of a UUID string, or None if it is not one."""
    if not value:
        return None
    if _CANONICAL_UUID.match(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Outside the supported range the time cannot be stored (timestamptz) and would stall the ingest.
    return t if t.tzinfo and is_supported(t) else None


def _storable(value: Any) -> str | None:
    """A lookup column's text, or None where PostgreSQL text cannot hold it (NUL): the entry keeps the value."""
    return value if isinstance(value, str) and "\x00" not in value else None


def _record_time(timestamp_ms: int | None) -> datetime:
    """The Kafka record's timestamp as a time; the epoch for none or one outside the supported range."""
    try:
        t = datetime.fromtimestamp((timestamp_ms or 0) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(0, UTC)
    return t if is_supported(t) else datetime.fromtimestamp(0, UTC)


def _categories(data: Any) -> tuple[list[str], list[str]]:
    """(declared, present): the categories an event names and the ones its personal_data contains."""
    if not isinstance(data, dict):
        return [], []
    declared = data.get("categories")
    declared_set = {c for c in declared if isinstance(c, str) and c in _CATEGORIES} if isinstance(declared, list) else set()
    pd = data.get("personal_data")
    present = {k for k, v in pd.items() if k in _CATEGORIES and v is not None} if isinstance(pd, dict) else set()
    return sorted(declared_set), sorted(present)


_ORG_FIELDS_OF: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _org_fields(model: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fields = _ORG_FIELDS_OF.get(model)
    if fields is None:
        names = set(getattr(model, "model_fields", {}))
        fields = (tuple(f for f in ORG_FIELDS if f in names), tuple(f for f in ORG_LIST_FIELDS if f in names))
        _ORG_FIELDS_OF[model] = fields
    return fields


_ORGS_OK: dict[str, bool] = {}  # strings seen where an organisation id may stand, checked against its pattern


def _is_org(value: str) -> bool:
    ok = _ORGS_OK.get(value)
    if ok is None:
        ok = _ORG.match(value) is not None
        if len(_ORGS_OK) < 4096:  # organisations are few; beyond it, values are checked each time
            _ORGS_OK[value] = ok
    return ok


def _orgs_in(data: Any) -> set[str]:
    """Organisation ids named by a validated event's data."""
    found: set[str] = set()
    single, lists = _org_fields(type(data))
    for f in single:
        v = getattr(data, f)
        if isinstance(v, str) and _is_org(v):
            found.add(v)
    for f in lists:
        vs = getattr(data, f)
        if isinstance(vs, list):
            found.update(v for v in vs if isinstance(v, str) and _is_org(v))
    return found


@dataclass(frozen=True)
class _TopicFacts:
    logical: str
    is_dlq: bool
    base: str  # the logical topic a dead-letter topic belongs to, else the logical topic itself
    personal: bool
    partner: str | None


@lru_cache(maxsize=4096)
def _topic_facts(physical: str, namespace: str) -> _TopicFacts:
    logical = logical_topic(physical, namespace)
    is_dlq = logical.endswith(DLQ_SUFFIX)
    base = logical[: -len(DLQ_SUFFIX)] if is_dlq else logical
    return _TopicFacts(logical, is_dlq, base, carries_personal_data(base), partner_of(base))


def build_entry(record: RecordLike, *, namespace: str = "") -> Entry:
    """The log entry for one record. Never raises for any content of the record.

    Almost every record is a valid, current-version Lotse event with UTF-8 headers: `_valid_event_entry`
    builds its entry in one pass. Anything else (or anything that pass is not sure of) takes the general
    path, which handles every record; both give byte-identical entries (`test_entry_builder.py`)."""
    facts = _topic_facts(record.topic, namespace)
    value = record.value or b""
    headers, unreadable = _read_headers(record.headers)
    if not unreadable:
        entry = _valid_event_entry(record, facts, value, headers)
        if entry is not None:
            return entry
    return _general_entry(record, facts, value, headers, unreadable)


def build_entry_general(record: RecordLike, *, namespace: str = "") -> Entry:
    """`build_entry` without the one-pass path for valid events (the reference the fast path is tested against)."""
    headers, unreadable = _read_headers(record.headers)
    return _general_entry(record, _topic_facts(record.topic, namespace), record.value or b"", headers, unreadable)


def _base_doc(record: RecordLike, facts: _TopicFacts, value: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": ENTRY_VERSION,
        "position": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        "topic": facts.logical,
        "record_timestamp_ms": record.timestamp,
        "data_sha256": hashlib.sha256(value).hexdigest(),
        "data_size": len(value),
    }
    if facts.personal:
        doc["personal_data_topic"] = True
    return doc


def _key_field(key: bytes | None, key_text: str | None) -> Any:
    return key_text if key_text is not None and _CANONICAL_UUID.match(key_text) else {"sha256": _sha256(key)}


def _dead_letter(headers: dict[str, str], personal: bool) -> dict[str, Any]:
    """Dead-letter metadata the kit's consumer adds (`lotse_dlq_*` headers)."""
    dead_letter: dict[str, Any] = {k[len(_DLQ_HEADER_PREFIX) :]: v for k, v in headers.items() if k.startswith(_DLQ_HEADER_PREFIX)}
    if personal and "reason" in dead_letter:
        # A handler's error text may quote the data; on personal-data topics keep only its hash.
        dead_letter["reason_sha256"] = _sha256(dead_letter.pop("reason").encode())
    return dead_letter


# Caches of the one-pass path, each of a pure function of values that take few distinct forms.
_CACHE_MAX = 1024  # entries per cache (beyond it, values are computed each time)
_READ_AS_IS: dict[int, bool] = {}  # per contract (by identity): read as it is, i.e. not upcast
_SOURCES_OK: dict[str, bool] = {}  # ce_source values seen, checked against the contract's pattern


def _source_ok(source: str) -> bool:
    ok = _SOURCES_OK.get(source)
    if ok is None:
        ok = _SOURCE.match(source) is not None
        if len(_SOURCES_OK) < _CACHE_MAX:
            _SOURCES_OK[source] = ok
    return ok


_EXTENSION_HEADERS: dict[tuple[str, ...], tuple[str, ...]] = {}  # header names -> the extension headers among them


def _extension_headers(headers: dict[str, str]) -> tuple[str, ...]:
    """The names of the `ce_*` extension headers (as `contracts.envelope.extensions_of` tells them), cached
    by the record's header names: producers send few different sets."""
    names = tuple(headers)
    ext = _EXTENSION_HEADERS.get(names)
    if ext is None:
        ext = tuple("ce_" + k for k in extensions_of(dict.fromkeys(names, "")))
        if len(_EXTENSION_HEADERS) < _CACHE_MAX:
            _EXTENSION_HEADERS[names] = ext
    return ext


def _valid_event_entry(record: RecordLike, facts: _TopicFacts, value: bytes, headers: dict[str, str]) -> Entry | None:
    """The entry of a record that `contracts.decode_headers` accepts as a current-version event, in one pass;
    None for any other record and whenever a check is not certain (the general path decides then).

    Makes exactly the checks `decode_headers` makes, in the cheapest form that is exactly as strict or
    stricter (a record refused here is not necessarily invalid, only not for this path): the contract
    model still validates the data (pydantic, in Rust) and still serialises what is logged."""
    get = headers.get
    if get("ce_specversion") != SPECVERSION or not value:
        return None
    event_id, event_type, source, ce_time = get("ce_id"), get("ce_type"), get("ce_source"), get("ce_time")
    if not event_id or not event_type or not source or not ce_time:
        return None
    content_type = get("content-type")
    if content_type is not None and content_type != CONTENT_TYPE:
        return None
    dataschema = get("ce_dataschema")
    spec = spec_for(event_type, dataschema)
    if spec is None:
        return None
    as_is = _READ_AS_IS.get(id(spec))
    if as_is is None:
        as_is = _READ_AS_IS[id(spec)] = current_of(spec) is None
    # ce_id: a canonical UUID (uuid.UUID accepts more; those take the general path).
    if not as_is or _CANONICAL_UUID.fullmatch(event_id) is None or not _source_ok(source):
        return None
    try:
        time = datetime.fromisoformat(ce_time)
    except ValueError:
        return None
    if time.tzinfo is None or not is_supported(time):
        return None
    try:
        data = spec.model.__pydantic_validator__.validate_json(value)
    except Exception:  # schema-invalid (or anything else): the general path tells which
        return None
    subject = get("ce_subject")
    canonical_subject = subject if subject is not None and _CANONICAL_UUID.fullmatch(subject) else None
    data_client_id = getattr(data, "client_id", None)
    data_client_text: str | None = None
    if data_client_id is not None:
        if canonical_subject is not None and isinstance(data_client_id, uuid.UUID):
            # Equal numbers mean subject == str(data_client_id) (both canonical), without formatting the UUID.
            if data_client_id.int != int(canonical_subject.replace("-", ""), 16):
                return None
            data_client_text = canonical_subject
        else:
            data_client_text = str(data_client_id)
            if subject is not None and subject != data_client_text:
                return None

    # A valid event: from here on nothing refuses it.
    personal = facts.personal
    doc = _base_doc(record, facts, value)
    key = record.key
    key_text = _text(key)
    if key is not None:
        doc["key"] = _key_field(key, key_text)
    if facts.is_dlq or _DLQ_ERROR_KIND in headers:
        dead_letter = _dead_letter(headers, personal)
        if dead_letter:
            doc["dead_letter"] = dead_letter
    doc["kind"] = KIND_EVENT
    ce: dict[str, Any] = {"specversion": SPECVERSION, "id": event_id, "type": event_type, "source": source, "time": ce_time}
    if subject is not None:
        ce["subject"] = subject
    if dataschema is not None:
        ce["dataschema"] = dataschema
    for k in _extension_headers(headers):
        ce["ext_" + k[3:]] = headers[k]
    doc["ce"] = ce
    acting = ce.get("ext_actingorg")
    acting_org = acting if acting is not None and _is_org(acting) else None
    client_id = canonical_subject or _uuid_text(subject) or data_client_text
    if client_id is None and key_text is not None:
        client_id = _uuid_text(key_text)
    doc["acting_org"] = acting_org
    doc["client_id"] = client_id
    if personal:
        declared, present = _categories(_json_or_none(value))
        doc["categories"] = declared
        doc["categories_present"] = present
        orgs: set[str] = set()
    else:
        # As the contract model serialises it: unknown fields a producer added are not logged.
        doc["data"] = orjson.Fragment(data.__pydantic_serializer__.to_json(data))
        orgs = _orgs_in(data)
    if acting_org:
        orgs.add(acting_org)
    if source.startswith("/partners/") and _is_org(source[len("/partners/") :]):
        orgs.add(source[len("/partners/") :])
    if facts.partner:
        orgs.add(facts.partner)
    entry = canonical_json(doc)
    # Positional (a call with keywords costs more, once per record). The id is a canonical UUID and the
    # type a contract's, so both are storable as they are (no NUL).
    return Entry(
        record.topic,
        record.partition,
        record.offset,
        facts.logical,
        KIND_EVENT,
        event_id,
        event_type,
        client_id,
        acting_org,
        sorted(orgs),
        time,
        entry,
        leaf_hash(entry),
    )


def _general_entry(record: RecordLike, facts: _TopicFacts, value: bytes, headers: dict[str, str], unreadable: list[str]) -> Entry:
    """The entry for any record: a valid event, an invalid one or none at all."""
    logical, is_dlq, personal = facts.logical, facts.is_dlq, facts.personal
    doc = _base_doc(record, facts, value)
    if unreadable:
        doc["unreadable_headers"] = unreadable
    key_text = _text(record.key)
    if record.key is not None:
        doc["key"] = _key_field(record.key, key_text)

    if is_dlq or _DLQ_ERROR_KIND in headers:
        dead_letter = _dead_letter(headers, personal)
        if dead_letter:
            doc["dead_letter"] = dead_letter

    env = None
    is_cloudevent = False  # attributes and JSON data readable, whether or not a contract accepts them
    raw_data: Any = None
    if unreadable:
        kind = KIND_UNDECODABLE
        doc["error"] = {"kind": DecodeError.UNDECODABLE, "reason": "header values that are not UTF-8: " + ", ".join(unreadable)}
    else:
        try:
            env = decode_headers(headers, value)  # one pass for the common case: a valid event
            kind = KIND_EVENT
            is_cloudevent = True
            if personal:
                raw_data = _json_or_none(value)
        except DecodeError:
            # Rare: decode step by step to tell a CloudEvent a contract refuses from no CloudEvent at all.
            env, kind, error, raw_data = _decode_stepwise(headers, value)
            is_cloudevent = kind != KIND_UNDECODABLE
            if error is not None:
                # The reason quotes no values (see contracts.envelope); on personal-data topics keep only its hash anyway.
                doc["error"] = {
                    "kind": error.kind,
                    **({"reason_sha256": _sha256(error.reason.encode())} if personal else {"reason": error.reason[:500]}),
                }
    doc["kind"] = kind

    # CloudEvents attributes: as decoded where the record is a CloudEvent, else whatever headers are readable.
    if is_cloudevent:
        ce: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": headers["ce_id"],
            "type": headers["ce_type"],
            "source": headers["ce_source"],
        }
        for name in ("time", "subject", "dataschema"):
            val = headers.get("ce_" + name)
            if val is not None:
                ce[name] = val
        for k, v in extensions_of(headers).items():
            ce[f"ext_{k}"] = v
    else:
        ce = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
    acting = ce.get("ext_actingorg") if is_cloudevent else ce.get("actingorg")
    doc["ce"] = ce

    event_type = ce.get("type")
    event_id = ce.get("id")
    acting_org = acting if isinstance(acting, str) and _ORG.match(acting) else None
    client_id = _uuid_text(ce.get("subject"))
    if env is not None and client_id is None and getattr(env.data, "client_id", None) is not None:
        client_id = str(env.data.client_id)
    if client_id is None and key_text is not None:
        client_id = _uuid_text(key_text)
    doc["acting_org"] = acting_org
    doc["client_id"] = client_id

    orgs: set[str] = set()
    if personal:
        declared, present = _categories(raw_data)
        doc["categories"] = declared
        doc["categories_present"] = present
    elif env is not None:
        # As the contract model serialises it: unknown fields a producer added are not logged.
        doc["data"] = orjson.Fragment(env.data.__pydantic_serializer__.to_json(env.data))
        orgs |= _orgs_in(env.data)

    if acting_org:
        orgs.add(acting_org)
    source = ce.get("source")
    if isinstance(source, str) and source.startswith("/partners/") and _ORG.match(source[len("/partners/") :]):
        orgs.add(source[len("/partners/") :])
    if facts.partner:
        orgs.add(facts.partner)

    event_time = (env.time if env is not None else None) or _parse_time(ce.get("time")) or _record_time(record.timestamp)
    entry = canonical_json(doc)
    return Entry(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        logical_topic=logical,
        kind=kind,
        event_id=_storable(event_id),
        event_type=_storable(event_type),
        client_id=client_id,
        acting_org=acting_org,
        orgs=sorted(orgs),
        event_time=event_time,
        entry=entry,
        leaf_hash=leaf_hash(entry),
    )


def unloggable(entry: Entry, reason: str) -> Entry:
    """A stand-in for an entry the database refused (its lookup columns or time cannot be stored).

    The log must never stall and never skip a record: the stand-in names the record's position, says
    why, and carries the refused entry's exact bytes (base64) and leaf hash, with only columns that
    can always be stored."""
    doc = {
        "kind": "unloggable",
        "topic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "reason": reason[:2000],
        "entry_base64": base64.b64encode(entry.entry).decode(),
        "entry_leaf_hash": entry.leaf_hash.hex(),
    }
    raw = canonical_json(doc)
    return Entry(
        topic=entry.topic,
        partition=entry.partition,
        offset=entry.offset,
        logical_topic=entry.logical_topic,
        kind="unloggable",
        event_id=None,
        event_type=None,
        client_id=None,
        acting_org=None,
        orgs=[],
        event_time=datetime.fromtimestamp(0, UTC),
        entry=raw,
        leaf_hash=leaf_hash(raw),
    )


def log_order(record: RecordLike) -> tuple[int, str, int, int]:
    """The order in which a batch is appended: record time, then position. Deterministic for a given batch."""
    return (record.timestamp or 0, record.topic, record.partition, record.offset)


def build_entries(records: Sequence[RecordLike], *, namespace: str, presorted: bool = False) -> list[Entry]:
    """The entries for a batch of records, in the order they are appended (CPU only)."""
    return [build_entry(r, namespace=namespace) for r in (records if presorted else sorted(records, key=log_order))]


def parse_entry(entry: bytes) -> dict[str, Any] | None:
    """The entry document, or None if the stored bytes are no longer valid JSON (tampering)."""
    try:
        doc = json.loads(entry)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
