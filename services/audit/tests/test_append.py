"""The append's round trips: the frontier an append needs comes from the node cache after this replica's
previous append; BEGIN and the append lock go together, and a failed append rolls back and releases the lock."""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from contracts import encode, topics
from lotse_kit.runtime import GC_GEN0_THRESHOLD, tune_gc_for_batches
from services.audit.adapters.repository import AuditRepository
from services.audit.domain import merkle
from services.audit.domain.entries import Entry, Record, build_entries
from services.audit.tests.test_ingest import registered


class NoQueries:
    """A connection that must not be used."""

    async def fetch(self, *args, **kwargs):
        raise AssertionError("the frontier should have come from the cache")


def test_appends_of_one_replica_find_their_frontier_in_the_cache():
    """From an empty log, through appends of any sizes: every stored node an append needs was cached by the
    appends before it (with its true hash), so the append loads none."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(8192)]

    @functools.cache
    def truth(level: int, index: int) -> bytes:
        return leaves[index] if level == 0 else merkle.node_hash(truth(level - 1, 2 * index), truth(level - 1, 2 * index + 1))

    rng = random.Random(6)
    for sizes in ([1] * 70, [256, 1, 255, 1, 511], [rng.randrange(1, 300) for _ in range(20)], [rng.randrange(1, 40) for _ in range(60)]):
        repo = AuditRepository(None, node_cache_size=1000)  # type: ignore[arg-type]  # no database needed
        start = 0
        for n in sizes:
            end = start + n
            keys = merkle.frontier_for_append(start, end)
            frontier = asyncio.run(repo._frontier(NoQueries(), keys))  # type: ignore[arg-type]
            assert frontier == {k: truth(*k) for k in keys}, (sizes, start, n)
            new = [Entry("t", 0, k, "t", "event", None, None, None, None, [], datetime.now(UTC), b"", leaves[k]) for k in range(start, end)]
            nodes = merkle.nodes_completed_by_append(start, [e.leaf_hash for e in new], frontier)
            repo._cache_root_nodes(start, new, nodes, frontier)
            start = end


async def test_a_failed_append_rolls_back_and_releases_the_lock(audit):
    repo = audit.deps.repo
    records = [
        Record(audit.topic(topics.CLIENTS), 0, n, 1_700_000_000_000 + n, None, rec.value, list(rec.headers))
        for n, rec in enumerate(encode(registered(uuid.uuid4())) for _ in range(4))
    ]
    built = build_entries(records, namespace=audit.namespace)
    refused = replace(built[1], event_type="lotse.client.registered\x00")  # PostgreSQL text cannot hold a NUL
    loop = asyncio.get_running_loop()
    complaints: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: complaints.append(context))
    try:
        await repo.append([built[0], refused])
    except asyncpg.PostgresError:
        pass
    else:
        raise AssertionError("the append should have been refused")
    finally:
        loop.set_exception_handler(previous)
    # Rolled back by the append itself, not left for the pool to find ("Resetting connection with an active transaction").
    assert not complaints, complaints
    assert await audit.size() == 0
    # The lock is free (another session gets it at once) and the pool's connections are usable.
    conn = await asyncpg.connect(audit.deps.db.dsn)
    try:
        assert await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", repo.append_lock)
    finally:
        await conn.close()
    result = await repo.append(built)
    assert (result.start, result.appended, result.duplicates) == (0, 4, 0)
    again = await repo.append(built)  # redelivered: nothing appended, the size from the same query
    assert (again.start, again.appended, again.duplicates) == (4, 0, 4)
    assert [r["offset"] for r in await audit.pool.fetch('SELECT "offset" FROM audit_log ORDER BY idx')] == [0, 1, 2, 3]


def test_the_ingest_collects_young_objects_about_once_per_batch():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc_for_batches()
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 10, 10)
        gc.set_threshold(10 * GC_GEN0_THRESHOLD, 10, 10)  # a larger setting is left alone
        tune_gc_for_batches()
        assert gc.get_threshold()[0] == 10 * GC_GEN0_THRESHOLD
    finally:
        gc.set_threshold(*before)
