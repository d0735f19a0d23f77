"""How many SQL statements one gated disclosure request costs, against the real database (issue 14).

The gate asks "decided already?", reads and locks the client's consents and version row and reads the recipient's
keys in one statement (`repository.lock_gate_state`); these tests count what a lone request sends and check that
the locks still hold.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from services.consent.handlers import EVENT_HANDLERS

from .conftest import CARITAS, Service, disclosure_request

GATE = EVENT_HANDLERS["lotse.disclosure.requested"]


async def _gate_statements(svc: Service, request: Any) -> list[str]:
    """The statements the gate sends for one request outside a batch, in the consumer's kind of transaction."""
    statements: list[str] = []

    def logged(q: Any) -> None:
        statements.append(q.query)

    async with svc.deps.db.pool.acquire() as conn, conn.transaction():
        conn.add_query_logger(logged)
        try:
            await GATE(request, conn, svc.deps)
        finally:
            conn.remove_query_logger(logged)
    return statements


def _reads_before_insert(statements: list[str]) -> list[str]:
    """The statements up to the disclosure record's INSERT: the decision's reads and locks."""
    out: list[str] = []
    for q in statements:
        if "INSERT INTO disclosures" in q:
            break
        out.append(q)
    return out


async def test_a_gated_request_decides_from_one_locking_statement(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client)
    statements = await _gate_statements(service, disclosure_request(client, to_org=CARITAS))
    assert any("INSERT INTO disclosures" in q for q in statements), statements  # it was disclosed
    reads = _reads_before_insert(statements)
    # Before issue 14: "decided already?", the consents FOR SHARE, the version row FOR SHARE and the recipient's
    # keys (four; seven statements in all, five now: this one, the disclosure record and two outbox rows).
    assert len(reads) == 1, reads
    [state] = reads
    assert "FROM disclosures" in state and "FROM consents" in state and "FROM client_versions" in state and "FROM org_keys" in state
    assert state.count("FOR SHARE") == 2


async def test_a_request_decided_before_costs_one_statement(service: Service) -> None:
    client = uuid.uuid4()
    await service.grant(client)
    request = disclosure_request(client, to_org=CARITAS)
    await _gate_statements(service, request)
    again = await _gate_statements(service, disclosure_request(client, to_org=CARITAS, request_id=request.data.request_id))
    assert len(again) == 1 and "INSERT" not in again[0], again


async def test_a_client_without_consents_still_locks_its_version_row(service: Service) -> None:
    """The version row is locked even when no consent row exists (a locking clause cannot reach the nullable side
    of an outer join, which is why the statement does not join them)."""
    client = uuid.uuid4()
    async with service.deps.db.pool.acquire() as conn:
        await conn.execute("INSERT INTO client_versions (client_id, version) VALUES ($1, 1)", client)
    async with service.deps.db.pool.acquire() as conn, conn.transaction():
        await GATE(disclosure_request(client, to_org=CARITAS), conn, service.deps)  # blocked: no consent
        async with service.deps.db.pool.acquire() as other:
            # NOWAIT on a row another transaction holds FOR SHARE fails at once: that is the lock we want to see.
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.fetchval("SELECT 1 FROM client_versions WHERE client_id = $1 FOR UPDATE NOWAIT", client)
            # ...while the row itself is there to be locked, so this is not a lock on nothing.
            assert await other.fetchval("SELECT version FROM client_versions WHERE client_id = $1", client) == 1


async def test_a_disclosure_in_progress_holds_the_consents_and_the_version_row(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client)
    async with service.deps.db.pool.acquire() as conn, conn.transaction():
        await GATE(disclosure_request(client, to_org=CARITAS), conn, service.deps)  # disclosed, not yet committed
        async with service.deps.db.pool.acquire() as other:
            with pytest.raises(asyncpg.LockNotAvailableError):  # a withdrawal's FOR UPDATE would wait
                await other.fetchval("SELECT 1 FROM consents WHERE consent_id = $1 FOR UPDATE NOWAIT", uuid.UUID(consent["consent_id"]))
            with pytest.raises(asyncpg.LockNotAvailableError):  # an erasure's version bump would wait
                await other.fetchval("SELECT 1 FROM client_versions WHERE client_id = $1 FOR UPDATE NOWAIT", client)
