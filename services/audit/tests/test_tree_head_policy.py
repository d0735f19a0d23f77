"""Tree heads follow appends: a new entry is soon in a signed head, an idle log gets none."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import uuid
from datetime import UTC, datetime

from contracts import topics
from lotse_kit.kafka import ensure_topics
from services.audit.adapters.repository import AuditRepository
from services.audit.domain import merkle
from services.audit.domain.entries import Entry
from services.audit.domain.tree_head import signed_bytes
from services.audit.tests import rfc9162
from services.audit.tests.conftest import AUDITOR, audit_topics, fast_settings, running_audit
from services.audit.tests.test_api import referral, registered
from tests.kafka_helpers import eventually


def b64d(s: str) -> bytes:
    return base64.b64decode(s)


async def heads(audit) -> list[tuple[int, bytes, bytes, int]]:
    rows = await audit.pool.fetch("SELECT tree_size, root_hash, signature, timestamp_ms FROM tree_heads ORDER BY id")
    return [(r["tree_size"], bytes(r["root_hash"]), bytes(r["signature"]), r["timestamp_ms"]) for r in rows]


async def entry_bytes(audit) -> list[bytes]:
    return [bytes(r["entry"]) for r in await audit.pool.fetch("SELECT entry FROM audit_log ORDER BY idx")]


async def test_appends_are_signed_soon_and_an_idle_log_gets_no_new_heads(
    infra, kafka_bootstrap, topic_namespace, unique, tmp_path, signing_key
):
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic_namespace + t.name, t.partitions) for t in audit_topics()])
    # The backstop interval is an hour: only the after-append policy can sign these heads.
    settings = fast_settings(topic_namespace, tmp_path, tree_head_interval_s=3600, tree_head_delay_ms=100)
    async with running_audit(settings, f"audit_{unique}", signing_key, kafka_bootstrap) as audit:
        signer = audit.app.state.tree_head_signer
        public = signing_key.public_key()

        async def head_of(size: int) -> bool:
            return any(h[0] == size for h in await heads(audit))

        await eventually(lambda: head_of(0))  # signed at start
        client = uuid.uuid4()
        await audit.produce(topics.CLIENTS, *[registered(uuid.uuid4()) for _ in range(4)], registered(client))
        await audit.wait_for_size(5)
        await eventually(lambda: head_of(5))  # nobody asked for it
        first = next(h for h in await heads(audit) if h[0] == 5)
        served = await entry_bytes(audit)
        assert first[1] == rfc9162.mth(served)  # the root commits to exactly the logged entries ...
        public.verify(first[2], signed_bytes(5, first[3], first[1]))  # ... and the signature verifies
        # Right after an append, signing loads no node: the root's nodes were cached with the commit.
        assert merkle.needed_nodes(lambda get: merkle.root(5, get)) <= set(audit.deps.repo.cache._d)

        # Idle: however often the signer is woken, no new head.
        count = len(await heads(audit))
        for _ in range(3):
            passes = signer.passes
            signer.log_grew()
            await eventually(lambda p=passes: signer.passes > p)
        assert len(await heads(audit)) == count

        await audit.produce(topics.REFERRALS, *[referral(client, "caritas-paderborn") for _ in range(3)])
        await audit.wait_for_size(8)
        await eventually(lambda: head_of(8))
        second = next(h for h in await heads(audit) if h[0] == 8)
        served = await entry_bytes(audit)
        assert second[1] == rfc9162.mth(served)
        public.verify(second[2], signed_bytes(8, second[3], second[1]))
        # The API serves it as the latest head, and proofs against both heads still work.
        latest = (await audit.http.get("/v1/audit/tree-head", headers=AUDITOR)).json()
        assert latest["tree_size"] == 8 and b64d(latest["sha256_root_hash"]) == second[1]
        # What the signing-stall alert compares with the log's size (deploy/observability/alerts.yml).
        from lotse_kit.metrics import REGISTRY

        assert REGISTRY.get_sample_value("lotse_audit_signed_tree_size", {"service": "audit"}) == 8
        signed_at = REGISTRY.get_sample_value("lotse_audit_tree_head_signed_timestamp_seconds", {"service": "audit"})
        assert signed_at == second[3] / 1000
        c = (await audit.http.get("/v1/audit/consistency-proof", params={"first": 5, "second": 8}, headers=AUDITOR)).json()
        assert rfc9162.verify_consistency(5, 8, first[1], second[1], [b64d(p) for p in c["consistency"]])
        p = (await audit.http.get("/v1/audit/entries/6/inclusion-proof", headers=AUDITOR)).json()
        assert p["tree_size"] == 8
        assert rfc9162.verify_inclusion(rfc9162.hash_leaf(served[6]), 6, 8, [b64d(x) for x in p["audit_path"]], second[1])
        # One head per growth, not one per entry: 0, 5 and 8 (a batch may split, never into more heads than entries).
        sizes = [h[0] for h in await heads(audit)]
        assert sizes == sorted(sizes) and len(sizes) <= 1 + 8 and len(set(sizes)) == len(sizes)


async def test_heads_wait_for_the_delay_after_the_previous_head(infra, kafka_bootstrap, topic_namespace, unique, tmp_path, signing_key):
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic_namespace + t.name, t.partitions) for t in audit_topics()])
    settings = fast_settings(topic_namespace, tmp_path, tree_head_interval_s=3600, tree_head_delay_ms=3_600_000)
    async with running_audit(settings, f"audit_{unique}", signing_key, kafka_bootstrap) as audit:
        signer = audit.app.state.tree_head_signer
        await eventually(lambda: signer.passes >= 1)  # the head at start
        await audit.produce(topics.CLIENTS, *[registered(uuid.uuid4()) for _ in range(3)])
        await audit.wait_for_size(3)
        await asyncio.sleep(0.5)
        # The log grew, but the previous head is less than the delay (an hour) old: no second head yet.
        assert [h[0] for h in await heads(audit)] == [0]
        assert signer.passes == 1


def test_the_nodes_cached_after_an_append_are_the_trees_nodes():
    """Whatever the batch boundaries, every node cached for the new root is the true subtree hash."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(300)]

    def truth(level: int, index: int) -> bytes:
        return merkle.root_of_leaves(leaves[index << level : (index + 1) << level])

    rng = random.Random(14)
    for start, n in [(0, 1), (0, 300), (255, 2), (256, 1), *((rng.randrange(250), rng.randrange(1, 50)) for _ in range(300))]:
        new = [
            Entry("t", 0, k, "t", "event", None, None, None, None, [], datetime.now(UTC), b"", leaves[k]) for k in range(start, start + n)
        ]
        frontier = {k: truth(*k) for k in merkle.frontier_for_append(start, start + n)}
        nodes = merkle.nodes_completed_by_append(start, [e.leaf_hash for e in new], frontier)
        repo = AuditRepository(None, node_cache_size=1000)  # type: ignore[arg-type]  # no database needed
        repo._cache_root_nodes(start, new, nodes, frontier)
        cached = dict(repo.cache._d)
        assert cached and all(h == truth(*k) for k, h in cached.items()), (start, n)
        needed = merkle.needed_nodes(lambda get, size=start + n: merkle.root(size, get))
        if needed <= set(cached):
            assert merkle.root(start + n, merkle.with_nodes(cached)) == merkle.root_of_leaves(leaves[: start + n])
