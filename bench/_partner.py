"""A simulated partner system for bench.e2e: one process per organisation, its own Kafka principal and keys.

    python -m bench._partner --org caritas-paderborn

Reads `partner.<org>.inbox.v1` as `partner-<org>` (the credentials `lotse admin provision` wrote; all
partitions assigned, from the end: no consumer group, so nothing waits for a rebalance), opens each
referral sealed to it with its private keys (`lotse_partner.open_sealed`) and accepts it on
`partner.<org>.outbox.v1`, as a partner's system would. For every referral it writes one JSON line to
stdout: referral id, inbox event id, the time the record arrived here (epoch seconds, taken before
decoding) and whether it opened. The first line is {"ready": true} once the partitions are
positioned. Stops on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import decode, encode, new_event, topics
from contracts.envelope import partner_source
from contracts.events import PartnerReferralV2, ReferralAccepted
from contracts.sealed import SealedError
from lotse_cli.demo import partner_kafka, partner_keys
from lotse_kit.settings import KitSettings
from lotse_partner import open_sealed


def emit(obj: dict[str, object]) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")


async def run(org: str, answer: bool) -> None:
    ns = KitSettings().topic_namespace
    inbox, outbox = ns + topics.partner_inbox(org), ns + topics.partner_outbox(org)
    kafka = partner_kafka(org)
    keys = partner_keys(org)
    source = partner_source(org)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100, **kafka.aiokafka())
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **kafka.aiokafka())
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None)
    try:
        parts = [TopicPartition(inbox, p) for p in sorted(consumer.partitions_for_topic(inbox) or await _partitions(consumer, inbox))]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)
        emit({"ready": True, "partitions": len(parts)})
        sys.stdout.flush()
        pending: list[asyncio.Future[object]] = []
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            arrived = time.time()
            for records in batch.values():
                for rec in records:
                    try:
                        env = decode(rec.headers, rec.value)
                    except Exception as exc:  # another producer's record we cannot read: note it, carry on
                        emit({"undecodable": f"{type(exc).__name__}: {exc}"[:200]})
                        continue
                    if not isinstance(env.data, PartnerReferralV2):
                        continue  # withdrawals, erasures, corrections from other activity on the stack
                    data = env.data
                    try:
                        opened = open_sealed(env, keys) is not None
                    except SealedError:
                        opened = False
                    emit(
                        {
                            "referral_id": str(data.referral_id),
                            "event_id": str(env.id),
                            "t": arrived,
                            "kafka_ts": rec.timestamp / 1000,
                            "opened": opened,
                        }
                    )
                    if answer and opened:
                        accepted = ReferralAccepted(
                            client_id=data.client_id, referral_id=data.referral_id, to_org=org, accepted_at=datetime.now(UTC)
                        )
                        out = encode(new_event(accepted, source=source, acting_org=org))
                        pending.append(await producer.send(outbox, value=out.value, key=out.key, headers=out.headers))
            if batch:
                sys.stdout.flush()
            if pending:
                await asyncio.gather(*pending)
                pending = []
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()  # aiokafka has no public metadata wait
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} not found (run lotse admin provision)")


def main() -> None:
    ap = argparse.ArgumentParser(description="Simulated partner system for bench.e2e")
    ap.add_argument("--org", required=True)
    ap.add_argument("--no-answer", action="store_true", help="read and open, but do not accept")
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.run(run(a.org, not a.no_answer))
    except ImportError:
        asyncio.run(run(a.org, not a.no_answer))


if __name__ == "__main__":
    main()
