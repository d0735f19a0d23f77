"""Every SQL statement of the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg


# ------------------------------------------------------------------ positions
async def positions(conn: asyncpg.Connection | asyncpg.Pool, org: str) -> dict[int, int]:
    rows = await conn.fetch("SELECT partition, next_offset FROM inbox_positions WHERE org = $1", org)
    return {r["partition"]: r["next_offset"] for r in rows}


async def advance_positions(conn: asyncpg.Connection, org: str, pos: Mapping[int, int], now: datetime) -> int:
    """Moves positions forward only (an older position changes nothing); returns how many partitions moved."""
    if not pos:
        return 0
    rows = await conn.fetch(
        """
        INSERT INTO inbox_positions (org, partition, next_offset, updated_at)
        SELECT $1, p, o, $4 FROM unnest($2::int[], $3::bigint[]) AS t(p, o)
        ON CONFLICT (org, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at
            WHERE inbox_positions.next_offset < EXCLUDED.next_offset
        RETURNING partition
        """,
        org,
        list(pos.keys()),
        list(pos.values()),
        now,
    )
    return len(rows)


# ------------------------------------------------------------------ state
async def _ensure_state(conn: asyncpg.Connection | asyncpg.Pool, org: str) -> None:
    await conn.execute("INSERT INTO inbox_state (org) VALUES ($1) ON CONFLICT DO NOTHING", org)


async def mark_fetched(conn: asyncpg.Connection | asyncpg.Pool, org: str, now: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO inbox_state (org, last_fetched_at) VALUES ($1, $2)
        ON CONFLICT (org) DO UPDATE SET last_fetched_at = EXCLUDED.last_fetched_at
        """,
        org,
        now,
    )


async def mark_acknowledged(conn: asyncpg.Connection, org: str, now: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO inbox_state (org, last_acknowledged_at, push_attempts, push_next_attempt_at, push_last_error)
        VALUES ($1, $2, 0, NULL, NULL)
        ON CONFLICT (org) DO UPDATE SET last_acknowledged_at = EXCLUDED.last_acknowledged_at,
            push_attempts = 0, push_next_attempt_at = NULL, push_last_error = NULL
        """,
        org,
        now,
    )


async def state(conn: asyncpg.Connection | asyncpg.Pool, org: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM inbox_state WHERE org = $1", org)
    return row


async def record_push_failure(conn: asyncpg.Connection | asyncpg.Pool, org: str, next_attempt_at: datetime, error: str) -> int:
    """Counts a failed push attempt; returns the attempts so far."""
    attempts: int = await conn.fetchval(
        """
        INSERT INTO inbox_state (org, push_attempts, push_next_attempt_at, push_last_error) VALUES ($1, 1, $2, $3)
        ON CONFLICT (org) DO UPDATE SET push_attempts = inbox_state.push_attempts + 1,
            push_next_attempt_at = EXCLUDED.push_next_attempt_at, push_last_error = EXCLUDED.push_last_error
        RETURNING push_attempts
        """,
        org,
        next_attempt_at,
        error[:500],
    )
    return attempts


async def record_notice(conn: asyncpg.Connection, org: str, oldest_at: datetime, now: datetime) -> None:
    await _ensure_state(conn, org)
    await conn.execute("UPDATE inbox_state SET notified_oldest_at = $2, notified_at = $3 WHERE org = $1", org, oldest_at, now)


async def try_lock(conn: asyncpg.Connection, name: str) -> bool:
    """A session advisory lock (one push sender per organisation across replicas)."""
    got: bool = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name)
    return got


async def unlock(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)


# ------------------------------------------------------------------ outbox answers
async def accepted(conn: asyncpg.Connection, event_ids: list[Any]) -> dict[Any, tuple[str, str]]:
    """Event ids posted before: id -> (org, digest)."""
    rows = await conn.fetch("SELECT event_id, org, digest FROM accepted_events WHERE event_id = ANY($1::uuid[])", event_ids)
    return {r["event_id"]: (r["org"], r["digest"]) for r in rows}


async def record_accepted(conn: asyncpg.Connection, rows: list[tuple[Any, str, str]], now: datetime) -> list[Any]:
    """Records (event_id, org, digest) rows; returns the ids that were new (a concurrent POST of the same id loses)."""
    if not rows:
        return []
    got = await conn.fetch(
        """
        INSERT INTO accepted_events (event_id, org, digest, accepted_at)
        SELECT i, o, d, $4 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(i, o, d)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
        """,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        now,
    )
    return [r["event_id"] for r in got]


async def prune_accepted(conn: asyncpg.Connection | asyncpg.Pool, older_than: datetime) -> int:
    status: str = await conn.execute("DELETE FROM accepted_events WHERE accepted_at < $1", older_than)
    return int(status.split()[-1])
