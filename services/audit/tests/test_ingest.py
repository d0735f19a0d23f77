"""Ingest against the real broker and database: every record logged once, as what it is, without personal data."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import date

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import encode, new_event, topics
from contracts.events import PREVIOUS_VERSIONS, ClientRegistered, Contact, DisclosureRequestedV1, Identity, PersonalData
from lotse_kit.kafka import admin_client, connection, ensure_topics
from services.audit.tests.conftest import AUDITOR, ORG, PARTNER, fast_settings, now, partner_referral, running_audit
from tests.kafka_helpers import eventually, produce_raw

PERSONAL_STRINGS = [b"Olena", b"Kovalenko", b"olena.kovalenko@example.org", b"5251 123456", b"1990-04-12", b"Jobcenter letter"]


def registered(client_id: uuid.UUID, language: str = "uk"):
    return new_event(
        ClientRegistered(client_id=client_id, registering_org=ORG, responsible_org=ORG, preferred_language=language, registered_at=now()),
        source="/lotse/intake",
        acting_org=ORG,
    )


V1_REQUEST = next(s for s in PREVIOUS_VERSIONS if s.model is DisclosureRequestedV1)


def disclosure_requested(client_id: uuid.UUID):
    """A v1 request, which carried the personal data itself: such records may still be on the topic."""
    data = DisclosureRequestedV1(
        client_id=client_id,
        request_id=uuid.uuid4(),
        referral_id=uuid.uuid4(),
        from_org=ORG,
        to_org=PARTNER,
        service="migrationsberatung",
        categories=["identity", "contact"],
        free_text="Olena needs help with the Jobcenter letter",
        personal_data=PersonalData(
            identity=Identity(given_name="Olena", family_name="Kovalenko", date_of_birth=date(1990, 4, 12)),
            contact=Contact(email="olena.kovalenko@example.org", phone="+49 5251 123456"),
        ),
        requested_at=now(),
    )
    return new_event(data, source="/lotse/intake", acting_org=ORG, spec=V1_REQUEST)


async def entries(audit) -> list[dict]:
    rows = await audit.pool.fetch("SELECT idx, entry, leaf_hash FROM audit_log ORDER BY idx")
    return [{"idx": r["idx"], "raw": bytes(r["entry"]), "doc": json.loads(r["entry"]), "leaf": bytes(r["leaf_hash"])} for r in rows]


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def test_every_record_is_logged_as_what_it_is_without_personal_data(audit, kafka_bootstrap):
    client = uuid.uuid4()
    reg = registered(client)
    req = disclosure_requested(client)
    inbox = partner_referral(client, uuid.uuid4(), date_of_birth=date(1990, 4, 12))
    await audit.produce(topics.CLIENTS, reg)
    await audit.produce(topics.DISCLOSURE_REQUESTS, req)
    await audit.produce(topics.partner_inbox(PARTNER), inbox)
    good = encode(registered(uuid.uuid4()))
    # Not a CloudEvent at all, with a header that is not even UTF-8.
    await produce_raw(
        kafka_bootstrap, audit.topic(topics.REFERRALS), [(b"k", b"\xff\xfe not json", [("ce_type", b"\xff\xfe"), ("x", b"1")])]
    )
    # A record the kit's consumer dead-lettered, on the DLQ topic.
    dlq_headers = [
        *good.headers,
        ("lotse_dlq_error_kind", b"rejected"),
        ("lotse_dlq_reason", b"not allowed"),
        ("lotse_dlq_original_topic", audit.topic(topics.REFERRALS).encode()),
    ]
    await produce_raw(kafka_bootstrap, audit.topic(topics.dlq(topics.REFERRALS)), [(good.key, good.value, dlq_headers)])

    await audit.wait_for_size(5)
    logged = await entries(audit)
    assert [e["idx"] for e in logged] == list(range(5))
    by_topic = {e["doc"]["topic"]: e for e in logged}
    assert set(by_topic) == {
        topics.CLIENTS,
        topics.DISCLOSURE_REQUESTS,
        topics.partner_inbox(PARTNER),
        topics.REFERRALS,
        topics.dlq(topics.REFERRALS),
    }

    # No names, birth dates, contacts or free text anywhere in the log.
    for e in logged:
        for s in PERSONAL_STRINGS:
            assert s not in e["raw"], (s, e["doc"]["topic"])
        assert e["leaf"] == hashlib.sha256(b"\x00" + e["raw"]).digest()

    # Personal-data topics: only the hash of the data and its categories.
    for t, env in ((topics.DISCLOSURE_REQUESTS, req), (topics.partner_inbox(PARTNER), inbox)):
        doc = by_topic[t]["doc"]
        assert "data" not in doc
        assert doc["data_sha256"] == hashlib.sha256(encode(env).value).hexdigest()
        assert doc["categories"] == ["contact", "identity"]
        assert doc["categories_present"] == ["contact", "identity"]
        assert doc["client_id"] == str(client) and doc["ce"]["id"] == str(env.id)
    assert by_topic[topics.partner_inbox(PARTNER)]["doc"]["kind"] == "event"

    # Pseudonymous topics: the event's data as the contract serialises it, and who acted.
    doc = by_topic[topics.CLIENTS]["doc"]
    assert doc["kind"] == "event" and doc["data"]["client_id"] == str(client) and doc["data"]["preferred_language"] == "uk"
    assert doc["acting_org"] == ORG and doc["ce"]["type"] == "lotse.client.registered"
    assert doc["position"] == {"topic": audit.topic(topics.CLIENTS), "partition": doc["position"]["partition"], "offset": 0}

    junk = by_topic[topics.REFERRALS]["doc"]
    assert junk["kind"] == "undecodable" and junk["error"]["kind"] == "undecodable"
    assert junk["data_sha256"] == hashlib.sha256(b"\xff\xfe not json").hexdigest() and "data" not in junk
    dead = by_topic[topics.dlq(topics.REFERRALS)]["doc"]
    assert dead["kind"] == "event" and dead["dead_letter"]["error_kind"] == "rejected" and dead["dead_letter"]["reason"] == "not allowed"

    # Offsets are committed once the entries are durable.
    group = audit.app.state.ingest.group_id

    async def all_committed() -> bool:
        c = await committed(kafka_bootstrap, group)
        return sum(c.values()) == 5

    await eventually(all_committed, timeout=20)

    ready = await audit.http.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"][f"ingest:{group}"] == "up"


async def test_a_partner_topic_created_after_start_is_logged(audit, kafka_bootstrap):
    await audit.produce(topics.CLIENTS, registered(uuid.uuid4()))
    await audit.wait_for_size(1)  # the subscription is up
    newcomer = topics.partner_outbox("awo-paderborn")
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(audit.topic(newcomer), partitions=1)])
    await produce_raw(kafka_bootstrap, audit.topic(newcomer), [(None, b"{}", [("ce_specversion", b"1.0")])])

    async def logged_from_newcomer():
        return await audit.pool.fetchval("SELECT count(*) FROM audit_log WHERE logical_topic = $1", newcomer)

    await eventually(logged_from_newcomer, timeout=40)
    row = await audit.pool.fetchrow("SELECT kind, orgs FROM audit_log WHERE logical_topic = $1", newcomer)
    assert row["kind"] == "undecodable" and row["orgs"] == ["awo-paderborn"]


async def test_redelivered_records_are_not_logged_twice(infra, kafka_bootstrap, topic_namespace, unique, tmp_path, signing_key):
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic_namespace + topics.CLIENTS, partitions=2)])
    settings = fast_settings(topic_namespace, tmp_path)
    schema = f"audit_{unique}"
    envs = [registered(uuid.uuid4()) for _ in range(6)]
    async with running_audit(settings, schema, signing_key, kafka_bootstrap) as a:
        await a.produce(topics.CLIENTS, *envs)
        await a.wait_for_size(6)
        group = a.app.state.ingest.group_id
        head = await a.sign()
        first = await entries(a)

    # Rewind the group to the beginning, as after a crash between the DB commit and the offset commit.
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **connection(kafka_bootstrap).aiokafka())
    await consumer.start()
    try:
        tps = [TopicPartition(topic_namespace + topics.CLIENTS, p) for p in (0, 1)]
        consumer.assign(tps)
        await consumer.commit({tp: 0 for tp in tps})
    finally:
        await consumer.stop()
    assert sum((await committed(kafka_bootstrap, group)).values()) == 0

    extra = registered(uuid.uuid4())
    async with running_audit(settings, schema, signing_key, kafka_bootstrap) as a:
        await a.produce(topics.CLIENTS, extra)

        async def caught_up() -> bool:
            return sum((await committed(kafka_bootstrap, group)).values()) == 7

        await eventually(caught_up, timeout=40)
        after = await entries(a)
        assert len(after) == 7
        assert after[:6] == first  # nothing rewritten, nothing duplicated
        assert after[6]["doc"]["ce"]["id"] == str(extra.id)
        # The old tree head is still consistent with the grown log.
        proof = (await a.http.get("/v1/audit/consistency-proof", params={"first": head["tree_size"], "second": 7}, headers=AUDITOR)).json()
        assert proof["first"] == 6 and len(proof["consistency"]) >= 1
        assert base64.b64decode(head["sha256_root_hash"])


async def test_two_replicas_log_every_record_once_in_one_tree(infra, kafka_bootstrap, topic_namespace, unique, tmp_path, signing_key):
    """Scaling ingest out is running more replicas in the consumer group: they split the partitions,
    take turns at the append lock, and together build the same tree one replica would have built."""
    from services.audit.tests.test_tamper_and_cli import export_to, run_cli

    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic_namespace + topics.CLIENTS, partitions=4)])
    settings = fast_settings(topic_namespace, tmp_path, ingest_max_records=25)  # small batches: many turns at the lock
    schema = f"audit_{unique}"
    envs = [registered(uuid.uuid4()) for _ in range(400)]
    async with (
        running_audit(settings, schema, signing_key, kafka_bootstrap) as a,
        running_audit(settings, schema, signing_key, kafka_bootstrap) as b,
    ):
        clients_topic = a.topic(topics.CLIENTS)

        async def partitions_split() -> bool:
            # (the pattern also matches the other platform topics the runtime creates; count the logged one)
            owned = [len([tp for tp in x.app.state.ingest.subscriber.consumer.assignment() if tp.topic == clients_topic]) for x in (a, b)]
            return owned == [2, 2]

        await eventually(partitions_split, timeout=40)
        await a.produce(topics.CLIENTS, *envs[:200])
        await b.produce(topics.CLIENTS, *envs[200:])
        await a.wait_for_size(400, within_s=60)
        assert a.app.state.ingest.entries > 0 and b.app.state.ingest.entries > 0, "one replica did all the work"
        assert a.app.state.ingest.entries + b.app.state.ingest.entries == 400

        rows = await a.pool.fetch("SELECT idx, event_id FROM audit_log ORDER BY idx")
        assert [r["idx"] for r in rows] == list(range(400))
        assert sorted(r["event_id"] for r in rows) == sorted(str(e.id) for e in envs)

        # The tree the replicas wrote together is the tree of the entries: the root signed from the
        # stored subtrees equals the root an auditor recomputes from the export.
        head = await b.sign()
        assert head["tree_size"] == 400
        (tmp_path / "sth.json").write_text(json.dumps(head))
        await export_to(a, tmp_path / "log.ndjson")
    code, out = run_cli(tmp_path / "log.ndjson", "--tree-head", tmp_path / "sth.json")
    assert code == 0 and out.startswith("OK: 400 entries"), out


async def test_a_time_postgresql_cannot_store_does_not_stall_the_ingest(audit, kafka_bootstrap):
    """ce_time far outside the calendar PostgreSQL stores (with an offset that pushes it past the edge) used to
    fail the COPY of its batch again and again: the ingest stalled. Now the record is logged as invalid, with the reason."""
    good = registered(uuid.uuid4())
    rec = encode(good)
    extreme = [(k, b"0001-01-01T00:00:00+01:00" if k == "ce_time" else v) for k, v in rec.headers]
    topic = audit.topic(topics.CLIENTS)
    await produce_raw(kafka_bootstrap, topic, [(rec.key, rec.value, extreme), (rec.key, rec.value, rec.headers)])

    logged = await eventually(lambda: _two_logged(audit), timeout=40)
    assert [r["kind"] for r in logged] == ["invalid", "event"]
    assert "outside the supported range" in logged[0]["doc"]["error"]["reason"]


async def _two_logged(audit):
    rows = await entries(audit)
    return [{"kind": r["doc"]["kind"], "doc": r["doc"]} for r in rows] if len(rows) >= 2 else None


async def test_nul_characters_in_headers_do_not_stall_the_ingest(audit, kafka_bootstrap):
    """PostgreSQL text cannot hold NUL: a header value with one must not make the batch's COPY fail forever."""
    good = registered(uuid.uuid4())
    rec = encode(good)
    poisoned = [(k, v + b"\x00" if k in ("ce_type", "ce_id", "ce_actingorg", "ce_subject", "ce_source") else v) for k, v in rec.headers]
    topic = audit.topic(topics.CLIENTS)
    await produce_raw(kafka_bootstrap, topic, [(rec.key, rec.value, poisoned), (rec.key, rec.value, rec.headers)])

    logged = await eventually(lambda: _two_logged(audit), timeout=40)
    assert logged[1]["kind"] == "event" and logged[0]["kind"] != "event"


async def test_an_entry_the_database_refuses_is_logged_as_a_stand_in_and_the_log_moves_on(audit):
    """Whatever the database refuses in a batch (here a NUL smuggled past the entry builder), the writer finds
    the refused entry by bisection after a few attempts, logs a stand-in naming it, and appends the rest in order."""
    import asyncio
    from dataclasses import replace

    from aiokafka import TopicPartition

    from services.audit.domain.entries import Record, build_entries
    from services.audit.entrypoints.consumers import Batch
    from services.audit.entrypoints.workers import IngestWriter

    records = [
        Record(audit.topic(topics.CLIENTS), 0, n, 1_700_000_000_000 + n, None, *_encoded(registered(uuid.uuid4()))) for n in range(5)
    ]
    built = build_entries(records, namespace=audit.namespace)
    poisoned = replace(built[2], event_type="lotse.client.registered\x00")
    batch_entries = [*built[:2], poisoned, *built[3:]]

    class NoCommit:
        async def commit(self, offsets):
            return None

    settings = audit.app.state.runtime.settings.model_copy(update={"ingest_retry_base_s": 0.01, "ingest_retry_max_s": 0.02})
    writer = IngestWriter(audit.app.state.ingest, audit.deps, settings)
    batch = Batch(batch_entries, {TopicPartition(records[0].topic, 0): 5}, NoCommit())
    assert await asyncio.wait_for(writer._append(batch, asyncio.Event()), timeout=30)

    rows = await audit.pool.fetch('SELECT "offset", kind, event_type, entry FROM audit_log WHERE topic = $1 ORDER BY idx', records[0].topic)
    assert [(r["offset"], r["kind"]) for r in rows] == [(0, "event"), (1, "event"), (2, "unloggable"), (3, "event"), (4, "event")]
    stand_in = json.loads(rows[2]["entry"])
    assert stand_in["offset"] == 2 and stand_in["topic"] == records[0].topic
    assert stand_in["reason"].startswith(("CharacterNotInRepertoireError", "UntranslatableCharacterError", "DataError")), stand_in["reason"]
    assert base64.b64decode(stand_in["entry_base64"]) == poisoned.entry


def _encoded(env):
    rec = encode(env)
    return rec.value, list(rec.headers)
