"""The RFC 6962 / RFC 9162 Merkle tree over the audit log, computed from stored complete subtrees.

Hashes (RFC 9162 §2.1.1):

    leaf hash = SHA-256(0x00 || entry bytes)
    node hash = SHA-256(0x01 || left || right)
    MTH({})   = SHA-256()

Storage model: the hash of every *complete, aligned* subtree is written once, when its last leaf
is appended, and never changes. A node is addressed as (level, index): it covers the leaves
[index * 2**level, (index + 1) * 2**level); level 0 are the leaf hashes. Every range the RFC's
recursive definitions visit is either such a node or splits into one on the left and a smaller
range on the right (see `mth`), so a root, an inclusion proof or a consistency proof for any tree
size needs O(log² n) stored nodes and no rehashing of leaves.

The functions take a `get(level, index) -> bytes` callable. Their call pattern does not depend on
the hash values, so a caller first runs them with `NodeCollector` to learn which nodes to load in
one query, then again with the loaded nodes (`proof_nodes` / `with_nodes`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeKey = tuple[int, int]
NodeGetter = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two smaller than n (n > 1)."""
    if n < 2:
        raise ValueError("n must be > 1")
    return 1 << ((n - 1).bit_length() - 1)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def mth(start: int, end: int, get: NodeGetter) -> bytes:
    """MTH(D[start:end]) for a range the RFC recursion produces (start aligned to the range's size)."""
    size = end - start
    if size <= 0:
        raise ValueError("empty range")
    if _is_power_of_two(size):
        level = size.bit_length() - 1
        if start % size:
            raise ValueError(f"range [{start}, {end}) is not an aligned subtree")
        return get(level, start >> level)
    k = largest_power_of_two_below(size)
    return node_hash(mth(start, start + k, get), mth(start + k, end, get))


def root(tree_size: int, get: NodeGetter) -> bytes:
    return EMPTY_ROOT if tree_size == 0 else mth(0, tree_size, get)


def inclusion_path(index: int, tree_size: int, get: NodeGetter) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1, leaf to root."""
    if not 0 <= index < tree_size:
        raise ValueError("index must be in [0, tree_size)")
    path: list[bytes] = []

    def walk(m: int, start: int, end: int) -> None:
        n = end - start
        if n == 1:
            return
        k = largest_power_of_two_below(n)
        if m < k:
            walk(m, start, start + k)
            path.append(mth(start + k, end, get))
        else:
            walk(m - k, start + k, end)
            path.append(mth(start, start + k, get))

    walk(index, 0, tree_size)
    return path


def consistency_proof(first: int, second: int, get: NodeGetter) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1."""
    if not 0 < first <= second:
        raise ValueError("need 0 < first <= second")
    proof: list[bytes] = []

    def subproof(m: int, start: int, end: int, complete: bool) -> None:
        n = end - start
        if m == n:
            if not complete:
                proof.append(mth(start, end, get))
            return
        k = largest_power_of_two_below(n)
        if m <= k:
            subproof(m, start, start + k, complete)
            proof.append(mth(start + k, end, get))
        else:
            subproof(m - k, start + k, end, False)
            proof.append(mth(start, start + k, get))

    subproof(first, 0, second, True)
    return proof


# ------------------------------------------------------------------ loading nodes
class NodeCollector:
    """A `get` that records which nodes are asked for and answers with placeholders."""

    def __init__(self) -> None:
        self.keys: set[NodeKey] = set()

    def __call__(self, level: int, index: int) -> bytes:
        self.keys.add((level, index))
        return bytes(HASH_SIZE)


def needed_nodes(compute: Callable[[NodeGetter], object]) -> set[NodeKey]:
    collector = NodeCollector()
    compute(collector)
    return collector.keys


def with_nodes(nodes: dict[NodeKey, bytes]) -> NodeGetter:
    def get(level: int, index: int) -> bytes:
        try:
            return nodes[(level, index)]
        except KeyError:
            raise MissingNode(level, index) from None

    return get


class MissingNode(LookupError):
    def __init__(self, level: int, index: int) -> None:
        super().__init__(f"tree node (level {level}, index {index}) is not stored")
        self.level = level
        self.index = index


# ------------------------------------------------------------------ appending
def frontier_for_append(start: int, end: int) -> list[NodeKey]:
    """Stored nodes needed to compute the subtrees completed by appending leaves [start, end).

    At most one per level: the left sibling, already stored, of the first new node on that level.
    """
    keys: list[NodeKey] = []
    level = 1
    while (start >> level) < (end >> level):
        below = start >> (level - 1)
        if below & 1:
            keys.append((level - 1, below - 1))
        level += 1
    return keys


def nodes_completed_by_append(start: int, new_leaf_hashes: Sequence[bytes], frontier: dict[NodeKey, bytes]) -> list[tuple[int, int, bytes]]:
    """(level, index, hash) for every complete subtree (level >= 1) the new leaves finish, level by level,
    each level's in index order."""
    end = start + len(new_leaf_hashes)
    lower: list[bytes] = list(new_leaf_hashes)  # the nodes of the level below, from index `lower_first` on
    lower_first = start
    out: list[tuple[int, int, bytes]] = []
    sha256 = hashlib.sha256
    level = 1
    while (start >> level) < (end >> level):
        first, stop = start >> level, end >> level
        if 2 * first < lower_first:  # the first node's left child is stored already (one per level at most)
            lower.insert(0, frontier[(level - 1, 2 * first)])
            lower_first -= 1
        # Children of node k are lower[2k - lower_first] and the one after it (node_hash, inlined: ~one per entry).
        current = [sha256(b"\x01" + lower[i] + lower[i + 1]).digest() for i in range(0, 2 * (stop - first), 2)]
        out.extend((level, first + i, h) for i, h in enumerate(current))
        lower, lower_first = current, first
        level += 1
    return out


# ------------------------------------------------------------------ streaming root
class StreamingRoot:
    """Computes MTH over leaves fed one by one in O(log n) memory (for verifying exports)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (size, hash) of complete subtrees, left to right
        self.size = 0

    def add_leaf_hash(self, h: bytes) -> None:
        size, node = 1, h
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            node = node_hash(left, node)
            size += left_size
        self._stack.append((size, node))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def root_of_leaves(leaf_hashes: Iterable[bytes]) -> bytes:
    s = StreamingRoot()
    for h in leaf_hashes:
        s.add_leaf_hash(h)
    return s.root()
