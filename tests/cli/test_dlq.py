"""`lotse dlq replay` against the real broker: each dead letter goes back once, byte for byte."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from contracts import topics
from lotse_cli.main import app
from lotse_kit.kafka import ensure_topics
from tests.kafka_helpers import produce_raw


async def test_dlq_replay_puts_each_dead_letter_back_once_without_its_dlq_headers(
    infra, kafka_bootstrap: str, topic_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contracts import encode, new_event
    from contracts.events import ClientErased
    from tests.kafka_helpers import read_topic

    monkeypatch.setenv("LOTSE_TOPIC_NAMESPACE", topic_namespace)
    original = topic_namespace + topics.CLIENTS
    dlq = topics.dlq(original)
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(original, partitions=1), topics.TopicSpec(dlq, partitions=1)])
    rec = encode(
        new_event(
            ClientErased(client_id=uuid.uuid4(), requested_by_org="jobcenter-kreis-paderborn", erased_at=datetime.now(UTC)),
            source="/lotse/intake",
        )
    )
    dead = [
        *rec.headers,
        ("lotse_dlq_error_kind", b"failed"),
        ("lotse_dlq_reason", b"db away"),
        ("lotse_dlq_original_topic", original.encode()),
    ]
    ref = [("lotse_dlq_reference", b"true"), ("lotse_dlq_original_topic", original.encode())]
    await produce_raw(kafka_bootstrap, dlq, [(rec.key, rec.value, dead), (None, b"cut", ref)])

    runner = CliRunner()
    dry = await asyncio.to_thread(runner.invoke, app, ["dlq", "replay", original, "--dry-run"])
    assert dry.exit_code == 0 and "would replay 1, skipped 1" in dry.output, dry.output
    first = await asyncio.to_thread(runner.invoke, app, ["dlq", "replay", original])
    assert first.exit_code == 0 and "replayed 1, skipped 1" in first.output, first.output
    again = await asyncio.to_thread(runner.invoke, app, ["dlq", "replay", original])
    assert again.exit_code == 0 and "replayed 0, skipped 0" in again.output, again.output

    [back] = await read_topic(kafka_bootstrap, original, until=1, settle=1.0)
    assert back.value == rec.value and back.key == rec.key
    assert list(back.headers) == list(rec.headers)  # byte for byte, the lotse_dlq_* headers gone
