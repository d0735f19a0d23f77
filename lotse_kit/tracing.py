"""OpenTelemetry tracing across HTTP and Kafka hops (W3C Trace Context; see docs/observability.md).

One referral is one trace: the caseworker's request, every event it causes and every request
between services on the way. The context travels

- over HTTP in the `traceparent` / `tracestate` headers (`lotse_kit.http` continues an incoming
  one, `lotse_kit.auth.request_with_service_token` sends the current one);
- with an event as the CloudEvents distributed-tracing extension (`Envelope.traceparent` /
  `tracestate`, in Kafka binary mode the `ce_traceparent` / `ce_tracestate` headers): the outbox
  stamps the current context into every event that has none (`stamp`), and the consumer makes the
  envelope's context the parent of its span for that event (`consuming`).

Export is configured from the standard `OTEL_*` environment variables (`setup_from_env`, called by
`Runtime.start`): spans are recorded and sent over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT`
or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or `OTEL_TRACES_EXPORTER=otlp`). Without it no span is
created; an incoming trace context is still passed on unchanged to the events and requests it causes
(what W3C Trace Context asks of a system that does not trace itself), at the cost of a context
variable per request or event. Baggage is not propagated: it could carry anything, personal data included.

Spans never hold personal data: routes as templates, no query strings, no exception messages (only
the exception's type), pseudonymous ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts import Envelope

log = logging.getLogger(__name__)

INSTRUMENTATION = "lotse_kit"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The span attributes Lotse adds to OpenTelemetry's semantic conventions.
ATTR_SERVICE = "lotse.service"
ATTR_OUTCOME = "lotse.outcome"
ATTR_EVENT_TYPE = "cloudevents.event_type"
ATTR_EVENT_ID = "cloudevents.event_id"

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_owned = False  # the provider was built here from the environment (flushed at stop)
# An incoming (traceparent, tracestate) passed on unchanged while no provider records spans.
_passthrough: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar("lotse_traceparent", default=None)


# ------------------------------------------------------------------ setup
def enabled() -> bool:
    """True when spans are recorded (a provider is configured)."""
    return _tracer is not None


def configure(provider: TracerProvider | None) -> None:
    """Records the kit's spans with `provider` (None: no spans, context only passed on).

    `setup_from_env` calls it; tests call it with an SDK provider and an in-memory exporter."""
    global _provider, _tracer, _owned
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION) if provider is not None else None
    _owned = False


def export_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether the `OTEL_*` environment asks for traces to be exported over OTLP."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter in ("none", "console"):
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(endpoint) or exporter == "otlp"


def setup_from_env(service: str) -> bool:
    """Configures export from the `OTEL_*` environment once per process; True when spans are recorded.

    An SDK provider another component already installed globally (e.g. `opentelemetry-instrument`) is
    used as it is. Otherwise, when `export_configured()`, a provider with a batching OTLP/HTTP exporter
    is built and installed globally: `OTEL_SERVICE_NAME` (default `lotse-<service>`),
    `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_[TRACES_]*` and `OTEL_BSP_*`
    are read by the SDK. A misconfiguration is logged and leaves tracing off: it must not stop a service."""
    global _owned
    if _tracer is not None:
        return True
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        configure(current)
        return True
    if not export_configured():
        return False
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol != "http/protobuf":
        log.error("tracing not started: only OTLP over http/protobuf is supported", extra={"protocol": protocol})
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {"service.namespace": "lotse"}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes[SERVICE_NAME] = f"lotse-{service}"
        provider = SdkTracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    except Exception as exc:  # a bad OTEL_* value: the service runs on without tracing
        log.error("tracing not started: invalid OpenTelemetry configuration", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        return False
    trace.set_tracer_provider(provider)
    configure(provider)
    _owned = True
    log.info("tracing started; exporting spans over OTLP")
    return True


async def flush(timeout_s: float = 5.0) -> None:
    """Sends the spans still buffered (at a service's stop); the exporter's thread does the waiting."""
    provider = _provider
    if _owned and provider is not None:
        force_flush = getattr(provider, "force_flush", None)
        if callable(force_flush):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(force_flush, int(timeout_s * 1000))


# ------------------------------------------------------------------ context
def _format(span_context: trace.SpanContext) -> tuple[str, str | None]:
    traceparent = f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"
    return traceparent, span_context.trace_state.to_header() or None


def current() -> tuple[str, str | None] | None:
    """The current (traceparent, tracestate): the active span's, else the one being passed on, else None."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return _format(span_context)
    return _passthrough.get()


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Adds the current `traceparent` (and `tracestate`) to outgoing HTTP headers."""
    ctx = current()
    if ctx is not None:
        headers[TRACEPARENT] = ctx[0]
        if ctx[1]:
            headers[TRACESTATE] = ctx[1]
    return headers


def stamp(envs: Sequence[Envelope[Any]]) -> list[Envelope[Any]]:
    """The envelopes, each without a trace context now carrying the current one (the outbox's stamp)."""
    ctx = current()
    if ctx is None:
        return list(envs)
    return [env if env.traceparent else dataclasses.replace(env, traceparent=ctx[0], tracestate=ctx[1]) for env in envs]


def parent_context(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context:
    """The OpenTelemetry context whose (remote) parent span is `traceparent`; an empty context (a new
    trace) when there is none or it is not valid."""
    if not traceparent:
        return otel_context.Context()
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    return _PROPAGATOR.extract(carrier, context=otel_context.Context())


def span_context_of(traceparent: str | None, tracestate: str | None = None) -> trace.SpanContext | None:
    span_context = trace.get_current_span(parent_context(traceparent, tracestate)).get_span_context()
    return span_context if span_context.is_valid else None


class _PassOn(contextlib.AbstractContextManager[None]):
    """While no provider records spans: makes an incoming trace context the current one."""

    __slots__ = ("_token", "_value")

    def __init__(self, traceparent: str, tracestate: str | None) -> None:
        self._value = (traceparent, tracestate)
        self._token: contextvars.Token[tuple[str, str | None] | None] | None = None

    def __enter__(self) -> None:
        self._token = _passthrough.set(self._value)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _passthrough.reset(self._token)


_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


@contextlib.contextmanager
def _span(
    tracer: Tracer,
    name: str,
    *,
    kind: SpanKind,
    parent: otel_context.Context | None,
    attributes: dict[str, Any],
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    # Exceptions are recorded by type only: a message may hold personal data.
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes, links=links, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as exc:
            span.set_attribute("error.type", _error_type(exc))
            span.set_status(StatusCode.ERROR)
            raise


def failed(span: Span | None, error_type: str) -> None:
    """Marks `span` as failed with `error_type` (e.g. an HTTP status code as text)."""
    if span is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(StatusCode.ERROR)


# ------------------------------------------------------------------ HTTP
def server(
    service: str, method: str, route: str | None, scheme: str, traceparent: str | None, tracestate: str | None
) -> contextlib.AbstractContextManager[Span | None]:
    """The server span of one request, continuing the caller's `traceparent`; without a provider, the
    caller's context passed on (or nothing)."""
    tracer = _tracer
    if tracer is None:
        return _PassOn(traceparent, tracestate) if traceparent and span_context_of(traceparent) else _NOTHING
    attributes: dict[str, Any] = {ATTR_SERVICE: service, "http.request.method": method, "url.scheme": scheme}
    if route:
        attributes["http.route"] = route
    name = f"{method} {route}" if route else method
    return _span(tracer, name, kind=SpanKind.SERVER, parent=parent_context(traceparent, tracestate), attributes=attributes)


def client(method: str, host: str | None, port: int | None, path: str) -> contextlib.AbstractContextManager[Span | None]:
    """The client span of a request to another service (`inject` then adds its context to the headers).
    The path carries pseudonymous ids at most; the query string is left out."""
    tracer = _tracer
    if tracer is None:
        return _NOTHING
    attributes: dict[str, Any] = {"http.request.method": method, "url.path": path.split("?", 1)[0]}
    if host:
        attributes["server.address"] = host
    if port:
        attributes["server.port"] = port
    return _span(tracer, method, kind=SpanKind.CLIENT, parent=None, attributes=attributes)


# ------------------------------------------------------------------ Kafka consumers
def _messaging(service: str, consumer: str) -> dict[str, Any]:
    return {
        ATTR_SERVICE: service,
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": consumer,
    }


def batch(service: str, consumer: str, envs: Sequence[Envelope[Any]]) -> contextlib.AbstractContextManager[Span | None]:
    """The span around one batch transaction (and the subscription's `prepare`); each event's own span links
    to it. When every event belongs to one trace (a batch of one, under light load), the batch joins that
    trace, so the requests `prepare` makes do too; otherwise it starts one of its own. (It does not link to
    the events' contexts itself: their spans do, and a hundred links per batch cost more than they tell.)"""
    tracer = _tracer
    first = envs[0].traceparent if envs else None
    # The trace id is characters 3-35 of a (well-formed: contracts.envelope.trace_context) traceparent.
    one_trace = first is not None and all(e.traceparent is not None and e.traceparent[3:35] == first[3:35] for e in envs)
    if tracer is None:
        if first is not None and one_trace and all(e.traceparent == first for e in envs):
            return _PassOn(first, envs[0].tracestate)
        return _NOTHING
    parent = parent_context(first, envs[0].tracestate) if one_trace else otel_context.Context()
    attributes = {**_messaging(service, consumer), "messaging.batch.message_count": len(envs)}
    return _span(tracer, f"process batch {consumer}", kind=SpanKind.CONSUMER, parent=parent, attributes=attributes)


def consuming(
    service: str, consumer: str, env: Envelope[Any], topic: str, partition: int, offset: int, batch_span: Span | None = None
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of handling one event: its parent is the envelope's trace context (a new trace when it
    has none, e.g. from an older producer), with a link to the batch it was handled in. Without a
    provider, the envelope's context is passed on to what the handler does (or nothing happens)."""
    tracer = _tracer
    if tracer is None:
        return _PassOn(env.traceparent, env.tracestate) if env.traceparent else _NOTHING
    attributes = {
        **_messaging(service, consumer),
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        ATTR_EVENT_ID: str(env.id),  # also the message id: OpenTelemetry's messaging.message.id would repeat it
        ATTR_EVENT_TYPE: env.type,
    }
    links = [Link(batch_span.get_span_context())] if batch_span is not None and batch_span.get_span_context().is_valid else []
    return _span(
        tracer,
        f"process {topic}",
        kind=SpanKind.CONSUMER,
        parent=parent_context(env.traceparent, env.tracestate),
        attributes=attributes,
        links=links,
    )
