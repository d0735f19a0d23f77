"""PostgreSQL persistence for intake. Every function runs on the caller's connection (and transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import asyncpg

Row = asyncpg.Record


# ---------------------------------------------------------------- clients
async def insert_client(conn: asyncpg.Connection, c: dict[str, Any], personal: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO clients (client_id, registering_org, responsible_org, preferred_language, languages, needs,
                                residence_title, residence_valid_until, legal_regime, registered_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)""",
        c["client_id"],
        c["registering_org"],
        c["responsible_org"],
        c["preferred_language"],
        c["languages"],
        c["needs"],
        c["residence_title"],
        c["residence_valid_until"],
        c["legal_regime"],
        c["registered_at"],
    )
    await conn.execute(
        """INSERT INTO client_personal_data (client_id, given_name, family_name, date_of_birth, email, phone,
                                             education_qualifications, health)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        c["client_id"],
        personal["given_name"],
        personal["family_name"],
        personal["date_of_birth"],
        personal["email"],
        personal["phone"],
        personal["education_qualifications"],
        personal["health"],
    )


async def get_client(conn: asyncpg.Connection, client_id: uuid.UUID, *, for_update: bool = False) -> Row | None:
    sql = "SELECT * FROM clients WHERE client_id = $1" + (" FOR UPDATE" if for_update else "")
    return await conn.fetchrow(sql, client_id)


async def get_personal_data(conn: asyncpg.Connection, client_id: uuid.UUID) -> Row | None:
    return await conn.fetchrow("SELECT * FROM client_personal_data WHERE client_id = $1", client_id)


_CLIENT_COLUMNS = {
    "preferred_language",
    "languages",
    "needs",
    "residence_title",
    "residence_valid_until",
    "legal_regime",
    "responsible_org",
}
_PERSONAL_COLUMNS = {"email", "phone"}


async def update_client(conn: asyncpg.Connection, client_id: uuid.UUID, changes: dict[str, Any], updated_at: datetime) -> None:
    case = {k: v for k, v in changes.items() if k in _CLIENT_COLUMNS}
    personal = {k: v for k, v in changes.items() if k in _PERSONAL_COLUMNS}
    unknown = set(changes) - _CLIENT_COLUMNS - _PERSONAL_COLUMNS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(case, start=3))
    await conn.execute(
        f"UPDATE clients SET updated_at = $2{', ' + sets if sets else ''} WHERE client_id = $1", client_id, updated_at, *case.values()
    )
    if personal:
        psets = ", ".join(f"{k} = ${i}" for i, k in enumerate(personal, start=2))
        await conn.execute(f"UPDATE client_personal_data SET {psets} WHERE client_id = $1", client_id, *personal.values())


# ---------------------------------------------------------------- referrals
async def insert_referral(conn: asyncpg.Connection, r: dict[str, Any], notes: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO referrals (referral_id, client_id, from_org, to_org, service, need, requested_categories, status,
                                  consent_id, disclosure_request_id, answer_due, answer_deadline_id, sent_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'sent', $8, $9, $10, $11, $12, $12)""",
        r["referral_id"],
        r["client_id"],
        r["from_org"],
        r["to_org"],
        r["service"],
        r["need"],
        r["requested_categories"],
        r["consent_id"],
        r["disclosure_request_id"],
        r["answer_due"],
        r["answer_deadline_id"],
        r["sent_at"],
    )
    await conn.execute(
        "INSERT INTO referral_notes (referral_id, reason, free_text) VALUES ($1, $2, $3)",
        r["referral_id"],
        notes.get("reason"),
        notes.get("free_text"),
    )


async def get_referral(conn: asyncpg.Connection, referral_id: uuid.UUID, *, for_update: bool = False) -> Row | None:
    sql = "SELECT * FROM referrals WHERE referral_id = $1" + (" FOR UPDATE" if for_update else "")
    return await conn.fetchrow(sql, referral_id)


async def get_referral_notes(conn: asyncpg.Connection, referral_id: uuid.UUID) -> Row | None:
    return await conn.fetchrow("SELECT * FROM referral_notes WHERE referral_id = $1", referral_id)


async def set_answer_deadline(conn: asyncpg.Connection, referral_id: uuid.UUID, deadline_id: uuid.UUID) -> None:
    await conn.execute("UPDATE referrals SET answer_deadline_id = $2 WHERE referral_id = $1", referral_id, deadline_id)


_REFERRAL_COLUMNS = {
    "status",
    "accepted_at",
    "appointment_at",
    "declined_at",
    "decline_reason",
    "completed_at",
    "revoked_at",
    "blocked_at",
    "blocked_reason",
    "disclosed_at",
    "consent_id",
    "from_org",
}
_NOTE_COLUMNS = {"decline_text", "outcome", "revoke_reason"}


async def update_referral(conn: asyncpg.Connection, referral_id: uuid.UUID, changes: dict[str, Any], updated_at: datetime) -> None:
    cols = {k: v for k, v in changes.items() if k in _REFERRAL_COLUMNS}
    notes = {k: v for k, v in changes.items() if k in _NOTE_COLUMNS}
    if set(changes) - _REFERRAL_COLUMNS - _NOTE_COLUMNS:
        raise ValueError(f"not updatable: {sorted(set(changes) - _REFERRAL_COLUMNS - _NOTE_COLUMNS)}")
    sets = "".join(f", {k} = ${i}" for i, k in enumerate(cols, start=3))
    await conn.execute(f"UPDATE referrals SET updated_at = $2{sets} WHERE referral_id = $1", referral_id, updated_at, *cols.values())
    if notes:
        nsets = ", ".join(f"{k} = ${i}" for i, k in enumerate(notes, start=2))
        await conn.execute(f"UPDATE referral_notes SET {nsets} WHERE referral_id = $1", referral_id, *notes.values())


async def open_referrals_sent_by(conn: asyncpg.Connection, client_id: uuid.UUID, org: str) -> list[Row]:
    return await conn.fetch(
        "SELECT * FROM referrals WHERE client_id = $1 AND from_org = $2 AND status IN ('sent', 'accepted') ORDER BY sent_at FOR UPDATE",
        client_id,
        org,
    )


async def move_open_referrals(conn: asyncpg.Connection, client_id: uuid.UUID, from_org: str, to_org: str, at: datetime) -> list[uuid.UUID]:
    rows = await conn.fetch(
        """UPDATE referrals SET from_org = $3, updated_at = $4
            WHERE client_id = $1 AND from_org = $2 AND status IN ('sent', 'accepted') RETURNING referral_id""",
        client_id,
        from_org,
        to_org,
        at,
    )
    return [r["referral_id"] for r in rows]


async def list_referrals(
    conn: asyncpg.Connection, *, org: str, view: str, status: str | None, today: date, limit: int, client_id: uuid.UUID | None = None
) -> list[Row]:
    where, args = [], []

    def arg(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    if view == "sent":
        where.append(f"from_org = {arg(org)}")
    elif view == "received":
        where.append(f"to_org = {arg(org)}")
    elif view == "overdue":
        o = arg(org)
        where.append(f"(from_org = {o} OR to_org = {o}) AND status = 'sent' AND answer_due < {arg(today)}")
    else:  # all
        o = arg(org)
        where.append(f"(from_org = {o} OR to_org = {o})")
    if status:
        where.append(f"status = {arg(status)}")
    if client_id:
        where.append(f"client_id = {arg(client_id)}")
    sql = f"SELECT * FROM referrals WHERE {' AND '.join(where)} ORDER BY answer_due NULLS LAST, sent_at LIMIT {arg(limit)}"
    return await conn.fetch(sql, *args)


async def referred_to(conn: asyncpg.Connection, client_id: uuid.UUID, org: str, statuses: Iterable[str]) -> bool:
    """Whether `org` received a referral of the client that is in one of `statuses`."""
    return bool(
        await conn.fetchval(
            "SELECT true FROM referrals WHERE client_id = $1 AND to_org = $2 AND status = ANY($3::text[]) LIMIT 1",
            client_id,
            org,
            list(statuses),
        )
    )


async def referrals_of_client(conn: asyncpg.Connection, client_id: uuid.UUID) -> list[Row]:
    return await conn.fetch("SELECT * FROM referrals WHERE client_id = $1 ORDER BY sent_at", client_id)


# ---------------------------------------------------------------- deadlines
async def insert_deadline(conn: asyncpg.Connection, d: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO deadlines (deadline_id, client_id, kind, due_at, last_day, responsible_org, referral_id, legal_note,
                                  lead_times_days, status, registered_at, next_check_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $11)""",
        d["deadline_id"],
        d["client_id"],
        d["kind"],
        d["due_at"],
        d["last_day"],
        d["responsible_org"],
        d["referral_id"],
        d["legal_note"],
        d["lead_times_days"],
        d["registered_at"],
        d["next_check_at"],
    )


async def get_deadline(conn: asyncpg.Connection, deadline_id: uuid.UUID, *, for_update: bool = False) -> Row | None:
    sql = "SELECT * FROM deadlines WHERE deadline_id = $1" + (" FOR UPDATE" if for_update else "")
    return await conn.fetchrow(sql, deadline_id)


async def open_deadlines(
    conn: asyncpg.Connection, client_id: uuid.UUID, *, kinds: Iterable[str] | None = None, referral_id: uuid.UUID | None = None
) -> list[Row]:
    sql = "SELECT * FROM deadlines WHERE client_id = $1 AND status = 'open'"
    args: list[Any] = [client_id]
    if kinds is not None:
        args.append(list(kinds))
        sql += f" AND kind = ANY(${len(args)}::text[])"
    if referral_id is not None:
        args.append(referral_id)
        sql += f" AND referral_id = ${len(args)}"
    return await conn.fetch(sql + " ORDER BY due_at FOR UPDATE", *args)


async def deadlines_of_client(conn: asyncpg.Connection, client_id: uuid.UUID) -> list[Row]:
    return await conn.fetch("SELECT * FROM deadlines WHERE client_id = $1 ORDER BY due_at", client_id)


async def resolve_deadline(conn: asyncpg.Connection, deadline_id: uuid.UUID, at: datetime, resolution: str | None) -> None:
    await conn.execute(
        "UPDATE deadlines SET status = 'resolved', resolved_at = $2, resolution = $3, next_check_at = NULL WHERE deadline_id = $1",
        deadline_id,
        at,
        resolution,
    )


async def move_open_deadlines(conn: asyncpg.Connection, client_id: uuid.UUID, from_org: str, to_org: str) -> list[uuid.UUID]:
    rows = await conn.fetch(
        """UPDATE deadlines SET responsible_org = $3
            WHERE client_id = $1 AND responsible_org = $2 AND status = 'open' RETURNING deadline_id""",
        client_id,
        from_org,
        to_org,
    )
    return [r["deadline_id"] for r in rows]


async def claim_due_deadlines(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Row]:
    """Locks open deadlines due for a check; rows another replica holds are skipped, not waited for."""
    return await conn.fetch(
        """SELECT * FROM deadlines
            WHERE status = 'open' AND next_check_at IS NOT NULL AND next_check_at <= $1
            ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )


async def recorded_notices(conn: asyncpg.Connection, deadline_id: uuid.UUID) -> set[str]:
    return {r["notice"] for r in await conn.fetch("SELECT notice FROM deadline_notices WHERE deadline_id = $1", deadline_id)}


async def record_notice(
    conn: asyncpg.Connection, deadline_id: uuid.UUID, notice: str, emitted: bool, event_id: uuid.UUID | None, at: datetime
) -> bool:
    """True if this notice is new; False if it was already recorded (then nothing must be emitted)."""
    return bool(
        await conn.fetchval(
            """INSERT INTO deadline_notices (deadline_id, notice, emitted, event_id, recorded_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
            deadline_id,
            notice,
            emitted,
            event_id,
            at,
        )
    )


async def set_next_check(
    conn: asyncpg.Connection, deadline_id: uuid.UUID, next_check_at: datetime | None, missed_at: datetime | None = None
) -> None:
    await conn.execute(
        "UPDATE deadlines SET next_check_at = $2, missed_at = COALESCE(missed_at, $3) WHERE deadline_id = $1",
        deadline_id,
        next_check_at,
        missed_at,
    )
