"""Tracing across HTTP and Kafka hops (lotse_kit/tracing.py), against the real broker and database.

Spans go to the OpenTelemetry SDK's own in-memory exporter; the kit records with the provider the
test configures (`tracing.configure`), as a service records with the one `Runtime.start` builds from
the `OTEL_*` environment.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import httpx
import pytest
from fastapi import APIRouter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import Envelope, decode, encode, new_event
from contracts.envelope import trace_context
from contracts.topics import dlq
from lotse_kit import access, tracing
from lotse_kit.auth import get_with_service_token
from lotse_kit.consumer import Rejected
from lotse_kit.http import create_app
from lotse_kit.runtime import Runtime
from tests.kafka_helpers import eventually, produce_raw, read_topic
from tests.kit.conftest import record_effect, registered

FIRST_ORG = "jobcenter-paderborn"
FOLLOW_UP_ORG = "caritas-paderborn"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
ROOT = Path(__file__).resolve().parents[2]
TEST_POLICY = access.Open("tracing-test", "a kit test route")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    yield exporter
    tracing.configure(None)
    provider.shutdown()


@pytest.fixture
def untraced(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider and no OTEL_* export settings: what a service runs with by default."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    tracing.configure(None)


async def follow_up(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
    """The first event of a client causes a second one (as a consent decision causes a disclosure)."""
    await record_effect(env, conn, deps)
    if env.data.registering_org == FIRST_ORG:
        data = env.data.model_copy(update={"client_id": uuid.uuid4(), "registering_org": FOLLOW_UP_ORG, "responsible_org": FOLLOW_UP_ORG})
        await deps["runtime"].outbox.enqueue(conn, new_event(data, source="/lotse/kittest", acting_org=FOLLOW_UP_ORG), deps["topic"])


def traced_app(rt: Runtime) -> Any:
    """A kit app whose one route registers a client: the event goes through the outbox in the request's transaction."""
    router = APIRouter()

    @router.post("/v1/kit-clients/{org}", dependencies=[access.declared(TEST_POLICY)], status_code=201)
    async def register(org: str) -> dict[str, str]:
        env = registered(org=org)
        async with rt.db.pool.acquire() as conn, conn.transaction():
            await rt.outbox.enqueue(conn, env, rt.declaration.publications[0].channel)
        return {"event_id": str(env.id)}

    @router.get("/v1/kit-echo", dependencies=[access.declared(TEST_POLICY)])
    async def echo() -> dict[str, str]:
        return {"ok": "yes"}

    return create_app(rt, [router])


def by_kind(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], kind: SpanKind, name_prefix: str = "") -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind and s.name.startswith(name_prefix)]


def consumer_span_for(spans: Any, event_id: uuid.UUID) -> ReadableSpan | None:
    found = [s for s in spans if s.attributes and s.attributes.get(tracing.ATTR_EVENT_ID) == str(event_id)]
    return found[0] if found else None


def record_of(records: list[Any], org: str) -> Any:
    return next(r for r in records if decode(r.headers, r.value).data.registering_org == org)


async def run_chain(make_runtime: Any, topic: str, kafka_bootstrap: str, headers: dict[str, str]) -> tuple[Any, Any, str]:
    """POST a registration to a kit app (with `headers`), wait until the consumer's follow-up event is on the topic."""
    deps: dict[str, Any] = {"topic": topic}
    rt = make_runtime(handlers={"lotse.client.registered": follow_up}, deps=deps)
    deps["runtime"] = rt
    app = traced_app(rt)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http,
    ):
        r = await http.post(f"/v1/kit-clients/{FIRST_ORG}", headers=headers)
        assert r.status_code == 201, r.text
        records = await read_topic(kafka_bootstrap, topic, until=2)
        # Both events handled (their effects committed), so every consumer span has ended.
        await eventually(lambda: rt.db.pool.fetchval("SELECT count(*) = 2 FROM effects"))
    return record_of(records, FIRST_ORG), record_of(records, FOLLOW_UP_ORG), r.json()["event_id"]


async def test_one_request_and_the_events_it_causes_are_one_trace(spans, make_runtime, runtimes, topic, kafka_bootstrap):
    first, second, first_id = await run_chain(make_runtime, topic, kafka_bootstrap, {"traceparent": CALLER, "tracestate": "lotse=t1"})
    finished = spans.get_finished_spans()

    # The server span continues the caller's trace: same trace id, the caller's span as parent.
    [server] = by_kind(finished, SpanKind.SERVER)
    assert server.name == "POST /v1/kit-clients/{org}"
    assert server.attributes is not None and server.attributes["http.route"] == "/v1/kit-clients/{org}"
    assert server.attributes["http.response.status_code"] == 201
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CALLER_SPAN and server.parent.is_remote

    # The event written in the request carries the server span as its traceparent (ce_traceparent).
    first_env, second_env = decode(first.headers, first.value), decode(second.headers, second.value)
    assert first_env.traceparent == f"00-{TRACE_ID}-{server.context.span_id:016x}-01"
    assert first_env.tracestate is None  # a caller's free-text tracestate is not taken (it would reach the audit log)

    # Its consumer span is the server span's child; the event the handler wrote carries the consumer span.
    one = consumer_span_for(finished, first_env.id)
    assert one is not None and str(first_env.id) == first_id
    assert one.kind == SpanKind.CONSUMER and one.name == f"process {topic}"
    assert one.parent is not None and one.parent.span_id == server.context.span_id and one.context.trace_id == server.context.trace_id
    assert second_env.traceparent == f"00-{TRACE_ID}-{one.context.span_id:016x}-01"
    two = consumer_span_for(finished, second_env.id)
    assert two is not None and two.parent is not None and two.parent.span_id == one.context.span_id
    assert {s.context.trace_id for s in (server, one, two)} == {int(TRACE_ID, 16)}

    # Each event's span links to the batch it was handled in; a batch of one joins its event's trace.
    batches = {s.context.span_id: s for s in by_kind(finished, SpanKind.CONSUMER, "process batch ")}
    [link] = one.links
    batch = batches[link.context.span_id]
    assert batch.context.trace_id == server.context.trace_id and batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 1


async def test_a_request_without_traceparent_starts_a_trace(spans, make_runtime, runtimes, topic):
    app = traced_app(make_runtime())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        assert (await http.get("/v1/kit-echo")).status_code == 200
        assert (await http.get("/health/live")).status_code == 200  # probes are not traced
    [server] = spans.get_finished_spans()
    assert server.name == "GET /v1/kit-echo" and server.parent is None


async def test_an_event_without_traceparent_is_handled_in_a_new_trace(spans, make_runtime, runtimes, topic, kafka_bootstrap):
    """An older producer sends no ce_traceparent: the event is handled as before, its span is a new root."""
    deps: dict[str, Any] = {"topic": topic}
    rt = make_runtime(handlers={"lotse.client.registered": follow_up}, deps=deps)
    deps["runtime"] = rt
    await rt.start()
    runtimes.append(rt)
    old = registered(org=FIRST_ORG)
    rec = encode(old)
    assert not any(k == "ce_traceparent" for k, _ in rec.headers)
    await produce_raw(kafka_bootstrap, topic, [(rec.key, rec.value, rec.headers)])

    records = await read_topic(kafka_bootstrap, topic, until=2)
    await eventually(lambda: rt.db.pool.fetchval("SELECT count(*) = 2 FROM effects"))
    span = consumer_span_for(spans.get_finished_spans(), old.id)
    assert span is not None and span.parent is None  # a new trace, not a child of the batch
    follow = decode(record_of(records, FOLLOW_UP_ORG).headers, record_of(records, FOLLOW_UP_ORG).value)
    # (the flags are the SDK's: sampled, and W3C level 2's random trace id for a trace it started)
    assert follow.traceparent is not None and follow.traceparent[:52] == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"


async def refuse(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
    raise Rejected("not from this organisation")


async def test_a_dead_lettered_event_keeps_its_trace(spans, make_runtime, runtimes, topic, kafka_bootstrap):
    """A rejected event is handled on its own (after its batch rolled back): its span is still the producer's
    child, says it was dead-lettered, and the DLQ copy keeps ce_traceparent."""
    rt = make_runtime(handlers={"lotse.client.registered": refuse})
    await rt.start()
    runtimes.append(rt)
    env = dataclasses.replace(registered(), traceparent=CALLER)
    rec = encode(env)
    await produce_raw(kafka_bootstrap, topic, [(rec.key, rec.value, rec.headers)])

    [dead] = await read_topic(kafka_bootstrap, dlq(topic), until=1)
    assert dict(dead.headers)["ce_traceparent"] == CALLER.encode()

    def outcome_span() -> ReadableSpan | None:
        found = [s for s in spans.get_finished_spans() if s.attributes and s.attributes.get(tracing.ATTR_OUTCOME)]
        return found[0] if found else None

    span = await eventually(outcome_span)
    assert isinstance(span, ReadableSpan) and span.attributes is not None
    assert span.attributes[tracing.ATTR_OUTCOME] == "dead-lettered" and span.attributes[tracing.ATTR_EVENT_ID] == str(env.id)
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CALLER_SPAN and f"{span.context.trace_id:032x}" == TRACE_ID


async def test_untraced_service_passes_the_callers_context_on_and_records_nothing(untraced, make_runtime, runtimes, topic, kafka_bootstrap):
    """Without OTEL_* export settings no provider is set up and no span exists; an incoming traceparent still
    reaches every event the request causes, unchanged, and a request without one adds none."""
    first, second, _ = await run_chain(make_runtime, topic, kafka_bootstrap, {"traceparent": CALLER})
    assert not tracing.enabled()
    assert decode(first.headers, first.value).traceparent == CALLER
    assert decode(second.headers, second.value).traceparent == CALLER
    assert dict(first.headers)["ce_traceparent"] == CALLER.encode()


async def test_untraced_request_without_traceparent_adds_none(untraced, make_runtime, runtimes, topic, kafka_bootstrap):
    first, second, _ = await run_chain(make_runtime, topic, kafka_bootstrap, {})
    for rec in (first, second):
        assert "ce_traceparent" not in dict(rec.headers)


async def test_service_calls_carry_the_trace_to_the_other_service(spans, make_runtime, runtimes, topic):
    app = traced_app(make_runtime())

    async def token() -> str:
        return "not-checked-by-an-open-route"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://other:8002") as http:
        with tracing.server("kittest", "POST", "/v1/outer", "http", CALLER, None):
            r = await get_with_service_token(http, "/v1/kit-echo?client_id=x", tokens=token)
    assert r.status_code == 200
    finished = spans.get_finished_spans()
    [client] = by_kind(finished, SpanKind.CLIENT)
    [inner] = [s for s in by_kind(finished, SpanKind.SERVER) if s.name == "GET /v1/kit-echo"]
    assert client.attributes is not None and client.attributes["url.path"] == "/v1/kit-echo"  # no query string
    assert client.attributes["server.address"] == "other" and client.attributes["http.response.status_code"] == 200
    assert inner.parent is not None and inner.parent.span_id == client.context.span_id
    assert f"{inner.context.trace_id:032x}" == TRACE_ID


def test_a_malformed_trace_context_is_dropped_not_fatal():
    env = registered()
    for bad in ("garbage", f"ff-{TRACE_ID}-{CALLER_SPAN}-01", f"00-{'0' * 32}-{CALLER_SPAN}-01", f"00-{TRACE_ID}-{CALLER_SPAN}-01-extra"):
        rec = encode(env)
        decoded = decode([*rec.headers, ("ce_traceparent", bad.encode()), ("ce_tracestate", b"a=b")], rec.value)
        assert decoded.id == env.id and decoded.traceparent is None and decoded.tracestate is None
    assert trace_context({"ce_traceparent": CALLER, "ce_tracestate": "x" * 600}) == (CALLER, None)
    # A newer version's extra fields are kept (W3C: parse what is known, pass the rest on).
    future = f"01-{TRACE_ID}-{CALLER_SPAN}-01-abc"
    assert trace_context({"ce_traceparent": future}) == (future, None)


def test_export_settings_are_read_from_the_standard_environment():
    assert not tracing.export_configured({})
    assert tracing.export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.export_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing.export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_spans_are_exported_over_otlp_when_the_environment_names_an_endpoint(tmp_path):
    """A fresh process, as a service starts: OTEL_EXPORTER_OTLP_ENDPOINT set → spans arrive at the collector
    (OTLP/HTTP protobuf), under the service's name; unset → nothing is sent and nothing fails."""
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "import asyncio, sys\n"
        "from lotse_kit import tracing\n"
        "on = tracing.setup_from_env('kittest')\n"
        "with tracing.server('kittest', 'GET', '/v1/x', 'http', None, None):\n"
        "    pass\n"
        "asyncio.run(tracing.flush())\n"
        "print(on)\n"
    )
    try:
        env = {"PATH": "/usr/bin:/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True, cwd=ROOT)
        assert out.stdout.strip() == "True", out.stderr
        [(path, ctype, body)] = _Collector.received
        assert path == "/v1/traces" and ctype == "application/x-protobuf"
        assert b"lotse-kittest" in body and b"GET /v1/x" in body

        _Collector.received.clear()
        out = subprocess.run(
            [sys.executable, "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
        )
        assert out.stdout.strip() == "False" and not out.stderr
        assert _Collector.received == []
    finally:
        server.shutdown()
