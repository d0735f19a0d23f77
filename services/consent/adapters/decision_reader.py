"""Dedicated database connections for the decision API.

The kit's pool resets a connection on every release (`RESET ALL; UNLISTEN *; ...`),
one more round trip per query. The decision API runs one primary-key lookup per
request, so that reset would double its database time. The reader keeps a few
connections checked out of the kit's pool for the life of the process and
hands them out through a queue; before they are ready (start-up) or when one
broke, queries go through the pool as usual.

The reader is a worker (`reader(stopping)` holds the connections until the service
stops); `reader.read(query)` runs a repository query on one of them.
This belongs in the kit (a pool option for hot read paths); see docs/consent.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from lotse_kit.db import Database
from lotse_kit.retry import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")
Query = Callable[[asyncpg.Connection | asyncpg.Pool], Awaitable[T]]


class DecisionReader:
    def __init__(self, db: Database, size: int) -> None:
        if size < 1:
            raise ValueError("size must be positive; use the pool instead")
        self.db = db
        self.size = size
        self._idle: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        self._held: list[asyncpg.Connection] = []

    async def __call__(self, stopping: asyncio.Event) -> None:
        """Holds the connections until the service stops (a runtime worker)."""
        pool = self.db.pool
        try:
            for _ in range(self.size):
                conn = await pool.acquire()
                self._held.append(conn)
                self._idle.put_nowait(conn)
            await stopping.wait()
        finally:
            while not self._idle.empty():
                self._idle.get_nowait()
            held, self._held = self._held, []
            for conn in held:
                await pool.release(conn)

    def health(self) -> str:
        return "up" if len(self._held) >= self.size else f"up: {len(self._held)} of {self.size} decision connections held"

    async def read(self, query: Query[T]) -> T:
        if self._idle.empty() and not self._held:
            return await query(self.db.pool)  # not started (or stopped): use the pool
        conn = await self._idle.get()
        try:
            result = await query(conn)
        except TRANSIENT_ERRORS:
            await self._replace(conn)
            raise
        except BaseException:
            self._idle.put_nowait(conn)
            raise
        self._idle.put_nowait(conn)
        return result

    async def _replace(self, broken: asyncpg.Connection) -> None:
        pool = self.db.pool
        if broken in self._held:
            self._held.remove(broken)
        try:
            await pool.release(broken)
        except Exception:  # a broken connection may fail to release; the pool drops it
            log.debug("could not release a broken decision connection", exc_info=True)
        try:
            fresh = await pool.acquire()
        except TRANSIENT_ERRORS:
            log.warning("decision reader runs one connection short until the database answers again")
            return
        self._held.append(fresh)
        self._idle.put_nowait(fresh)
