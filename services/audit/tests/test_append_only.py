"""The log is append-only in the database: the service role may only INSERT and SELECT, and
triggers stop UPDATE, DELETE and TRUNCATE even for the owner."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from contracts import new_event, topics
from contracts.events import ClientRegistered
from services.audit.tests.conftest import ORG, now

TABLES = {"audit_log": "kind", "tree_nodes": "hash", "tree_heads": "key_id"}  # table -> a column to "update"


async def test_service_role_cannot_change_the_log_and_triggers_stop_everyone_else(audit, admin_db):
    env = new_event(
        ClientRegistered(client_id=uuid.uuid4(), registering_org=ORG, responsible_org=ORG, preferred_language="de", registered_at=now()),
        source="/lotse/intake",
        acting_org=ORG,
    )
    await audit.produce(topics.CLIENTS, env, env, env)
    await audit.wait_for_size(3)
    await audit.sign()
    schema = audit.schema
    role = audit.deps.db.role

    for table in TABLES:
        owner = await admin_db.fetchval("SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = $2", schema, table)
        assert owner != role
        privs = {
            p: await admin_db.fetchval("SELECT has_table_privilege($1, $2, $3)", role, f"{schema}.{table}", p)
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
        }
        assert privs == {
            "SELECT": True,
            "INSERT": True,
            "UPDATE": False,
            "DELETE": False,
            "TRUNCATE": False,
            "REFERENCES": False,
            "TRIGGER": False,
        }

    # As the service: refused by privileges.
    async with audit.pool.acquire() as conn:
        for sql in (
            "UPDATE audit_log SET kind = 'x' WHERE idx = 0",
            "DELETE FROM audit_log WHERE idx = 0",
            "TRUNCATE audit_log",
            "UPDATE tree_nodes SET hash = hash",
            "DELETE FROM tree_heads",
            "DROP TRIGGER audit_log_append_only ON audit_log",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)

    # As the owner (the provisioning role, here a superuser): refused by the triggers.
    for table, column in TABLES.items():
        for sql in (f"UPDATE {schema}.{table} SET {column} = {column}", f"DELETE FROM {schema}.{table}", f"TRUNCATE {schema}.{table}"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await admin_db.execute(sql)
    assert await admin_db.fetchval(f"SELECT count(*) FROM {schema}.audit_log") == 3
