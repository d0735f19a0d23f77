"""Intake's transactions that lock several referrals lock them in referral_id order, against the real database.

The consumer of the consent gate's outcomes and the consumer of partner answers apply batches that touch the same
referrals (a referral's disclosure and its acceptance arrive close together). Locking in delivery order, two such
batches deadlocked: PostgreSQL aborted one after a second and its consumer redid it one event at a time (seen under
load in bench/e2e.py, hundreds of times per run). Now each batch locks its referrals in one order first
(`lock_batch_referrals`, the subscriptions' LockBatch), and a case hand-over moves a client's open referrals in the
same order. Each test holds the smallest referral locked and checks that the waiting transaction holds no other
referral yet: in delivery or scan order it would.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from contracts import new_event, topics
from contracts.events import DisclosureMade
from contracts.vocab import DataCategory, Purpose
from services.intake.entrypoints.consumers import DECLARATION
from services.intake.handlers.referrals import lock_batch_referrals
from tests.kafka_helpers import eventually
from tests.kit.test_outbox_batching import record_of

from .conftest import JOBCENTER, KI, h
from .test_referrals import refer, register
from .test_statement_counts import _blocks_someone


def made(client_id: uuid.UUID, referral_id: uuid.UUID) -> DisclosureMade:
    return DisclosureMade(
        client_id=client_id,
        request_id=uuid.uuid4(),
        referral_id=referral_id,
        recipient=KI,
        purpose=Purpose.REFERRAL,
        categories=[DataCategory.IDENTITY],
        consent_id=uuid.uuid4(),
        payload_sha256="a" * 64,
        disclosed_at=datetime.now(UTC),
    )


async def locked_by_someone_else(pool: Any, referral_id: uuid.UUID) -> bool:
    async with pool.acquire() as probe, probe.transaction():
        try:
            await probe.execute("SELECT FROM referrals WHERE referral_id = $1 FOR UPDATE NOWAIT", referral_id)
        except asyncpg.LockNotAvailableError:
            return True
    return False


def test_both_subscriptions_that_touch_referrals_lock_their_batches() -> None:
    assert {s.name: s.lock for s in DECLARATION.subscriptions} == {
        "partner-answers": lock_batch_referrals,
        "disclosures": lock_batch_referrals,
    }


async def test_a_batch_of_outcomes_locks_its_referrals_in_referral_id_order_before_its_handlers(make_intake, consent, topic_namespace):
    async with make_intake() as (app, http):
        client_id = await register(http)
        cid = uuid.UUID(client_id)
        consent.grant(cid, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        lo, hi = sorted([uuid.UUID((await refer(http, client_id))["referral_id"]) for _ in range(2)])
        [consumer] = [c for c in app.state.runtime.consumers if c.name.endswith("disclosures")]
        pool = app.state.runtime.db.pool
        topic = topic_namespace + topics.DISCLOSURES
        async with pool.acquire() as holder:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT FROM referrals WHERE referral_id = $1 FOR UPDATE", lo)
            # Delivered hi first: in delivery order the batch would lock hi, then wait for lo.
            envs = [new_event(made(cid, rid), source="/lotse/consent") for rid in (hi, lo)]
            batch = asyncio.create_task(consumer.handle_batch([record_of(e, topic, 10_000 + i) for i, e in enumerate(envs)]))
            try:
                await eventually(lambda: _blocks_someone(pool, holder.get_server_pid()))
                assert not await locked_by_someone_else(pool, hi)
            finally:
                await tx.rollback()
            await batch
        assert consumer.fallbacks == 0
        rows = await pool.fetch("SELECT disclosed_at FROM referrals WHERE referral_id = ANY($1::uuid[])", [lo, hi])
        assert [r["disclosed_at"] is not None for r in rows] == [True, True]


async def test_a_hand_over_moves_the_open_referrals_locking_them_in_referral_id_order(make_intake, consent):
    async with make_intake() as (app, http):
        client_id = await register(http)
        consent.grant(uuid.UUID(client_id), KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        # Referrals until the first one written is not the smallest: a scan in written order then meets another
        # referral before the smallest.
        written = [uuid.UUID((await refer(http, client_id))["referral_id"]) for _ in range(2)]
        while written[0] == min(written):
            written.append(uuid.UUID((await refer(http, client_id))["referral_id"]))
            if len(written) > 12:
                pytest.fail("twelve random referral ids in ascending order")
        lo = min(written)
        pool = app.state.runtime.db.pool
        async with pool.acquire() as holder:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT FROM referrals WHERE referral_id = $1 FOR UPDATE", lo)
            hand_over = asyncio.create_task(http.post(f"/v1/clients/{client_id}/handover", headers=h(JOBCENTER), json={"to_org": KI}))
            try:
                await eventually(lambda: _blocks_someone(pool, holder.get_server_pid()))
                assert not await locked_by_someone_else(pool, written[0])
            finally:
                await tx.rollback()
            resp = await hand_over
        assert resp.status_code == 200, resp.text
        assert sorted(uuid.UUID(r) for r in resp.json()["open_referral_ids"]) == sorted(written)
