"""The tree code against an independent RFC 9162 verifier and the RFC 6962 reference vectors (no I/O)."""

from __future__ import annotations

import random

import pytest

from services.audit.domain import merkle
from services.audit.tests import rfc9162

# The test vectors of the RFC 6962 reference implementation (certificate-transparency): leaves and
# the tree head for each size 1..8.
VECTOR_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43", bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


class Store:
    """An in-memory version of what the repository stores: leaf hashes and completed subtrees."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0

    def append(self, entries: list[bytes]) -> None:
        hashes = [merkle.leaf_hash(e) for e in entries]
        frontier = {k: self.nodes[k] for k in merkle.frontier_for_append(self.size, self.size + len(entries))}
        for level, idx, h in merkle.nodes_completed_by_append(self.size, hashes, frontier):
            assert (level, idx) not in self.nodes, "a stored node is never rewritten"
            self.nodes[(level, idx)] = h
        for i, h in enumerate(hashes):
            self.nodes[(0, self.size + i)] = h
        self.size += len(entries)

    def get(self, level: int, idx: int) -> bytes:
        return self.nodes[(level, idx)]


def build(entries: list[bytes], rng: random.Random) -> Store:
    store = Store()
    i = 0
    while i < len(entries):
        n = rng.randint(1, 9)
        store.append(entries[i : i + n])
        i += n
    return store


def test_reference_vectors():
    for n in range(1, 9):
        assert rfc9162.mth(VECTOR_LEAVES[:n]).hex() == VECTOR_ROOTS[n - 1]  # the test's own verifier is sound
        store = build(VECTOR_LEAVES[:n], random.Random(n))
        assert merkle.root(n, store.get).hex() == VECTOR_ROOTS[n - 1]
    assert merkle.root(0, Store().get) == rfc9162.mth([])


def test_roots_and_nodes_do_not_depend_on_how_the_log_was_batched():
    entries = [f"entry-{i}".encode() for i in range(300)]
    a, b = build(entries, random.Random(1)), build(entries, random.Random(2))
    one_by_one = Store()
    for e in entries:
        one_by_one.append([e])
    assert a.nodes == b.nodes == one_by_one.nodes
    for n in (1, 2, 3, 64, 65, 100, 255, 256, 257, 300):
        expected = rfc9162.mth(entries[:n])
        assert merkle.root(n, a.get) == expected
        assert merkle.root_of_leaves(merkle.leaf_hash(e) for e in entries[:n]) == expected


def test_inclusion_proofs_verify_independently_for_every_leaf_and_size():
    entries = [f"e{i}".encode() for i in range(70)]
    store = build(entries, random.Random(7))
    for n in range(1, len(entries) + 1):
        root = rfc9162.mth(entries[:n])
        for m in range(n):
            path = merkle.inclusion_path(m, n, store.get)
            assert rfc9162.verify_inclusion(rfc9162.hash_leaf(entries[m]), m, n, path, root), (m, n)


def test_consistency_proofs_verify_independently_for_every_pair():
    entries = [f"c{i}".encode() for i in range(50)]
    store = build(entries, random.Random(9))
    roots = [rfc9162.mth(entries[:n]) for n in range(len(entries) + 1)]
    for n in range(1, len(entries) + 1):
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, n, store.get)
            assert rfc9162.verify_consistency(m, n, roots[m], roots[n], proof), (m, n)


def test_tampering_breaks_proofs():
    entries = [f"t{i}".encode() for i in range(37)]
    store = build(entries, random.Random(3))
    root = rfc9162.mth(entries)
    path = merkle.inclusion_path(11, 37, store.get)
    assert not rfc9162.verify_inclusion(rfc9162.hash_leaf(b"t11 changed"), 11, 37, path, root)
    assert not rfc9162.verify_inclusion(rfc9162.hash_leaf(entries[11]), 12, 37, path, root)
    bad = [bytes(32), *path[1:]]
    assert not rfc9162.verify_inclusion(rfc9162.hash_leaf(entries[11]), 11, 37, bad, root)
    proof = merkle.consistency_proof(20, 37, store.get)
    other = rfc9162.mth([*entries[:19], b"forged"])
    assert not rfc9162.verify_consistency(20, 37, other, root, proof)


def test_proofs_need_few_stored_nodes_even_for_a_million_entries():
    # The whole point of storing complete subtrees: a proof touches O(log^2 n) nodes, not n.
    n = 1_000_000
    for index in (0, 1, 524_287, 524_288, 999_999):
        keys = merkle.needed_nodes(lambda get, i=index: merkle.inclusion_path(i, n, get))
        assert len(keys) <= 2 * n.bit_length() ** 2 // 4
    assert len(merkle.needed_nodes(lambda get: merkle.root(n, get))) == bin(n).count("1")
    assert len(merkle.needed_nodes(lambda get: merkle.consistency_proof(123_457, n, get))) < 200


@pytest.mark.parametrize("start,end", [(0, 1), (5, 6), (7, 9), (1, 1000), (1023, 1025), (999, 5000)])
def test_frontier_is_at_most_one_node_per_level(start, end):
    keys = merkle.frontier_for_append(start, end)
    assert len({level for level, _ in keys}) == len(keys)
    for level, idx in keys:
        assert (idx + 1) << level <= start  # complete before the append
