"""How many SQL statements the decision API and the gate's batch pre-check send, against the real database (issue 14),
and that a withdrawal still counts for the very next decision.

A decision with a cached snapshot reads the client's version (one statement; the snapshot again only if the version
changed); one without reads the snapshot at once (one statement; two before: the version first). `POST
/v1/decisions` reads the versions of its cached clients and the snapshots of the others, so a batch of clients none of
which is cached is one statement too (two before).
The gate's `prepare` reads a batch's decided requests, consents and keys in one statement (three before). The
partner forwarder sends an answer that names its sender there without reading the disclosure ledger (one read before).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import asyncpg

from contracts import new_event, topics
from contracts.events import ReferralAccepted
from contracts.vocab import DataCategory, Purpose
from services.consent.adapters.decision_cache import DecisionCache
from services.consent.adapters.decision_reader import DecisionReader, Query
from services.consent.domain.commands import WithdrawConsent
from services.consent.domain.forwarding import forwarded_event_id
from services.consent.handlers import EVENT_HANDLERS, Deps, handle
from services.consent.handlers.disclosures import prepare_gate_batch
from services.consent.views import DecisionQuestion, check_decision, check_decisions

from .conftest import CARITAS, DIAKONIE, JOBCENTER, KI, Service, StartService, disclosure_request

T = TypeVar("T")
ID = DataCategory.IDENTITY


class _Logged:
    """Statements sent on connections of the real pool, as asyncpg's query loggers see them. asyncpg introspects the
    uuid[] and bigint[] parameter types once per connection; a long-lived connection has done so long ago, so each
    connection does it here before its statements are counted."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.real = pool
        self.statements: list[str] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.real.acquire() as conn:
            await conn.fetch("SELECT $1::uuid[], $2::bigint[]", [], [])
            conn.add_query_logger(self._log)
            try:
                yield conn
            finally:
                await asyncio.sleep(0)  # asyncpg hands each statement to the loggers with call_soon
                conn.remove_query_logger(self._log)

    def _log(self, q: Any) -> None:
        self.statements.append(q.query)


class _LoggingReader(DecisionReader):
    """The decision API's reader, on pool connections whose statements are logged."""

    def __init__(self, deps: Deps) -> None:
        super().__init__(deps.db, 1)
        self.logged = _Logged(deps.db.pool)

    async def read(self, query: Query[T]) -> T:
        async with self.logged.acquire() as conn:
            return await query(conn)


def _replica(svc: Service) -> tuple[Deps, _LoggingReader]:
    """Another replica of the decision API over the same database: its own cache, its statements logged."""
    reader = _LoggingReader(svc.deps)
    return replace(svc.deps, cache=DecisionCache(100), reader=reader), reader


async def test_a_decision_is_one_statement_cached_or_not_and_sees_a_withdrawal_at_once(service: Service) -> None:
    client = uuid.uuid4()
    consent = await service.grant(client)
    replica, reader = _replica(service)
    args: dict[str, Any] = dict(client_id=client, recipient=CARITAS, purpose=Purpose.REFERRAL, categories=[ID])

    assert (await check_decision(replica, **args)).allowed  # nothing cached: the snapshot at once
    assert len(reader.logged.statements) == 1, reader.logged.statements
    assert "JOIN consents" in reader.logged.statements[0]
    assert (await check_decision(replica, **args)).allowed  # cached: the version only, and it is current
    assert reader.logged.statements[1:] == ["SELECT version FROM client_versions WHERE client_id = $1"], reader.logged.statements
    assert replica.cache is not None and (replica.cache.misses, replica.cache.hits) == (1, 1)

    # Withdrawn through the other replica (this one's cache is not told): the next decision reads the new version
    # and then the new snapshot, and says no.
    await handle(WithdrawConsent(uuid.UUID(consent["consent_id"]), by_org=JOBCENTER), service.deps)
    after = await check_decision(replica, **args)
    assert not after.allowed and after.reason.startswith("withdrawn"), after
    assert len(reader.logged.statements) == 4, reader.logged.statements
    assert (replica.cache.misses, replica.cache.hits) == (2, 1)
    assert not (await check_decision(replica, **args)).allowed  # and the new snapshot is what is cached now
    assert len(reader.logged.statements) == 5 and (replica.cache.misses, replica.cache.hits) == (2, 2)


async def test_without_the_cache_a_decision_is_one_statement(start_consent: StartService) -> None:
    async with start_consent(decision_cache_size=0) as svc:
        client = uuid.uuid4()
        consent = await svc.grant(client)
        reader = _LoggingReader(svc.deps)
        replica = replace(svc.deps, reader=reader)
        assert replica.cache is None
        args: dict[str, Any] = dict(client_id=client, recipient=CARITAS, purpose=Purpose.REFERRAL, categories=[ID])
        assert (await check_decision(replica, **args)).allowed
        await handle(WithdrawConsent(uuid.UUID(consent["consent_id"]), by_org=JOBCENTER), svc.deps)
        assert not (await check_decision(replica, **args)).allowed
        assert len(reader.logged.statements) == 2, reader.logged.statements


async def test_a_client_without_a_version_row_is_decided_and_cached_as_version_0(service: Service) -> None:
    replica, reader = _replica(service)
    args: dict[str, Any] = dict(client_id=uuid.uuid4(), recipient=CARITAS, purpose=Purpose.REFERRAL, categories=[ID])
    for _ in range(2):
        d = await check_decision(replica, **args)
        assert not d.allowed and d.reason.startswith("no-consent")
    assert replica.cache is not None and (replica.cache.misses, replica.cache.hits) == (1, 1)
    assert len(reader.logged.statements) == 2


async def test_a_batch_reads_the_snapshots_it_lacks_at_once_and_sees_a_withdrawal_at_once(service: Service) -> None:
    olena, deniz, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    granted = await service.grant(olena)
    await service.grant(deniz, recipients=[KI])
    replica, reader = _replica(service)
    questions = [
        DecisionQuestion(olena, CARITAS, Purpose.REFERRAL, [ID]),
        DecisionQuestion(deniz, KI, Purpose.REFERRAL, [ID]),
        DecisionQuestion(unknown, KI, Purpose.REFERRAL, [ID]),
        DecisionQuestion(deniz, DIAKONIE, Purpose.REFERRAL, [ID]),
    ]
    # Nothing cached: the snapshots at once, one statement (two before: every version first).
    assert [d.allowed for d in await check_decisions(replica, questions)] == [True, True, False, False]
    assert len(reader.logged.statements) == 1, reader.logged.statements
    # All cached and current: the versions, one statement.
    assert [d.allowed for d in await check_decisions(replica, questions)] == [True, True, False, False]
    assert len(reader.logged.statements) == 2, reader.logged.statements
    assert replica.cache is not None and (replica.cache.misses, replica.cache.hits) == (3, 3)

    # Withdrawn through the other replica: olena's version changed, so her snapshot is read again; the others'
    # cached ones stay.
    await handle(WithdrawConsent(uuid.UUID(granted["consent_id"]), by_org=JOBCENTER), service.deps)
    after = await check_decisions(replica, questions)
    assert [d.allowed for d in after] == [False, True, False, False] and after[0].reason.startswith("withdrawn")
    assert len(reader.logged.statements) == 4, reader.logged.statements
    assert (replica.cache.misses, replica.cache.hits) == (4, 5)

    # One client cached, one not: the versions of the one, the snapshot of the other.
    newcomer = uuid.uuid4()
    await service.grant(newcomer)
    mixed = [DecisionQuestion(newcomer, CARITAS, Purpose.REFERRAL, [ID]), DecisionQuestion(deniz, KI, Purpose.REFERRAL, [ID])]
    assert [d.allowed for d in await check_decisions(replica, mixed)] == [True, True]
    assert len(reader.logged.statements) == 6, reader.logged.statements


async def test_the_gate_batch_pre_check_reads_in_one_statement(service: Service) -> None:
    allowed, lacking, erased, decided_before = (uuid.uuid4() for _ in range(4))
    for c in (allowed, erased, decided_before):
        await service.grant(c, recipients=[CARITAS, DIAKONIE], categories=["identity"])
    await service.grant(lacking, recipients=[CARITAS], categories=["contact"])
    async with service.pool.acquire() as conn:
        await conn.execute("UPDATE client_versions SET erased_at = now() WHERE client_id = $1", erased)
    earlier = disclosure_request(decided_before, categories=[ID])
    async with service.pool.acquire() as conn, conn.transaction():
        await EVENT_HANDLERS["lotse.disclosure.requested"](earlier, conn, service.deps)

    reqs = [
        disclosure_request(allowed, categories=[ID]),
        disclosure_request(lacking, categories=[ID]),
        disclosure_request(erased, categories=[ID]),
        disclosure_request(decided_before, categories=[ID], request_id=earlier.data.request_id),
        disclosure_request(allowed, to_org=DIAKONIE, categories=[ID]),  # a member without a key
    ]
    logged = _Logged(service.deps.db.pool)
    deps = replace(service.deps, db=cast(Any, SimpleNamespace(pool=logged)))  # the prepare acquires from `deps.db.pool`
    batch = await prepare_gate_batch(reqs, deps)
    assert len(logged.statements) == 1, logged.statements
    assert set(batch.prefetched) == {reqs[0].data.request_id}  # only what the consent allows now, to a keyed member
    assert batch.undecided == {r.data.request_id for r in reqs} - {earlier.data.request_id}


async def test_an_answer_naming_its_sender_is_forwarded_without_reading_the_disclosure_ledger(service: Service) -> None:
    """Intake names `from_org` on every answer: the forwarder sends it there without asking the ledger who sent the
    referral (one statement per referral answer before); an answer without it still goes to the sender on record."""
    client = uuid.uuid4()
    await service.grant(client)
    request = disclosure_request(client, to_org=CARITAS)
    async with service.pool.acquire() as conn, conn.transaction():
        await EVENT_HANDLERS["lotse.disclosure.requested"](request, conn, service.deps)
    forward = EVENT_HANDLERS["lotse.referral.accepted"]
    logged = _Logged(service.deps.db.pool)
    sent_to: list[list[str]] = []
    for from_org in (JOBCENTER, None):
        answer = ReferralAccepted(
            client_id=client, referral_id=request.data.referral_id, to_org=CARITAS, from_org=from_org, accepted_at=datetime.now(UTC)
        )
        env = new_event(answer, source="/lotse/intake", acting_org=CARITAS)
        before = len(logged.statements)
        async with logged.acquire() as conn, conn.transaction():
            await forward(env, conn, service.deps)
            rows = await conn.fetch("SELECT topic FROM outbox WHERE event_id = $1", forwarded_event_id(env.id, JOBCENTER))
            sent_to.append([r["topic"] for r in rows])
        reads = [q for q in logged.statements[before:] if "FROM disclosures" in q]
        assert len(reads) == (0 if from_org else 1), logged.statements[before:]
    assert sent_to == [[topics.partner_inbox(JOBCENTER)]] * 2
