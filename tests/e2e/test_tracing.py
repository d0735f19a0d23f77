"""One referral is one trace: from the caseworker's request through intake, Kafka and consent to the
partner's inbox record (`ce_traceparent`) and its audit entry, over the running network
(tests/e2e/network.py). The services record spans with an SDK provider and the SDK's in-memory exporter,
as they would with an OTLP exporter configured from `OTEL_*` (docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import decode, topics
from lotse_kit import tracing
from tests.auth.conftest import Keycloak
from tests.e2e.network import CARITAS, JOBCENTER, running_network
from tests.kafka_helpers import eventually, read_topic
from tests.peers import MailSink

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CASEWORKER_SPAN = "b7ad6b7169203331"  # the caseworker's own system's span, sent in its request


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    yield exporter
    tracing.configure(None)
    provider.shutdown()


async def test_one_referral_is_one_trace_to_the_partner_inbox_and_the_audit_log(
    spans: InMemorySpanExporter,
    kafka_bootstrap: str,
    keycloak: Keycloak,
    unique: str,
    topic_namespace: str,
    smtp: MailSink,
    tmp_path: Path,
) -> None:
    async with running_network(keycloak, kafka_bootstrap, unique, topic_namespace, smtp, tmp_path) as net:
        jc = net.callers["jobcenter"]
        r = await net.intake.post(
            "/v1/clients",
            headers=jc,
            json={
                "registering_org": JOBCENTER,
                "given_name": "Olena",
                "family_name": "Koval",
                "date_of_birth": "1988-04-12",
                "email": "olena.koval@example.org",
                "preferred_language": "uk",
                "needs": ["integration_course"],
            },
        )
        assert r.status_code == 201, r.text
        client_id = r.json()["client_id"]
        await net.consent_to_referral(jc, client_id, CARITAS, "uk")

        # The caseworker's system sends its trace context with the referral.
        r = await net.intake.post(
            f"/v1/clients/{client_id}/referrals",
            headers={**jc, "traceparent": f"00-{TRACE_ID}-{CASEWORKER_SPAN}-01"},
            json={"need": "integration_course", "categories": ["identity", "contact"]},
        )
        assert r.status_code == 201, r.text
        assert r.json()["to_org"] == CARITAS

        # The sealed referral in Caritas's inbox carries the same trace (read as Caritas itself).
        inbox = await read_topic(
            net.caritas.kafka,
            net.topic(topics.partner_inbox(CARITAS)),
            until=lambda rs: any(decode(x.headers, x.value).type == "lotse.referral.sent" for x in rs),
            group=f"{net.ns}partner.{CARITAS}.tracing",
        )
        [rec] = [x for x in inbox if decode(x.headers, x.value).type == "lotse.referral.sent"]
        traceparent = dict(rec.headers)["ce_traceparent"].decode()
        assert traceparent.split("-")[1] == TRACE_ID
        sent = decode(rec.headers, rec.value)
        assert sent.traceparent == traceparent

        # ...and so does its entry in the audit log.
        async def inbox_entry() -> dict[str, object] | None:
            r = await net.audit.get("/v1/audit/entries", params={"client_id": client_id, "limit": 200}, headers=net.callers["auditor"])
            assert r.status_code == 200, r.text
            found = [e["entry"] for e in r.json()["items"] if e["entry"].get("ce", {}).get("id") == str(sent.id)]
            return found[0] if found else None

        entry = await eventually(inbox_entry, timeout=60)
        assert isinstance(entry, dict) and entry["ce"]["ext_traceparent"] == traceparent

    # The spans on the way, all in the caseworker's trace: intake's server span for the referral (child of
    # the caseworker's span), and the consent consumer's span for the event intake wrote, which wrote the
    # inbox record (the record's traceparent names it).
    finished = [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == TRACE_ID]
    [referral] = [s for s in finished if s.kind == SpanKind.SERVER and s.name == "POST /v1/clients/{client_id}/referrals"]
    assert referral.parent is not None and f"{referral.parent.span_id:016x}" == CASEWORKER_SPAN
    assert referral.attributes is not None and referral.attributes[tracing.ATTR_SERVICE] == "intake"
    [writer] = [s for s in finished if f"{s.context.span_id:016x}" == traceparent.split("-")[2]]
    assert writer.kind == SpanKind.CONSUMER and writer.attributes is not None and writer.attributes[tracing.ATTR_SERVICE] == "consent"
    # Every span of the trace hangs off another span of it, up to the caseworker's.
    ids = {s.context.span_id for s in finished} | {int(CASEWORKER_SPAN, 16)}
    assert all(s.parent is not None and s.parent.span_id in ids for s in finished)
