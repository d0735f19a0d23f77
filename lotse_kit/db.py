"""PostgreSQL: per-service schema and role, plain-SQL migrations, connection pools.

Each service owns one schema and connects as its own role. Migrations run with
the provisioning DSN (`LOTSE_DATABASE_URL`), are applied in order at start and
recorded with a checksum in `<schema>.schema_migrations`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

KIT_MIGRATIONS = Path(__file__).parent / "migrations"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str  # "<set>:<file stem>", e.g. "kit:001_outbox"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(set_name: str, directory: Path) -> list[Migration]:
    files = sorted(directory.glob("*.sql"))
    return [Migration(f"{set_name}:{f.stem}", f.read_text()) for f in files]


def ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


def service_dsn(admin_dsn: str, role: str, password: str) -> str:
    parts = urlsplit(admin_dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(role)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def provision(
    admin_dsn: str,
    *,
    schema: str,
    role: str,
    password: str,
    migrations: list[Migration],
) -> list[str]:
    """Creates role and schema if missing and applies pending migrations. Returns the applied versions."""
    schema, role = ident(schema), ident(role)
    conn = await asyncpg.connect(admin_dsn)
    applied: list[str] = []
    try:
        async with conn.transaction():
            # Replicas starting together must not race each other's migrations.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"lotse-provision:{schema}")
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD {_literal(password)}")
            else:
                await conn.execute(f"ALTER ROLE {role} LOGIN PASSWORD {_literal(password)}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                        version text PRIMARY KEY,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"]: r["checksum"] for r in await conn.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations")}
            await conn.execute(f"SET LOCAL search_path = {schema}")
            for m in migrations:
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise MigrationError(f"migration {m.version} was changed after it was applied to schema {schema}")
                    continue
                sql = m.sql.replace("{{role}}", role).replace("{{schema}}", schema)
                try:
                    await conn.execute(sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {m.version} failed: {exc}") from exc
                await conn.execute(f"INSERT INTO {schema}.schema_migrations (version, checksum) VALUES ($1, $2)", m.version, m.checksum)
                applied.append(m.version)
    finally:
        await conn.close()
    if applied:
        log.info("migrations applied", extra={"schema": schema, "versions": applied})
    return applied


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg rolls back an open transaction and drops listeners itself before
    calling this; its default reset adds `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`,
    one more round trip per acquire (2 of intake's 8 per referral). Pool connections never hold session state:
    LISTEN and session advisory locks live on dedicated connections (`Database.connect`), cursors and
    `SET LOCAL` end with their transaction, and the search path and application name are startup settings,
    which RESET ALL would keep anyway."""


async def create_pool(dsn: str, *, schema: str, application_name: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": ident(schema), "application_name": application_name},
        reset=_keep_session,
    )


class Database:
    """One service's schema, role and connection pool. Entrypoints and adapters get this, not the runtime."""

    def __init__(
        self, admin_dsn: str, *, service: str, schema: str, role: str, password: str, migrations: list[Migration], pool_max_size: int = 10
    ) -> None:
        self.admin_dsn = admin_dsn
        self.service = service
        self.schema = ident(schema)
        self.role = ident(role)
        self._password = password
        self.migrations = migrations
        self.pool_max_size = pool_max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def dsn(self) -> str:
        """The service role's DSN (for dedicated connections: LISTEN, advisory locks)."""
        return service_dsn(self.admin_dsn, self.role, self._password)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.service}: database pool used before start()")
        return self._pool

    async def start(self) -> None:
        await provision(self.admin_dsn, schema=self.schema, role=self.role, password=self._password, migrations=self.migrations)
        self._pool = await create_pool(self.dsn, schema=self.schema, application_name=f"lotse-{self.service}", max_size=self.pool_max_size)

    async def connect(self, purpose: str) -> asyncpg.Connection:
        """A dedicated connection outside the pool, named for `pg_stat_activity`."""
        return await asyncpg.connect(
            self.dsn, server_settings={"search_path": self.schema, "application_name": f"lotse-{self.service}-{purpose}"}
        )

    async def ping(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self.pool.fetchval("SELECT 1")

    async def close(self, timeout_s: float) -> None:
        if self._pool is None:
            return
        try:
            await asyncio.wait_for(self._pool.close(), timeout=timeout_s)
        except TimeoutError:
            log.error("closing the database pool timed out; terminating", extra={"timeout_s": timeout_s})
            self._pool.terminate()
        self._pool = None
