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

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from contracts import DecodeError, decode_raw, validate
from contracts.envelope import RawEvent
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

# Event data fields that name an organisation; they make an entry findable by `org`.
ORG_FIELDS = (
    "registering_org", "responsible_org", "updated_by_org", "requested_by_org", "from_org", "to_org",
    "collecting_org", "recorded_by_org", "recipient", "recipient_org",
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


@dataclass(frozen=True)
class Entry:
    """A log entry before it has an index: its bytes, leaf hash and the columns it is found by."""

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
    return physical[len(namespace):] if namespace and physical.startswith(namespace) else physical


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
    return t if t.tzinfo else None


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


def _orgs_in(data: Any) -> set[str]:
    """Organisation ids named by a validated event's data."""
    found: set[str] = set()
    single, lists = _org_fields(type(data))
    for f in single:
        v = getattr(data, f)
        if isinstance(v, str) and _ORG.match(v):
            found.add(v)
    for f in lists:
        vs = getattr(data, f)
        if isinstance(vs, list):
            found.update(v for v in vs if isinstance(v, str) and _ORG.match(v))
    return found


def build_entry(record: RecordLike, *, namespace: str = "") -> Entry:
    """The log entry for one record. Never raises for any content of the record."""
    logical = logical_topic(record.topic, namespace)
    is_dlq = logical.endswith(DLQ_SUFFIX)
    base = logical[: -len(DLQ_SUFFIX)] if is_dlq else logical
    personal = carries_personal_data(base)
    value = record.value or b""
    doc: dict[str, Any] = {
        "v": ENTRY_VERSION,
        "position": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        "topic": logical,
        "record_timestamp_ms": record.timestamp,
        "data_sha256": hashlib.sha256(value).hexdigest(),
        "data_size": len(value),
    }
    if personal:
        doc["personal_data_topic"] = True

    headers: dict[str, str] = {}
    unreadable: list[str] = []
    for k, v in record.headers:
        text = _text(v) if v is not None else ""
        if text is None:
            unreadable.append(k)
        else:
            headers[k.lower()] = text
    if unreadable:
        doc["unreadable_headers"] = sorted(unreadable)
    key_text = _text(record.key)
    if record.key is not None:
        doc["key"] = key_text if key_text is not None and _CANONICAL_UUID.match(key_text) else {"sha256": _sha256(record.key)}

    # Dead-letter metadata the kit's consumer adds.
    if is_dlq or _DLQ_HEADER_PREFIX + "error_kind" in headers:
        dead_letter: dict[str, Any] = {k[len(_DLQ_HEADER_PREFIX):]: v for k, v in headers.items() if k.startswith(_DLQ_HEADER_PREFIX)}
        if personal and "reason" in dead_letter:
            # A handler's error text may quote the data; on personal-data topics keep only its hash.
            dead_letter["reason_sha256"] = _sha256(dead_letter.pop("reason").encode())
        if dead_letter:
            doc["dead_letter"] = dead_letter

    raw: RawEvent | None = None
    env = None
    if unreadable:
        kind = KIND_UNDECODABLE
        doc["error"] = {"kind": DecodeError.UNDECODABLE, "reason": "header values that are not UTF-8: " + ", ".join(sorted(unreadable))}
    else:
        try:
            raw = decode_raw(headers, value)
            env = validate(raw)
            kind = KIND_EVENT
        except DecodeError as exc:
            kind = KIND_UNDECODABLE if raw is None else KIND_INVALID
            # The reason quotes no values (see contracts.envelope); on personal-data topics keep only its hash anyway.
            doc["error"] = {"kind": exc.kind, **({"reason_sha256": _sha256(exc.reason.encode())} if personal else {"reason": exc.reason[:500]})}
    doc["kind"] = kind

    # CloudEvents attributes: from the decoded event where there is one, else whatever headers are readable.
    if raw is not None:
        ce: dict[str, Any] = {"specversion": "1.0", "id": raw.id, "type": raw.type, "source": raw.source}
        for name, val in (("time", raw.time), ("subject", raw.subject), ("dataschema", raw.dataschema)):
            if val is not None:
                ce[name] = val
        for k, v in raw.extensions.items():
            ce[f"ext_{k}"] = v
        acting = raw.acting_org
    else:
        ce = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
        acting = ce.get("actingorg")
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
        declared, present = _categories(raw.data if raw is not None else None)
        doc["categories"] = declared
        doc["categories_present"] = present
    elif env is not None:
        # As the contract model serialises it: unknown fields a producer added are not logged.
        doc["data"] = orjson.Fragment(env.data.__pydantic_serializer__.to_json(env.data))
        orgs |= _orgs_in(env.data)

    if acting_org:
        orgs.add(acting_org)
    source = ce.get("source")
    if isinstance(source, str) and source.startswith("/partners/") and _ORG.match(source[len("/partners/"):]):
        orgs.add(source[len("/partners/"):])
    partner = partner_of(base)
    if partner:
        orgs.add(partner)

    event_time = (env.time if env is not None else None) or _parse_time(ce.get("time")) or datetime.fromtimestamp((record.timestamp or 0) / 1000, UTC)
    entry = canonical_json(doc)
    return Entry(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        logical_topic=logical,
        kind=kind,
        event_id=event_id if isinstance(event_id, str) else None,
        event_type=event_type if isinstance(event_type, str) else None,
        client_id=client_id,
        acting_org=acting_org,
        orgs=sorted(orgs),
        event_time=event_time,
        entry=entry,
        leaf_hash=leaf_hash(entry),
    )


def log_order(record: RecordLike) -> tuple[int, str, int, int]:
    """The order in which a batch is appended: record time, then position. Deterministic for a given batch."""
    return (record.timestamp or 0, record.topic, record.partition, record.offset)


def parse_entry(entry: bytes) -> dict[str, Any] | None:
    """The entry document, or None if the stored bytes are no longer valid JSON (tampering)."""
    try:
        doc = json.loads(entry)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
