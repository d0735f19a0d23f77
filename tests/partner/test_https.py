"""The kit over HTTPS: the same consumer and handler (the welfare example's) against the gateway, served on loopback
against the real broker and database, with the partner system's token. Records come as structured CloudEvents,
are acknowledged only after the handler returned, and the answers land on the partner's outbox topic."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from contracts import decode, encode, new_event, topics
from contracts.events import ConsentWithdrawn, ReferralAccepted, ReferralCompleted, WithdrawalAcknowledged
from contracts.sealed import verify_ack
from examples.welfare.counselling_tool import CounsellingTool
from lotse_cli.main import app as app_cli
from lotse_kit.kafka import ensure_topics
from lotse_kit.network import OrgDirectory, parse_network
from lotse_partner import DeadLetters, HttpsTransport, PartnerInbox, PartnerKeys
from services.gateway.bootstrap import bootstrap
from services.gateway.config import GatewaySettings
from tests.fixtures import FAST_KIT_SETTINGS, as_org, serving
from tests.kafka_helpers import produce_raw, read_topic
from tests.partner.test_partner_kit import CARITAS, CONTENT, referral_to

NETWORK = f"""
version: 1
district: Kreis Paderborn
name: Integrationsnetzwerk (partner kit over HTTPS)
organisations:
  - id: jobcenter-kreis-paderborn
    name: Jobcenter
    kind: jobcenter
    languages: [de]
    contact_email: team@jobcenter.example
  - id: {CARITAS}
    name: Caritas Paderborn
    kind: welfare_association
    languages: [de]
    contact_email: it@caritas.example
    inbox: {{transport: https, mode: pull}}
"""


def token() -> Any:
    header = as_org(CARITAS, "partner_system")["Authorization"].removeprefix("Bearer ")

    async def get() -> str:
        return header

    return get


async def test_the_welfare_tool_reads_and_answers_over_https_as_over_kafka(
    infra: object, kafka_bootstrap: str, topic_namespace: str, unique: str, tmp_path: Path
) -> None:
    ns = topic_namespace
    settings = GatewaySettings(topic_namespace=ns, kafka_create_topics=True, **FAST_KIT_SETTINGS)
    await ensure_topics(settings.kafka(), [type(s)(ns + s.name, s.partitions, s.config) for s in topics.partner_topics(CARITAS)])
    app = bootstrap(settings, schema=f"gwp_{unique}", directory=OrgDirectory.of(parse_network(NETWORK)))

    keys = PartnerKeys.load_or_create(tmp_path / "caritas.json", CARITAS)
    stranger = PartnerKeys.load_or_create(tmp_path / "stranger.json", "awo-kreis-paderborn")
    referral = referral_to(keys.public("enc"), CONTENT)
    referral_env = decode(referral.headers, referral.value)
    client_id = referral_env.data.client_id
    withdrawn = encode(
        new_event(ConsentWithdrawn(client_id=client_id, consent_id=uuid.uuid4(), withdrawn_at=datetime.now(UTC)), source="/lotse/consent")
    )
    not_ours = referral_to(stranger.public("enc"), CONTENT)
    # One key: one partition, in this order.
    await produce_raw(
        kafka_bootstrap, ns + topics.partner_inbox(CARITAS), [(referral.key, r.value, r.headers) for r in (referral, not_ours, withdrawn)]
    )

    tool = CounsellingTool(tmp_path / "cases.sqlite", keys, CARITAS)
    dlq = DeadLetters(tmp_path / "dlq")
    async with serving(app) as url:
        transport = HttpsTransport(url, CARITAS, token(), long_poll_s=0.5)
        await PartnerInbox(transport, keys, tool.handle, dlq).run(limit=3)

        # The referral was opened and booked; the withdrawal closed the case; the stranger's record is a dead letter.
        [case] = tool.cases()
        assert case["referral_id"] == str(referral_env.data.referral_id) and case["name"] == "Olena Koval" and case["status"] == "closed"
        [letter] = dlq.list()
        assert letter["kind"] == "unsealable" and letter["original"]["event"]["specversion"] == "1.0" and letter["position"]
        # Everything was acknowledged: the inbox is empty for the partner now.
        async with httpx.AsyncClient(base_url=url) as http:
            page = (await http.get(f"/v1/partners/{CARITAS}/inbox", headers=as_org(CARITAS, "partner_system"))).json()
        assert page["records"] == []

        # Completion later, from another process: the same helper over the same transport kind.
        later = HttpsTransport(url, CARITAS, token())
        tool.db.execute("UPDATE cases SET status = 'booked'")  # (closed by the withdrawal above; reopened to complete it)
        await tool.complete(case["referral_id"], "Integrationskurs angemeldet", later)
        await later.stop()

    out = await read_topic(kafka_bootstrap, ns + topics.partner_outbox(CARITAS), until=3)
    answers = [decode(r.headers, r.value) for r in out]
    by_type = {type(a.data): a for a in answers}
    accepted, ack, completed = by_type[ReferralAccepted], by_type[WithdrawalAcknowledged], by_type[ReferralCompleted]
    assert accepted.source == f"/partners/{CARITAS}" and accepted.data.referral_id == referral_env.data.referral_id
    assert accepted.data.appointment_at == datetime.fromisoformat(case["appointment"])
    assert verify_ack(ack.data.signature, str(client_id), str(decode(withdrawn.headers, withdrawn.value).id), [keys.public("sig")])
    assert completed.data.outcome == "Integrationskurs angemeldet"


async def test_partner_listen_over_the_gateway_prints_the_inbox_and_acknowledges_nothing(
    infra: object, kafka_bootstrap: str, topic_namespace: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = topic_namespace
    settings = GatewaySettings(topic_namespace=ns, kafka_create_topics=True, **FAST_KIT_SETTINGS)
    await ensure_topics(settings.kafka(), [type(s)(ns + s.name, s.partitions, s.config) for s in topics.partner_topics(CARITAS)])
    app = bootstrap(settings, schema=f"gwl_{unique}", directory=OrgDirectory.of(parse_network(NETWORK)))
    keys = PartnerKeys.load_or_create(tmp_path / "caritas.json", CARITAS)
    rec = referral_to(keys.public("enc"), CONTENT)
    await produce_raw(kafka_bootstrap, ns + topics.partner_inbox(CARITAS), [(rec.key, rec.value, rec.headers)])
    monkeypatch.setenv("LOTSE_PARTNER_TOKEN", as_org(CARITAS, "partner_system")["Authorization"].removeprefix("Bearer "))
    async with serving(app) as url:
        args = ["partner", "listen", "--org", CARITAS, "--gateway", url, "--json", "--limit", "1", "--keys", str(tmp_path / "caritas.json")]
        result = await asyncio.to_thread(CliRunner().invoke, app_cli, args)
        assert result.exit_code == 0, result.output
        [line] = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
        assert line["type"] == "lotse.referral.sent" and line["opened"]["personal_data"]["identity"]["family_name"] == "Koval"
        assert line["cursor"]
        async with httpx.AsyncClient(base_url=url) as http:
            page = (await http.get(f"/v1/partners/{CARITAS}/inbox", headers=as_org(CARITAS, "partner_system"))).json()
        assert [r["event"]["id"] for r in page["records"]] == [line["id"]]  # still there: listening acknowledged nothing
