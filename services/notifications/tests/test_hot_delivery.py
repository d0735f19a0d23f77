"""Delivery state changes without index writes (migration 004), against the real PostgreSQL.

A claim changes no indexed column of `notifications` (a HOT update, counted in `pg_stat_xact_user_tables`); the lease
(`leased_until`) still brings back a row whose worker died and fences its late outcome; a retry waits for its due time;
an erasure ends a row in flight for good; a database as migration 003 left it keeps every waiting notification; the
status API answers as before: a row in flight is `sending` (stored `created` until its first outcome), with the lease's
end as `next_attempt_at`.

Rows are recorded due at LATER while the service's own worker stands at T0 (ManualClock), so it leaves them to the test.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lotse_kit.clock import ManualClock
from lotse_kit.db import KIT_MIGRATIONS, load_migrations, provision
from services.notifications.adapters import repository as repo
from services.notifications.domain.model import CLIENT_ERASED, Channel, Decision, Outcome, Status
from tests.fixtures import as_org

from .conftest import AWO, CARITAS, JOBCENTER, OPERATOR, fast_settings
from .test_webhook_security import MIGRATIONS

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)
LEASE_S = 60.0
DELIVERED = (Outcome.delivered("accepted by the SMTP relay"), Decision(Status.DELIVERED, None))


def _rows(client: uuid.UUID, org: str = JOBCENTER, *, final: bool = False) -> list[tuple[repo.NewNotification, datetime]]:
    """One trigger's e-mails: to the client (on behalf of `org`) and to `org`; the client's recorded final if `final`."""
    common: dict[str, Any] = dict(
        trigger_event_id=uuid.uuid4(),
        trigger_type="lotse.deadline.approaching",
        client_id=str(client),
        channel=Channel.EMAIL,
        payload={"client_id": str(client), "responsible_org": org},
        concerned_orgs=[org, CARITAS],
        language="de",
    )
    client_row = repo.NewNotification(
        **common,
        recipient_kind="client",
        recipient_org=org,
        recipient_key=f"client:{client}",
        template="deadline_approaching.client",
        status=Status.PERMANENT_FAILURE if final else Status.CREATED,
        reason="no consent to contact the client" if final else None,
    )
    org_row = repo.NewNotification(
        **common, recipient_kind="organisation", recipient_org=org, recipient_key=f"org:{org}", template="deadline_approaching.org"
    )
    return [(client_row, LATER), (org_row, LATER)]


async def _record(pool: asyncpg.Pool, *triggers: list[tuple[repo.NewNotification, datetime]]) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    async with pool.acquire() as conn, conn.transaction():
        for rows in triggers:
            ids += [i for i in await repo.insert_notifications(conn, rows) if i is not None]
    return ids


async def _updates(conn: asyncpg.Connection) -> tuple[int, int]:
    """Updates of `notifications` by this backend not yet flushed to the statistics (this transaction's among them),
    and how many of them were HOT: compare before and after, within one transaction."""
    row = await conn.fetchrow(
        """SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
            WHERE schemaname = current_schema() AND relname = 'notifications'"""
    )
    return (row["n_tup_upd"], row["n_tup_hot_upd"]) if row else (0, 0)


async def _claim_counting_updates(pool: asyncpg.Pool, now: datetime) -> tuple[list[asyncpg.Record], tuple[int, int]]:
    """A claim, and how many updates of notifications it made (all, HOT)."""
    async with pool.acquire() as conn, conn.transaction():
        upd, hot = await _updates(conn)
        claimed = await repo.claim_due(conn, Channel.EMAIL, 50, LEASE_S, now)
        upd_after, hot_after = await _updates(conn)
    return claimed, (upd_after - upd, hot_after - hot)


def _finished(rows: list[asyncpg.Record], outcome: Outcome, decision: Decision, now: datetime) -> list[repo.Finished]:
    return [repo.Finished(r, outcome, decision, now, now) for r in rows]


async def _finish(pool: asyncpg.Pool, rows: list[asyncpg.Record], outcome: Outcome, decision: Decision, now: datetime) -> set[uuid.UUID]:
    async with pool.acquire() as conn, conn.transaction():
        return await repo.finish_attempts(conn, _finished(rows, outcome, decision, now))


async def test_a_claim_is_a_hot_update(start_service) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        await _record(svc.pool, *(_rows(uuid.uuid4()) for _ in range(5)))
        claimed, updates = await _claim_counting_updates(svc.pool, LATER)
        # No index entry written for the claim: every update of a notification was heap-only.
        assert len(claimed) == 10 and updates == (10, 10)
        # A re-claim after the lease ended is one as well.
        again, updates = await _claim_counting_updates(svc.pool, LATER + timedelta(seconds=LEASE_S))
        assert len(again) == 10 and updates == (10, 10)
        assert await _finish(svc.pool, again, *DELIVERED, LATER) == {r["id"] for r in again}
        [row] = await svc.rows("id = $1", again[0]["id"])
        assert (row["status"], row["attempts"], row["next_attempt_at"], row["leased_until"]) == ("delivered", 2, None, None)


async def test_a_claim_whose_worker_died_is_claimed_again_when_the_lease_ends_and_its_late_outcome_is_fenced(start_service) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        ids = await _record(svc.pool, _rows(uuid.uuid4()))
        first = await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, LATER)
        assert sorted(r["id"] for r in first) == sorted(ids) and {r["attempts"] for r in first} == {1}
        # The worker dies: no outcome. While the lease runs nobody else claims the rows; the status API shows its end.
        assert await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, LATER + timedelta(seconds=LEASE_S - 1)) == []
        lease_end = LATER + timedelta(seconds=LEASE_S)
        shown = (await svc.http.get(f"/v1/notifications/{ids[1]}", headers=as_org(OPERATOR))).json()
        assert (shown["status"], datetime.fromisoformat(shown["next_attempt_at"])) == ("sending", lease_end)
        listed = (await svc.http.get("/v1/notifications", params={"status": "sending"}, headers=as_org(OPERATOR))).json()
        assert sorted((n["id"], datetime.fromisoformat(n["next_attempt_at"])) for n in listed["items"]) == [
            (str(i), lease_end) for i in sorted(ids)
        ]
        created = (await svc.http.get("/v1/notifications", params={"status": "created"}, headers=as_org(OPERATOR))).json()
        assert created["items"] == []

        second = await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, lease_end)
        assert sorted(r["id"] for r in second) == sorted(ids) and {r["attempts"] for r in second} == {2}
        # The dead worker's outcome arrives late: recorded as an attempt only, the rows stay the new claim's.
        assert await _finish(svc.pool, first, *DELIVERED, lease_end) == set()
        assert {(r["status"], r["attempts"]) for r in await svc.rows("id = ANY($1)", ids)} == {("created", 2)}  # shown: sending
        assert await _finish(svc.pool, second, *DELIVERED, lease_end) == set(ids)
        assert {(r["status"], r["attempts"]) for r in await svc.rows("id = ANY($1)", ids)} == {("delivered", 2)}
        assert await svc.pool.fetchval("SELECT count(*) FROM delivery_attempts WHERE notification_id = ANY($1)", ids) == 4
        assert await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, lease_end + timedelta(days=30)) == []


async def test_a_retry_waits_for_its_due_time_and_an_erasure_ends_a_row_in_flight_for_good(start_service) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        olena, erased = uuid.uuid4(), uuid.uuid4()
        await _record(svc.pool, _rows(olena), _rows(erased, AWO))
        claimed = {r["recipient_key"]: r for r in await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, LATER)}
        assert len(claimed) == 4

        retry_at = LATER + timedelta(seconds=30)
        retry = (Outcome.retry("SMTP 451"), Decision(Status.SENDING, retry_at))
        assert len(await _finish(svc.pool, [claimed[f"client:{olena}"]], *retry, LATER)) == 1
        assert len(await _finish(svc.pool, [claimed[f"org:{JOBCENTER}"]], *DELIVERED, LATER)) == 1
        [waiting] = await svc.rows("id = $1", claimed[f"client:{olena}"]["id"])
        assert (waiting["status"], waiting["next_attempt_at"], waiting["leased_until"]) == ("sending", retry_at, None)
        assert await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, retry_at - timedelta(seconds=1)) == []
        [again] = await repo.claim_due(svc.pool, Channel.EMAIL, 1, LEASE_S, retry_at)
        assert (again["id"], again["attempts"]) == (waiting["id"], 2)

        # An erasure while the client's row is in flight ends it; its late outcome is fenced; it is never claimed again.
        in_flight = claimed[f"client:{erased}"]
        async with svc.pool.acquire() as conn, conn.transaction():
            cancelled = await repo.forget_client(conn, erased, LATER, CLIENT_ERASED, LATER)
        assert [r["id"] for r in cancelled] == [in_flight["id"]]
        assert await _finish(svc.pool, [in_flight], *DELIVERED, LATER) == set()
        [row] = await svc.rows("id = $1", in_flight["id"])
        assert (row["status"], row["reason"], json.loads(row["payload"])) == ("permanent-failure", CLIENT_ERASED, {})
        assert (row["next_attempt_at"], row["leased_until"]) == (None, None)
        # The organisation's row about the erased client is still sent; it drops its payload when it ends.
        org_row = claimed[f"org:{AWO}"]
        assert await _finish(svc.pool, [org_row], *DELIVERED, LATER) == {org_row["id"]}
        [row] = await svc.rows("id = $1", org_row["id"])
        assert (row["status"], json.loads(row["payload"])) == ("delivered", {})
        later = await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, LATER + timedelta(days=30))
        assert [r["id"] for r in later] == [waiting["id"]]  # the retry in flight, its lease over; nothing that ended


async def test_migration_004_keeps_every_notification_that_was_waiting(
    start_service, admin_db, unique, database_url, topic_namespace
) -> None:
    # A database as migration 003 left it: a row not yet attempted, one waiting for its retry, one in flight (its lease in
    # next_attempt_at), one delivered.
    schema = f"notif_{unique}"
    before = [m for m in load_migrations("notifications", MIGRATIONS) if m.version < "notifications:004"]
    password = fast_settings(topic_namespace).db_role_password.get_secret_value()
    await provision(
        database_url, schema=schema, role=f"lotse_{schema}", password=password, migrations=load_migrations("kit", KIT_MIGRATIONS) + before
    )
    rows = {
        "created": ("created", 0, LATER, None),
        "retry": ("sending", 1, LATER + timedelta(seconds=30), None),
        "in_flight": ("sending", 1, LATER + timedelta(seconds=LEASE_S), None),
        "delivered": ("delivered", 1, None, LATER),
    }
    ids = {name: uuid.uuid4() for name in rows}
    for name, (status, attempts, next_attempt_at, completed_at) in rows.items():
        await admin_db.execute(
            f"""INSERT INTO {schema}.notifications (id, trigger_event_id, trigger_type, client_id, recipient_kind, recipient_org,
                                                    recipient_key, channel, template, language, payload, concerned_orgs, status,
                                                    attempts, next_attempt_at, completed_at)
                VALUES ($1, $2, 'lotse.deadline.approaching', $3, 'organisation', $4, $5, 'email', 'deadline_approaching.org', 'de',
                        '{{}}'::jsonb, ARRAY[$4], $6, $7, $8, $9)""",
            ids[name],
            uuid.uuid4(),
            uuid.uuid4(),
            JOBCENTER,
            f"org:{JOBCENTER}",
            status,
            attempts,
            next_attempt_at,
            completed_at,
        )

    async with start_service(clock=ManualClock(T0)) as svc:  # applies 004
        assert [r["id"] for r in await repo.claim_due(svc.pool, Channel.EMAIL, 50, 3600.0, LATER)] == [ids["created"]]
        later = await repo.claim_due(svc.pool, Channel.EMAIL, 50, LEASE_S, LATER + timedelta(seconds=LEASE_S))
        assert [(r["id"], r["attempts"]) for r in later] == [(ids["retry"], 2), (ids["in_flight"], 2)]  # oldest due first
        indexes = {
            r["indexname"]
            for r in await svc.pool.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'notifications'"
            )
        }
        assert "notifications_concerned" not in indexes and {"notifications_status", "notifications_created"} <= indexes


async def test_the_status_api_answers_the_same_for_every_filter(start_service) -> None:
    async with start_service(clock=ManualClock(T0)) as svc:
        clients = [uuid.uuid4() for _ in range(4)]
        await _record(svc.pool, *(_rows(c, (JOBCENTER, AWO)[i % 2], final=i == 3) for i, c in enumerate(clients)))
        claimed = await repo.claim_due(svc.pool, Channel.EMAIL, 3, LEASE_S, LATER)
        await _finish(svc.pool, claimed[:2], *DELIVERED, LATER)
        # As the API shows them: a row claimed for its first attempt (stored `created`) is `sending`.
        everything = [
            {**dict(r), "status": "sending" if r["status"] == "created" and r["attempts"] else r["status"]} for r in await svc.rows()
        ]
        assert {r["status"] for r in everything} == {"created", "sending", "delivered", "permanent-failure"}

        def expected(org: str | None, **where: Any) -> list[str]:
            newest_first = sorted(everything, key=lambda r: (-r["created_at"].timestamp(), r["id"]))
            return [
                str(r["id"])
                for r in newest_first
                if (org is None or r["recipient_org"] == org or org in r["concerned_orgs"]) and all(r[k] == v for k, v in where.items())
            ]

        cases: list[tuple[str, dict[str, str]]] = [
            (OPERATOR, {}),
            (JOBCENTER, {}),
            (AWO, {}),
            (CARITAS, {}),  # concerned by every row, addressed by none
            (OPERATOR, {"status": "delivered"}),
            (JOBCENTER, {"status": "created"}),
            (OPERATOR, {"status": "sending"}),
            (AWO, {"status": "permanent-failure"}),
            (OPERATOR, {"client_id": str(clients[1])}),
            (CARITAS, {"channel": "email"}),
            (OPERATOR, {"trigger_event_id": str(everything[0]["trigger_event_id"])}),
        ]
        for org, params in cases:
            got = await svc.http.get("/v1/notifications", params=params, headers=as_org(org))
            assert got.status_code == 200, got.text
            where: dict[str, Any] = {k: (uuid.UUID(v) if k in ("client_id", "trigger_event_id") else v) for k, v in params.items()}
            assert [n["id"] for n in got.json()["items"]] == expected(None if org == OPERATOR else org, **where), (org, params)
