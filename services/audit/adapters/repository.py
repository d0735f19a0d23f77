"""PostgreSQL access for the audit log: appending batches, tree nodes, tree heads, queries, export."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from lotse_kit.db import Database
from lotse_kit.retry import TRANSIENT_ERRORS

from ..domain import merkle
from ..domain.entries import Entry
from ..domain.tree_head import TreeHead

log = logging.getLogger(__name__)

T = TypeVar("T")


class _ProbeDone(Exception):
    """Rolls back a probe's transaction."""


def _literal(text: str) -> str:
    """An SQL string literal (for the simple-query protocol, which takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _row(idx: int, e: Entry) -> tuple[Any, ...]:
    return (
        idx,
        e.topic,
        e.partition,
        e.offset,
        e.logical_topic,
        e.kind,
        e.event_id,
        e.event_type,
        e.client_id,
        e.acting_org,
        e.orgs,
        e.event_time,
        e.entry,
        e.leaf_hash,
    )


ENTRY_COLUMNS = (
    "idx",
    "topic",
    "partition",
    "offset",
    "logical_topic",
    "kind",
    "event_id",
    "event_type",
    "client_id",
    "acting_org",
    "orgs",
    "event_time",
    "entry",
    "leaf_hash",
)
_SELECT_ENTRY = "SELECT idx, entry, leaf_hash, logged_at FROM audit_log"


@dataclass(frozen=True)
class AppendResult:
    start: int  # index of the first appended entry
    appended: int
    duplicates: int

    @property
    def tree_size(self) -> int:
        return self.start + self.appended


@dataclass(frozen=True)
class StoredEntry:
    index: int
    entry: bytes
    leaf_hash: bytes
    logged_at: datetime | None = None


@dataclass(frozen=True)
class EntryFilter:
    client_id: str | None = None
    org: str | None = None
    type: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    before_size: int | None = None  # only entries with idx < before_size


class NodeCache:
    """LRU of tree nodes. Safe because a stored node never changes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[merkle.NodeKey, bytes] = OrderedDict()

    def get(self, key: merkle.NodeKey) -> bytes | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: merkle.NodeKey, value: bytes) -> None:
        if self.size <= 0:
            return
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)


class AuditRepository:
    """All SQL of the audit service, over the service's `Database` (its pool exists once the runtime started)."""

    def __init__(self, db: Database, *, node_cache_size: int = 200_000) -> None:
        self.db = db
        self.cache = NodeCache(node_cache_size)

    @property
    def schema(self) -> str:
        return self.db.schema

    @property
    def pool(self) -> asyncpg.Pool:
        return self.db.pool

    @property
    def append_lock(self) -> str:
        return f"lotse-audit-append:{self.schema}"

    # ------------------------------------------------------------ appending
    async def append(self, entries: Sequence[Entry]) -> AppendResult:
        """Appends the entries not yet logged (by record position), in the given order, in one transaction.

        One writer at a time (an advisory lock per batch) assigns contiguous leaf indexes and writes
        the leaves and every subtree they complete, so the tree is the same on every replica.
        """
        if not entries:
            return AppendResult(0, 0, 0)
        async with self.pool.acquire() as conn, self._locked_transaction(conn):
            logged, start = await self._already_logged_and_size(conn, entries)
            seen: set[tuple[str, int, int]] = set()
            new: list[Entry] = []
            for e in entries:
                position = (e.topic, e.partition, e.offset)
                if position in logged or position in seen:
                    continue
                seen.add(position)
                new.append(e)
            if not new:
                return AppendResult(start, 0, len(entries))
            end = start + len(new)
            frontier = await self._frontier(conn, merkle.frontier_for_append(start, end))
            nodes = merkle.nodes_completed_by_append(start, [e.leaf_hash for e in new], frontier)
            await conn.copy_records_to_table(
                "audit_log",
                schema_name=self.schema,
                columns=ENTRY_COLUMNS,
                records=[_row(start + i, e) for i, e in enumerate(new)],
            )
            if nodes:
                await conn.copy_records_to_table("tree_nodes", schema_name=self.schema, columns=("level", "idx", "hash"), records=nodes)
        # Committed, so these nodes are final: cache the ones the root at the new size needs, so that
        # signing a tree head right after this append loads nothing (not before the commit: a rolled
        # back append's nodes would poison the cache).
        self._cache_root_nodes(start, new, nodes, frontier)
        return AppendResult(start, len(new), len(entries) - len(new))

    @asynccontextmanager
    async def _locked_transaction(self, conn: asyncpg.Connection) -> AsyncIterator[None]:
        """A transaction holding the append lock, committed on success and rolled back otherwise.

        BEGIN and the lock go in one round trip (a simple query may hold several statements); the
        queries after it run once the lock is granted, each with its own snapshot (READ COMMITTED),
        so they see every append committed before. Round trips count: the writer shares its event
        loop with the fetching and the building, so each one waits for the loop as well as for
        PostgreSQL."""
        try:
            await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock(hashtext({_literal(self.append_lock)}))")
            yield
        except BaseException:
            with suppress(Exception):  # a broken connection is discarded by the pool, its transaction with it
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")

    def _cache_root_nodes(
        self, start: int, new: Sequence[Entry], nodes: Sequence[tuple[int, int, bytes]], frontier: dict[merkle.NodeKey, bytes]
    ) -> None:
        end = start + len(new)
        for level, i in merkle.needed_nodes(lambda get: merkle.root(end, get)):
            if level == 0:
                h = new[i - start].leaf_hash if i >= start else None
            elif (start >> level) <= i < (end >> level):
                # `nodes` lists each level's new nodes in index order, level after level.
                before = sum((end >> lv) - (start >> lv) for lv in range(1, level))
                h = nodes[before + i - (start >> level)][2]
            else:
                h = frontier.get((level, i))
            if h is not None:
                self.cache.put((level, i), h)

    async def refusal(self, entries: Sequence[Entry]) -> str | None:
        """Why the database would refuse to store these entries, or None. Nothing is written: the probe's
        transaction is always rolled back. Infrastructure errors are raised, not reported as refusals."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.append_lock)
                start = await conn.fetchval("SELECT coalesce(max(idx) + 1, 0) FROM audit_log")
                await conn.copy_records_to_table(
                    "audit_log", schema_name=self.schema, columns=ENTRY_COLUMNS, records=[_row(start + i, e) for i, e in enumerate(entries)]
                )
                raise _ProbeDone
        except _ProbeDone:
            return None
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:2000]

    async def _already_logged_and_size(self, conn: asyncpg.Connection, entries: Sequence[Entry]) -> tuple[set[tuple[str, int, int]], int]:
        """The positions among `entries` that are logged already, and the log's size (under the append lock).

        Per partition, offsets are logged in order, so only records at or below the highest logged
        offset can be duplicates; those are checked exactly. Usually one query: the highest logged
        offset per partition together with the size."""
        parts = sorted({(e.topic, e.partition) for e in entries})
        rows = await conn.fetch(
            """SELECT u.t, u.p, (SELECT max(a."offset") FROM audit_log a WHERE a.topic = u.t AND a."partition" = u.p) AS hi,
                      (SELECT coalesce(max(idx) + 1, 0) FROM audit_log) AS size
               FROM unnest($1::text[], $2::int[]) AS u(t, p)""",
            [t for t, _ in parts],
            [p for _, p in parts],
        )
        size = rows[0]["size"]
        highest = {(r["t"], r["p"]): r["hi"] for r in rows if r["hi"] is not None}
        if not highest:
            return set(), size
        suspects = [e for e in entries if (e.topic, e.partition) in highest and e.offset <= highest[(e.topic, e.partition)]]
        if not suspects:
            return set(), size
        found = await conn.fetch(
            """SELECT a.topic, a."partition", a."offset" FROM audit_log a
               JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS u(t, p, o)
                 ON a.topic = u.t AND a."partition" = u.p AND a."offset" = u.o""",
            [e.topic for e in suspects],
            [e.partition for e in suspects],
            [e.offset for e in suspects],
        )
        return {(r["topic"], r["partition"], r["offset"]) for r in found}, size

    async def _frontier(self, conn: asyncpg.Connection, keys: list[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        """The stored nodes an append needs, from the cache where possible: after an append of this
        replica they are exactly the nodes it cached (the root's at the new size), so usually no query.
        Read on the append's connection; they belong to the tree before it, committed, so caching them is safe."""
        return await self.nodes(keys, conn)

    # ------------------------------------------------------------ tree
    async def size(self, conn: asyncpg.Connection | None = None) -> int:
        q = "SELECT coalesce(max(idx) + 1, 0) FROM audit_log"
        return await (conn.fetchval(q) if conn else self.pool.fetchval(q))

    async def nodes(self, keys: Iterable[merkle.NodeKey], conn: asyncpg.Connection | None = None) -> dict[merkle.NodeKey, bytes]:
        """The stored nodes for `keys` (level 0 = leaf hashes), from the cache where possible; the rest in one query
        (on `conn` if given, else on a pooled connection) and cached."""
        out: dict[merkle.NodeKey, bytes] = {}
        missing: list[merkle.NodeKey] = []
        for k in keys:
            v = self.cache.get(k)
            if v is None:
                missing.append(k)
            else:
                out[k] = v
        if missing:
            if conn is not None:
                loaded = await self._load(conn, missing)
            else:
                async with self.pool.acquire() as pooled:
                    loaded = await self._load(pooled, missing)
            for k, v in loaded.items():
                self.cache.put(k, v)
            out.update(loaded)
        return out

    async def compute(self, f: Callable[[merkle.NodeGetter], T]) -> T:
        """Runs a tree computation (a root, a proof) with the stored nodes it needs, loaded in one query."""
        keys = merkle.needed_nodes(f)
        return f(merkle.with_nodes(await self.nodes(keys)))

    async def _load(self, conn: asyncpg.Connection, keys: Iterable[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        keys = list(keys)
        if not keys:
            return {}
        leaves = [i for level, i in keys if level == 0]
        inner = [(level, i) for level, i in keys if level > 0]
        rows = await conn.fetch(
            """SELECT 0 AS level, idx, leaf_hash AS hash FROM audit_log WHERE idx = ANY($1::bigint[])
               UNION ALL
               SELECT n.level, n.idx, n.hash FROM tree_nodes n
               JOIN unnest($2::smallint[], $3::bigint[]) AS u(l, i) ON n.level = u.l AND n.idx = u.i""",
            leaves,
            [lv for lv, _ in inner],
            [i for _, i in inner],
        )
        found = {(r["level"], r["idx"]): bytes(r["hash"]) for r in rows}
        if len(found) != len(set(keys)):
            missing = sorted(set(keys) - set(found))
            raise merkle.MissingNode(*missing[0])
        return found

    # ------------------------------------------------------------ tree heads
    async def latest_tree_head(self) -> TreeHead | None:
        row = await self.pool.fetchrow(
            "SELECT tree_size, timestamp_ms, root_hash, signature, key_id, public_key FROM tree_heads ORDER BY tree_size DESC, id DESC LIMIT 1"
        )
        return _head(row) if row else None

    async def tree_head_for_size(self, tree_size: int) -> TreeHead | None:
        row = await self.pool.fetchrow(
            "SELECT tree_size, timestamp_ms, root_hash, signature, key_id, public_key FROM tree_heads WHERE tree_size = $1 ORDER BY id DESC LIMIT 1",
            tree_size,
        )
        return _head(row) if row else None

    async def add_tree_head(self, head: TreeHead, requested_by: str | None) -> None:
        await self.pool.execute(
            """INSERT INTO tree_heads (tree_size, timestamp_ms, root_hash, signature, key_id, public_key, requested_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            head.tree_size,
            head.timestamp_ms,
            head.root_hash,
            head.signature,
            head.key_id,
            head.public_key,
            requested_by,
        )

    # ------------------------------------------------------------ entries
    async def entry(self, index: int) -> StoredEntry | None:
        row = await self.pool.fetchrow(f"{_SELECT_ENTRY} WHERE idx = $1", index)
        return _stored(row) if row else None

    async def entries(self, f: EntryFilter, *, after: int | None, limit: int) -> list[StoredEntry]:
        where, args = _where(f)
        if after is not None:
            args.append(after)
            where.append(f"idx > ${len(args)}")
        args.append(limit)
        sql = f"{_SELECT_ENTRY} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY idx LIMIT ${len(args)}"
        return [_stored(r) for r in await self.pool.fetch(sql, *args)]

    async def stream(self, f: EntryFilter, *, fetch_rows: int = 2000) -> AsyncIterator[StoredEntry]:
        """Every matching entry in index order, through a server-side cursor (constant memory)."""
        where, args = _where(f)
        sql = f"{_SELECT_ENTRY} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY idx"
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            async for row in conn.cursor(sql, *args, prefetch=fetch_rows):
                yield _stored(row)


def _where(f: EntryFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []

    def add(cond: str, value: Any) -> None:
        args.append(value)
        where.append(cond.replace("?", f"${len(args)}"))

    if f.client_id is not None:
        add("client_id = ?", f.client_id)
    if f.org is not None:
        add("orgs @> ARRAY[?::text]", f.org)
    if f.type is not None:
        add("event_type = ?", f.type)
    if f.time_from is not None:
        add("event_time >= ?", f.time_from)
    if f.time_to is not None:
        add("event_time < ?", f.time_to)
    if f.before_size is not None:
        add("idx < ?", f.before_size)
    return where, args


def _stored(row: asyncpg.Record) -> StoredEntry:
    return StoredEntry(index=row["idx"], entry=bytes(row["entry"]), leaf_hash=bytes(row["leaf_hash"]), logged_at=row["logged_at"])


def _head(row: asyncpg.Record) -> TreeHead:
    return TreeHead(
        tree_size=row["tree_size"],
        timestamp_ms=row["timestamp_ms"],
        root_hash=bytes(row["root_hash"]),
        signature=bytes(row["signature"]),
        key_id=row["key_id"],
        public_key=bytes(row["public_key"]),
    )
