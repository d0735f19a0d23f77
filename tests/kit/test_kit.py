"""The service kit against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import httpx
import pytest

from contracts import decode, encode
from contracts.topics import dlq
from lotse_kit import db
from lotse_kit.consumer import Rejected
from lotse_kit.http import create_app
from tests.kafka_helpers import eventually, produce_raw, read_topic
from tests.kit.conftest import publish_via_outbox, record_effect, registered


async def effects(rt) -> list[asyncpg.Record]:
    return await rt.db.pool.fetch("SELECT event_id, client_id, note FROM effects ORDER BY note")


async def test_publish_consume_db_round_trip(make_runtime, runtimes, topic, kafka_bootstrap):
    producer = make_runtime("p")
    consumer = make_runtime("c", handlers={"lotse.client.registered": record_effect})
    for rt in (producer, consumer):
        await rt.start()
        runtimes.append(rt)

    env = registered()
    await publish_via_outbox(producer, env, topic)

    rows = await eventually(lambda: effects(consumer))
    assert [(r["event_id"], r["client_id"]) for r in rows] == [(env.id, env.data.client_id)]
    # The relay deleted the published row, and the record on the topic is our CloudEvent keyed by client id.
    assert await producer.db.pool.fetchval("SELECT count(*) FROM outbox") == 0
    [rec] = await read_topic(kafka_bootstrap, topic)
    assert rec.key == str(env.data.client_id).encode()
    assert decode(rec.headers, rec.value).id == env.id


async def test_poison_message_goes_to_dlq_and_next_good_one_is_processed(make_runtime, runtimes, topic, kafka_bootstrap):
    rt = make_runtime(handlers={"lotse.client.registered": record_effect})
    await rt.start()
    runtimes.append(rt)

    good = registered()
    good_rec = encode(good)
    invalid = encode(registered())
    bad_data = json.loads(invalid.value)
    bad_data["preferred_language"] = 42  # schema-invalid
    unknown = [(k, v if k != "ce_type" else b"lotse.unheard.of") for k, v in encode(registered()).headers]
    key = good_rec.key
    await produce_raw(
        kafka_bootstrap,
        topic,
        [
            (key, b"\xff\xfe not json", good_rec.headers),  # undecodable
            (key, json.dumps(bad_data).encode(), invalid.headers),
            (key, good_rec.value, unknown),
            (key, good_rec.value, [*good_rec.headers, ("trace", b"\xc3\x28")]),  # a header that is not UTF-8
            (key, good_rec.value, good_rec.headers),
        ],
    )

    rows = await eventually(lambda: effects(rt))
    assert [r["event_id"] for r in rows] == [good.id]

    dead = await read_topic(kafka_bootstrap, dlq(topic), until=4, settle=1.0)
    kinds = [dict(r.headers)["lotse_dlq_error_kind"].decode() for r in dead]
    assert kinds == ["undecodable", "schema-invalid", "unknown-type", "undecodable"]
    assert "not UTF-8" in dict(dead[3].headers)["lotse_dlq_reason"].decode()
    first = dict(dead[0].headers)
    assert first["lotse_dlq_original_topic"].decode() == topic
    assert first["lotse_dlq_original_offset"] == b"0"
    assert "not JSON" in first["lotse_dlq_reason"].decode()
    assert dead[0].value == b"\xff\xfe not json"  # the record is moved unchanged


async def test_rejected_event_is_dead_lettered_with_reason(make_runtime, runtimes, topic, kafka_bootstrap):
    async def refuse(env, conn, deps):
        raise Rejected(f"organisation {env.acting_org} may not do that")

    rt = make_runtime(handlers={"lotse.client.registered": refuse})
    await rt.start()
    runtimes.append(rt)
    env = registered(org="awo-paderborn")
    await publish_via_outbox(rt, env, topic)

    [dead] = await read_topic(kafka_bootstrap, dlq(topic))
    h = {k: v.decode() for k, v in dead.headers}
    assert h["lotse_dlq_error_kind"] == "rejected"
    assert h["lotse_dlq_reason"] == "organisation awo-paderborn may not do that"
    assert h["ce_id"] == str(env.id)


async def test_redelivery_across_a_restart_is_applied_once(make_runtime, runtimes, topic, kafka_bootstrap):
    """After a restart, the same event delivered again (as a producer retry or replay would) changes nothing."""
    rt = make_runtime(handlers={"lotse.client.registered": record_effect})
    await rt.start()
    env = registered()
    await publish_via_outbox(rt, env, topic)
    await eventually(lambda: effects(rt))
    await rt.stop()

    # A new process on the same schema and consumer group.
    again = make_runtime(handlers={"lotse.client.registered": record_effect})
    [consumer] = again.consumers
    await again.start()
    runtimes.append(again)
    await produce_raw(kafka_bootstrap, topic, [(encode(env).key, encode(env).value, encode(env).headers)])
    await eventually(lambda: again.db.pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1", env.id))
    await eventually(lambda: _duplicates_seen(consumer.name))
    assert [r["event_id"] for r in await effects(again)] == [env.id]


@pytest.mark.slow
async def test_outbox_publishes_rows_written_while_kafka_was_down(infra, make_runtime, runtimes, topic, kafka_bootstrap):
    if not infra.kafka_restartable():
        pytest.skip("the broker comes from LOTSE_KAFKA_BOOTSTRAP and cannot be stopped by the tests")
    rt = make_runtime(outbox_retry_max_s=2.0)
    await rt.start()
    runtimes.append(rt)

    infra.stop_kafka()
    try:
        envs = [registered() for _ in range(5)]
        for env in envs:
            await publish_via_outbox(rt, env, topic)
        # While the broker is away the rows stay, and the relay records its failed attempts.
        await eventually(lambda: rt.db.pool.fetchval("SELECT count(*) FROM outbox WHERE attempts > 0"), timeout=90)
        assert await rt.db.pool.fetchval("SELECT count(*) FROM outbox") == 5
    finally:
        infra.start_kafka()

    records = await read_topic(kafka_bootstrap, topic, until=5, timeout=120, settle=2.0)
    assert sorted(decode(r.headers, r.value).id for r in records) == sorted(e.id for e in envs)
    await eventually(lambda: rt.db.pool.fetchval("SELECT count(*) = 0 FROM outbox"))


async def test_the_relay_is_woken_by_the_commit_not_by_its_poll(make_runtime, runtimes, topic, kafka_bootstrap):
    # A poll interval far longer than the test: only the notification sent at commit can bring the row out.
    rt = make_runtime(outbox_poll_interval_s=300.0)
    await rt.start()
    runtimes.append(rt)
    await asyncio.sleep(1.0)  # the relay has done its first pass and now waits
    env = registered()
    t0 = time.monotonic()
    await publish_via_outbox(rt, env, topic)
    [rec] = await read_topic(kafka_bootstrap, topic, until=1, timeout=20)
    assert decode(rec.headers, rec.value).id == env.id
    assert time.monotonic() - t0 < 10


async def test_only_one_relay_leads_per_service(make_runtime, runtimes, topic, kafka_bootstrap):
    a, b = make_runtime(), make_runtime()
    for rt in (a, b):
        await rt.start()
        runtimes.append(rt)
    await eventually(lambda: a.relay.is_leader or b.relay.is_leader)
    await asyncio.sleep(0.5)
    assert a.relay.is_leader != b.relay.is_leader
    envs = [registered() for _ in range(20)]
    for i, env in enumerate(envs):
        await publish_via_outbox(a if i % 2 else b, env, topic)
    records = await read_topic(kafka_bootstrap, topic, until=20, settle=1.5)
    assert sorted(decode(r.headers, r.value).id for r in records) == sorted(e.id for e in envs)


async def test_outbox_enqueue_refuses_to_run_outside_a_transaction(make_runtime, runtimes, topic):
    rt = make_runtime()
    await rt.start()
    runtimes.append(rt)
    async with rt.db.pool.acquire() as conn:
        from lotse_kit import outbox

        with pytest.raises(RuntimeError, match="inside the transaction"):
            await outbox.enqueue(conn, registered(), topic)


async def test_migrations_are_recorded_idempotent_and_guarded(database_url, unique, admin_db):
    schema, role = f"mig_{unique}", f"lotse_mig_{unique}"
    ms = [db.Migration("t:001_a", "CREATE TABLE a (x int); GRANT SELECT ON a TO {{role}};")]
    assert await db.provision(database_url, schema=schema, role=role, password="pw", migrations=ms) == ["t:001_a"]
    assert await db.provision(database_url, schema=schema, role=role, password="pw", migrations=ms) == []
    versions = await admin_db.fetch(f"SELECT version FROM {schema}.schema_migrations")
    assert [r["version"] for r in versions] == ["t:001_a"]
    changed = [db.Migration("t:001_a", "CREATE TABLE a (y int);")]
    with pytest.raises(db.MigrationError, match="changed after it was applied"):
        await db.provision(database_url, schema=schema, role=role, password="pw", migrations=changed)
    # The service role reads what it was granted and nothing more.
    conn = await asyncpg.connect(db.service_dsn(database_url, role, "pw"))
    try:
        await conn.fetch(f"SELECT * FROM {schema}.a")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"INSERT INTO {schema}.a VALUES (1)")
    finally:
        await conn.close()


async def test_health_ready_and_metrics(make_runtime, topic):
    rt = make_runtime(handlers={"lotse.client.registered": record_effect})
    app = create_app(rt)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http,
    ):
        assert (await http.get("/health/live")).status_code == 200
        ready = await eventually(lambda: _ready(http), timeout=30)
        assert ready["checks"]["kafka"] == "up" and ready["checks"]["postgres"] == "up"

        await publish_via_outbox(rt, registered(), topic)
        await eventually(lambda: effects(rt))
        text = (await http.get("/metrics")).text
        assert f'lotse_events_consumed_total{{consumer="{rt.consumers[0].name}"' in text
        assert "lotse_handler_seconds_bucket" in text
        assert "lotse_outbox_backlog" in text
        assert "lotse_events_published_total" in text

        await rt.db.pool.close()  # the database goes away under the service
        down = await http.get("/health/ready")
        assert down.status_code == 503
        assert "postgres" in down.json()["down"]


def _duplicates_seen(consumer: str) -> bool:
    from lotse_kit import metrics

    for metric in metrics.events_consumed.collect():
        for sample in metric.samples:
            if sample.labels.get("consumer") == consumer and sample.labels.get("outcome") == "duplicate" and sample.value >= 1:
                return True
    return False


async def _ready(http: httpx.AsyncClient):
    r = await http.get("/health/ready")
    return r.json() if r.status_code == 200 else None


async def test_shutdown_is_bounded_when_a_publish_never_completes(make_runtime, topic):
    """A hung publish must not hang the service's shutdown, and its outbox row must survive it."""
    rt = make_runtime(shutdown_step_timeout_s=1.0)
    publishing = asyncio.Event()

    async def publish_that_never_completes(*_args, **_kwargs):
        publishing.set()
        await asyncio.Event().wait()

    rt.publish = publish_that_never_completes  # the relay takes its publish function at start
    await rt.start()
    env = registered()
    await publish_via_outbox(rt, env, topic)
    await asyncio.wait_for(publishing.wait(), timeout=10)

    started = time.monotonic()
    await asyncio.wait_for(rt.stop(), timeout=30)
    assert time.monotonic() - started < 10
    conn = await rt.db.connect("test")
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", env.id) == 1
    finally:
        await conn.close()


async def test_killed_between_db_commit_and_offset_commit_kafka_redelivers_and_the_effect_happens_once(
    make_runtime, runtimes, topic, unique, kafka_bootstrap
):
    """The consumer process dies (SIGKILL) after its database commit and before its offset commit.

    Kafka must deliver the record again to the group's next member, and the effect must still happen once.
    """
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    schema = f"kt_{unique}"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.crash_consumer", topic, schema],
        cwd=repo,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        out: list[str] = []

        def wait_started() -> bool:
            for line in proc.stdout:  # type: ignore[union-attr]
                out.append(line)
                if line.strip() == "started":
                    return True
            return False

        assert await asyncio.wait_for(asyncio.to_thread(wait_started), timeout=60), "".join(out)
        env = registered()
        rec = encode(env)
        await produce_raw(kafka_bootstrap, topic, [(rec.key, rec.value, rec.headers)])
        code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=60)
        out.append(proc.stdout.read())
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == -signal.SIGKILL, "".join(out)  # it really died, in the window

    # Same schema (same processed_events) and same consumer group: the group's next member.
    again = make_runtime(handlers={"lotse.client.registered": record_effect})
    [consumer] = again.consumers
    await again.start()
    runtimes.append(again)
    # The offset was never committed, so Kafka delivers the record again; the kit sees it was applied.
    await eventually(lambda: _duplicates_seen(consumer.name), timeout=60)
    assert [r["event_id"] for r in await effects(again)] == [env.id]
    assert await again.db.pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1", env.id) == 1


async def test_outbox_refuses_an_event_the_service_did_not_declare(make_runtime, runtimes, topic):
    from contracts import new_event
    from contracts.events import ConsentExpired
    from lotse_kit.declaration import UndeclaredEvent

    rt = make_runtime()
    await rt.start()
    runtimes.append(rt)
    from datetime import UTC, datetime

    expired = new_event(
        ConsentExpired(client_id=uuid.uuid4(), consent_id=uuid.uuid4(), expired_at=datetime.now(UTC)), source="/lotse/kittest"
    )
    async with rt.db.pool.acquire() as conn, conn.transaction():
        with pytest.raises(UndeclaredEvent, match=r"does not declare lotse\.consent\.expired"):
            await rt.outbox.enqueue(conn, expired, topic)
        # The declared one on the declared topic goes through.
        await rt.outbox.enqueue(conn, registered(), topic)
