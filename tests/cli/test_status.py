"""`lotse status` against the real broker and database: what it reports, and that it exits 1 when a service is down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner

from contracts import topics
from lotse_cli.main import app
from lotse_kit.kafka import connection, ensure_topics
from services.audit.bootstrap import bootstrap as audit_bootstrap
from services.audit.tests.conftest import DIRECTORY, fast_settings
from tests.fixtures import serving
from tests.kafka_helpers import produce_raw
from tests.peers import free_port


async def test_status_reports_services_lag_and_dead_letters_and_exits_1_when_one_is_down(
    infra, kafka_bootstrap: str, topic_namespace: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = topic_namespace
    monkeypatch.setenv("LOTSE_TOPIC_NAMESPACE", ns)
    # Four services are not running (nothing listens on their ports); audit runs.
    for name in ("intake", "consent", "notifications", "gateway"):
        monkeypatch.setenv(f"LOTSE_{name.upper()}_HTTP_PORT", str(free_port()))
    # Dead letters: 2 records on a .dlq topic of this namespace.
    dlq = ns + topics.dlq(topics.REFERRALS)
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(dlq, partitions=1)])
    await produce_raw(kafka_bootstrap, dlq, [(None, b"x", []), (None, b"y", [])])
    # Lag: a partner's group that read 1 of 3 records on its inbox.
    inbox = ns + topics.partner_inbox("caritas-paderborn")
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(inbox, partitions=1)])
    await produce_raw(kafka_bootstrap, inbox, [(None, b"1", []), (None, b"2", []), (None, b"3", [])])
    group = f"{ns}partner.caritas-paderborn.reader"
    consumer = AIOKafkaConsumer(
        inbox, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **connection(kafka_bootstrap).aiokafka()
    )
    await consumer.start()
    try:
        got = []
        while not got:
            got = [r for rs in (await consumer.getmany(timeout_ms=500, max_records=1)).values() for r in rs]
        from aiokafka import TopicPartition

        await consumer.commit({TopicPartition(inbox, 0): got[0].offset + 1})
    finally:
        await consumer.stop()

    app_ = audit_bootstrap(fast_settings(ns, tmp_path), schema=f"audit_{unique}", directory=DIRECTORY)
    port = free_port()
    monkeypatch.setenv("LOTSE_AUDIT_HTTP_PORT", str(port))
    async with serving(app_, port=port):
        result = await asyncio.to_thread(CliRunner().invoke, app, ["status", "--json"])
    assert result.exit_code == 1, result.output
    assert result.stdout.lstrip().startswith("{"), result.output
    doc = json.loads(result.stdout)
    state = {s["name"]: (s["live"], s["ready"]) for s in doc["services"]}
    assert state == {
        "intake": (False, False),
        "consent": (False, False),
        "notifications": (False, False),
        "gateway": (False, False),
        "audit": (True, True),
    }
    assert any(p.startswith("intake: not live") for p in doc["problems"]) and doc["ok"] is False
    assert {"topic": dlq, "records": 2} in doc["dead_letters"]
    [lag] = [lg for lg in doc["lag"] if lg["group"] == group]
    assert (lg := lag)["committed"] == 1 and lg["end"] == 3 and lg["lag"] == 2
    assert any(a["schema"] == f"audit_{unique}" for a in doc["audit"])
