"""The kit's connection pool: no reset round trip on release, yet nothing of one use leaks into the next."""

from __future__ import annotations

from typing import Any

import pytest

from lotse_kit.runtime import Runtime


@pytest.fixture
async def rt(make_runtime: Any) -> Any:
    runtime: Runtime = make_runtime()
    await runtime.db.start()
    yield runtime
    await runtime.db.close(5.0)


async def test_releasing_a_connection_sends_no_reset_query(rt: Any) -> None:
    sent: list[str] = []

    def log(q: Any) -> None:
        sent.append(q.query)

    async with rt.db.pool.acquire() as conn:
        raw = conn._con  # the connection behind the pool's proxy, which outlives this use
        raw.add_query_logger(log)
        await conn.fetchval("SELECT 1")
    raw.remove_query_logger(log)
    assert sent == ["SELECT 1"]  # asyncpg's default would add "SELECT pg_advisory_unlock_all(); CLOSE ALL; ..."


async def test_a_connection_released_inside_a_transaction_is_rolled_back(rt: Any) -> None:
    pool = rt.db.pool
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO effects (event_id, client_id, note) VALUES (gen_random_uuid(), gen_random_uuid(), 'leaked')")
    # Every connection of the pool: none is left in that transaction, and the row was never committed.
    for _ in range(pool.get_max_size()):
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
    assert await pool.fetchval("SELECT count(*) FROM effects WHERE note = 'leaked'") == 0
    assert await pool.fetchval("SHOW search_path") == rt.db.schema  # the startup settings hold
