"""Property tests: whatever bytes and headers arrive, the decoder and the consumer either handle the record
or dead-letter it with a reason; nothing escapes the consumer (an escaping error would make FastStream
seek back and redeliver the same record forever)."""

from __future__ import annotations

import asyncio
import importlib
import json
import types
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import DecodeError, Envelope, decode
from contracts.events import EVENTS, SCHEMAS
from lotse_kit.consumer import EventConsumer

SERVICES = ("intake", "consent", "notifications", "audit")
HANDLERS: dict[str, Any] = {}
for _s in SERVICES:
    HANDLERS.update(importlib.import_module(f"services.{_s}.handlers").EVENT_HANDLERS)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
header_text = st.text(max_size=40)


@st.composite
def cloud_event_headers(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """Headers that look like a Lotse CloudEvent, with each attribute sometimes broken or missing."""
    type_ = draw(st.sampled_from(sorted(EVENTS)) | header_text)
    spec = EVENTS.get(type_)
    attrs = {
        "ce_specversion": draw(st.sampled_from(["1.0", "0.3", ""])),
        "ce_id": draw(st.just(str(uuid.uuid4())) | header_text),
        "ce_source": draw(st.sampled_from(["/lotse/intake", "/partners/caritas-paderborn", "bogus"]) | header_text),
        "ce_type": type_,
        "ce_time": draw(st.just(datetime.now(UTC).isoformat()) | header_text),
        "ce_dataschema": draw(st.sampled_from([spec.dataschema] if spec else [None]) | st.sampled_from(sorted(SCHEMAS)) | header_text),
        "ce_subject": draw(st.just(str(uuid.uuid4())) | header_text),
        "content-type": "application/json",
    }
    out = [(k, v.encode()) for k, v in attrs.items() if v is not None and draw(st.booleans() | st.just(True))]
    out += draw(st.lists(st.tuples(header_text, st.binary(max_size=20)), max_size=3))
    return out


raw_headers = st.lists(st.tuples(header_text, st.binary(max_size=40)), max_size=8)
values = st.none() | st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=raw_headers | cloud_event_headers(), value=values)
def test_the_decoder_returns_an_envelope_or_a_decode_error_and_nothing_else(headers, value):
    try:
        env = decode(headers, value)
    except DecodeError as exc:
        assert exc.kind in {DecodeError.UNDECODABLE, DecodeError.UNKNOWN_TYPE, DecodeError.SCHEMA_INVALID}
        assert exc.reason
    else:
        assert isinstance(env, Envelope) and env.type in EVENTS


class RecordingDeadLetters:
    """The DLQ adapter as the consumer sees it, recording instead of producing (the real one is tested against Kafka)."""

    def __init__(self) -> None:
        self.written: list[tuple[ConsumerRecord[Any, Any], str, str]] = []

    async def write(self, record: ConsumerRecord[Any, Any], *, kind: str, reason: str, consumer: str) -> bool:
        self.written.append((record, kind, reason))
        return True


class NoDatabase:
    """A pool that is not there (a non-transient error): a decodable event's handler cannot commit, so it is dead-lettered."""

    def acquire(self) -> Any:
        raise LookupError("no database in this property test")


def _consumer(dead: RecordingDeadLetters) -> EventConsumer:
    c = EventConsumer(
        service="prop",
        name="prop",
        pool_getter=NoDatabase,
        bootstrap="127.0.0.1:1",
        handlers=HANDLERS,
        topics=["lotse.anything.v1"],
        max_attempts=1,
        retry_base_s=0.001,
        retry_max_s=0.001,
        dead_letters=dead,
    )  # type: ignore[arg-type]
    c.subscriber = types.SimpleNamespace(running=True)
    return c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(headers=raw_headers | cloud_event_headers(), value=values, key=st.none() | st.binary(max_size=40))
def test_every_consumer_handles_or_dead_letters_any_record_with_a_reason(headers, value, key):
    dead = RecordingDeadLetters()
    consumer = _consumer(dead)
    record = ConsumerRecord("lotse.anything.v1", 0, 7, 0, 0, key, value, None, 0, 0, headers)
    asyncio.run(consumer._on_batch(b"", types.SimpleNamespace(raw_message=(record,))))  # must not raise
    try:
        env = decode(headers, value)
    except DecodeError:
        env = None
    if env is None or env.type in HANDLERS:
        # Undecodable, or decodable with a handler that could not commit: on the DLQ, once, with a reason.
        assert len(dead.written) == 1
        rec, kind, reason = dead.written[0]
        assert rec is record and kind and reason
    else:
        assert dead.written == []  # a known type no service handles: tolerated, skipped
