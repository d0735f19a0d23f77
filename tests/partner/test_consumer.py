"""The kit's inbox consumer on the real broker, as the partner's own principal: typed records with the sealed data
opened, dead letters on the partner's side for what it cannot read, commits only after the handler returned."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import encode, new_event, topics
from contracts.events import ConsentWithdrawn, PartnerReferralV2
from lotse_kit.provisioning import partner_principal
from lotse_partner import DeadLetters, InboxRecord, KafkaTransport, Outbox, PartnerInbox, PartnerKeys, Rejected, kafka_options
from tests.kafka_helpers import produce_raw, provision_services
from tests.partner.test_partner_kit import CARITAS, CONTENT, referral_to

NETWORK = Path(__file__).resolve().parents[2] / "services" / "intake" / "tests" / "network.yaml"


async def _setup(kafka_bootstrap: str, ns: str, tmp_path: Path) -> tuple[dict[str, object], PartnerKeys]:
    await provision_services(kafka_bootstrap, NETWORK, ns, tmp_path / "kafka", {})
    kafka = kafka_options(tmp_path / "kafka" / f"{partner_principal(ns, CARITAS)}.properties")  # the kit's own reader
    return kafka, PartnerKeys.load_or_create(tmp_path / "caritas.json", CARITAS)


async def _committed(kafka: dict[str, object], group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **kafka)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        await consumer.stop()


async def test_records_arrive_typed_and_opened_and_what_cannot_be_read_is_dead_lettered_on_the_partners_side(
    infra: object, kafka_bootstrap: str, topic_namespace: str, tmp_path: Path
) -> None:
    ns = topic_namespace
    kafka, keys = await _setup(kafka_bootstrap, ns, tmp_path)
    stranger = PartnerKeys.load_or_create(tmp_path / "stranger.json", "awo-kreis-paderborn")
    ours = referral_to(keys.public("enc"), CONTENT)
    not_ours = referral_to(stranger.public("enc"), CONTENT)
    withdrawn = encode(
        new_event(
            ConsentWithdrawn(client_id=uuid.uuid4(), consent_id=uuid.uuid4(), withdrawn_at=datetime.now(UTC)), source="/lotse/consent"
        )
    )
    garbage = (b"k", b"not a cloudevent", [("content-type", b"application/json")])
    inbox_topic = ns + topics.partner_inbox(CARITAS)
    await produce_raw(
        kafka_bootstrap,
        inbox_topic,
        [(r.key, r.value, r.headers) for r in (ours, not_ours)] + [garbage, (withdrawn.key, withdrawn.value, withdrawn.headers)],
    )

    seen: list[InboxRecord] = []

    async def handler(record: InboxRecord, outbox: Outbox) -> None:
        seen.append(record)

    dlq = DeadLetters(tmp_path / "dead-letters")
    transport = KafkaTransport(kafka, CARITAS, group="kit-test", namespace=ns)
    inbox = PartnerInbox(transport, keys, handler, dlq)
    await inbox.run(limit=4)

    assert sorted(type(r.event.data).__name__ for r in seen) == ["ConsentWithdrawn", "PartnerReferralV2"]
    [referral] = [r for r in seen if isinstance(r.event.data, PartnerReferralV2)]
    [withdrawal] = [r for r in seen if isinstance(r.event.data, ConsentWithdrawn)]
    assert referral.opened == CONTENT and withdrawal.opened is None
    letters = dlq.list()
    assert sorted(x["kind"] for x in letters) == ["undecodable", "unsealable"]
    [unsealable] = [x for x in letters if x["kind"] == "unsealable"]
    assert "kid" in unsealable["reason"] and unsealable["original"]["value"] == not_ours.value.decode()
    [undecodable] = [x for x in letters if x["kind"] == "undecodable"]
    assert undecodable["original"]["value"] == "not a cloudevent"
    # The dead letters stay the partner's: only its system can read them.
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (tmp_path / "dead-letters").iterdir())

    # Everything handled or dead-lettered is committed, up to the last record of each partition.
    positions = [r.position for r in seen] + [x["position"] for x in letters]
    last: dict[int, int] = {}
    for pos in positions:
        _, part, off = pos.rsplit("/", 2)
        last[int(part)] = max(last.get(int(part), -1), int(off))
    committed = await _committed(kafka, f"{ns}partner.{CARITAS}.kit-test", inbox_topic)
    assert {p: c for p, c in committed.items() if c is not None} == {p: o + 1 for p, o in last.items()}


async def test_a_failing_handler_leaves_its_record_uncommitted_and_gets_it_again_after_a_restart(
    infra: object, kafka_bootstrap: str, topic_namespace: str, tmp_path: Path
) -> None:
    ns = topic_namespace
    kafka, keys = await _setup(kafka_bootstrap, ns, tmp_path)
    first_rec, second_rec = referral_to(keys.public("enc"), CONTENT), referral_to(keys.public("enc"), CONTENT)
    # One key, one partition: the second record comes after the first.
    await produce_raw(
        kafka_bootstrap, ns + topics.partner_inbox(CARITAS), [(first_rec.key, r.value, r.headers) for r in (first_rec, second_rec)]
    )
    handled: list[str] = []
    calls: list[str] = []

    async def failing_on_the_second(record: InboxRecord, outbox: Outbox) -> None:
        if handled:
            calls.append(str(record.event.id))
            raise RuntimeError("the partner's database is down")
        handled.append(str(record.event.id))

    dlq = DeadLetters(tmp_path / "dlq")
    group = "kit-retry"
    first = PartnerInbox(
        KafkaTransport(kafka, CARITAS, group=group, namespace=ns), keys, failing_on_the_second, dlq, retries=2, retry_backoff_s=0
    )
    with pytest.raises(RuntimeError):
        await first.run(limit=2)
    assert len(calls) == 3 and len(set(calls)) == 1  # tried, retried twice, then stopped
    # The first record is committed, the failing one is not.
    committed = await _committed(kafka, f"{ns}partner.{CARITAS}.{group}", ns + topics.partner_inbox(CARITAS))
    assert sorted(c for c in committed.values() if c is not None) == [1]

    again: list[str] = []

    async def working(record: InboxRecord, outbox: Outbox) -> None:
        again.append(str(record.event.id))

    second = PartnerInbox(KafkaTransport(kafka, CARITAS, group=group, namespace=ns), keys, working, dlq)
    await second.run(limit=1)
    assert again == calls[:1] and dlq.list() == []


async def test_a_record_the_handler_rejects_is_dead_lettered_with_its_reason_and_committed(
    infra: object, kafka_bootstrap: str, topic_namespace: str, tmp_path: Path
) -> None:
    ns = topic_namespace
    kafka, keys = await _setup(kafka_bootstrap, ns, tmp_path)
    rec = referral_to(keys.public("enc"), CONTENT)
    await produce_raw(kafka_bootstrap, ns + topics.partner_inbox(CARITAS), [(rec.key, rec.value, rec.headers)])

    async def rejecting(record: InboxRecord, outbox: Outbox) -> None:
        raise Rejected("service 'mbe' is not offered at this office")

    dlq = DeadLetters(tmp_path / "dlq")
    inbox = PartnerInbox(KafkaTransport(kafka, CARITAS, group="kit-reject", namespace=ns), keys, rejecting, dlq)
    await inbox.run(limit=1)
    [letter] = dlq.list()
    assert (letter["kind"], letter["reason"]) == ("rejected", "service 'mbe' is not offered at this office")
    assert json.loads(letter["original"]["value"])["referral_id"]
    committed = await _committed(kafka, f"{ns}partner.{CARITAS}.kit-reject", ns + topics.partner_inbox(CARITAS))
    assert sorted(c for c in committed.values() if c is not None) == [1]
