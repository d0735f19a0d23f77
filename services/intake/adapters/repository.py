"""PostgreSQL persistence for intake. Every function runs on the caller's connection (and transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

Row = asyncpg.Record


# ---------------------------------------------------------------- clients
async def insert_client(conn: asyncpg.Connection, c: dict[str, Any]) -> None:
    """The case row (pseudonymous); the personal data goes through `vault.Vault.add_client`."""
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


async def get_client(conn: asyncpg.Connection, client_id: uuid.UUID, *, for_update: bool = False) -> Row | None:
    sql = "SELECT * FROM clients WHERE client_id = $1" + (" FOR UPDATE" if for_update else "")
    return await conn.fetchrow(sql, client_id)


async def clients(conn: asyncpg.Connection, client_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Row]:
    """`get_client` for many clients in one round trip (unknown ones are absent)."""
    rows = await conn.fetch("SELECT * FROM clients WHERE client_id = ANY($1::uuid[])", list(set(client_ids)))
    return {r["client_id"]: r for r in rows}


_CLIENT_COLUMNS = {
    "preferred_language",
    "languages",
    "needs",
    "residence_title",
    "residence_valid_until",
    "legal_regime",
    "responsible_org",
    "do_not_contact",
}


async def update_client(conn: asyncpg.Connection, client_id: uuid.UUID, changes: dict[str, Any], updated_at: datetime) -> None:
    """Changes case columns; personal-data fields are the vault's (`Vault.update_personal`)."""
    unknown = set(changes) - _CLIENT_COLUMNS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=3))
    await conn.execute(
        f"UPDATE clients SET updated_at = $2{', ' + sets if sets else ''} WHERE client_id = $1", client_id, updated_at, *changes.values()
    )


async def last_activity(conn: asyncpg.Connection, client_id: uuid.UUID) -> datetime:
    """The case's last activity: the latest change of the case, of one of its referrals or deadlines."""
    return await conn.fetchval(  # type: ignore[no-any-return]
        """SELECT GREATEST(c.registered_at, c.updated_at,
                           (SELECT max(updated_at) FROM referrals WHERE client_id = $1),
                           (SELECT max(GREATEST(registered_at, resolved_at)) FROM deadlines WHERE client_id = $1))
             FROM clients c WHERE c.client_id = $1""",
        client_id,
    )


async def erase_case(conn: asyncpg.Connection, client_id: uuid.UUID, by_org: str, at: datetime) -> None:
    """Leaves the pseudonymous skeleton marked erased: ids, organisations, times and states stay; the
    categorised fields (contact: languages; residence; needs) and caseworkers' free texts go."""
    await conn.execute(
        """UPDATE clients SET erased_at = $2, erased_by_org = $3, updated_at = $2,
                              preferred_language = NULL, languages = '{}', needs = '{}',
                              residence_title = NULL, residence_valid_until = NULL, legal_regime = NULL, do_not_contact = false
            WHERE client_id = $1""",
        client_id,
        at,
        by_org,
    )
    await conn.execute("UPDATE deadlines SET resolution = NULL WHERE client_id = $1", client_id)


# ---------------------------------------------------------------- data keys (adapters/vault.py)
async def insert_client_key(
    conn: asyncpg.Connection, client_id: uuid.UUID, kek_id: str, nonce: bytes, wrapped: bytes, at: datetime
) -> None:
    """The client's wrapped data key; a key already there stays (a concurrent writer made it first)."""
    await conn.execute(
        """INSERT INTO client_keys (client_id, kek_id, nonce, wrapped_key, created_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (client_id) DO NOTHING""",
        client_id,
        kek_id,
        nonce,
        wrapped,
        at,
    )


async def get_client_key(conn: asyncpg.Connection, client_id: uuid.UUID) -> Row | None:
    return await conn.fetchrow("SELECT client_id, kek_id, nonce, wrapped_key FROM client_keys WHERE client_id = $1", client_id)


async def delete_client_key(conn: asyncpg.Connection, client_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM client_keys WHERE client_id = $1", client_id)


async def client_keys_to_rewrap(conn: asyncpg.Connection, current_kek_id: str, known_kek_ids: list[str], limit: int) -> list[Row]:
    """Locked data keys wrapped under another known KEK than the current one; SKIP LOCKED lets replicas
    share the work. Keys under KEKs that are not configured are left alone (and reported)."""
    return await conn.fetch(
        """SELECT client_id, kek_id, nonce, wrapped_key FROM client_keys
            WHERE kek_id <> $1 AND kek_id = ANY($2::text[])
            ORDER BY client_id LIMIT $3 FOR UPDATE SKIP LOCKED""",
        current_kek_id,
        known_kek_ids,
        limit,
    )


async def store_rewrapped_key(
    conn: asyncpg.Connection, client_id: uuid.UUID, kek_id: str, nonce: bytes, wrapped: bytes, at: datetime
) -> None:
    await conn.execute(
        "UPDATE client_keys SET kek_id = $2, nonce = $3, wrapped_key = $4, rewrapped_at = $5 WHERE client_id = $1",
        client_id,
        kek_id,
        nonce,
        wrapped,
        at,
    )


async def client_keys_by_kek(pool: asyncpg.Pool | asyncpg.Connection) -> dict[str, int]:
    """How many data keys each KEK wraps."""
    return {r["kek_id"]: r["n"] for r in await pool.fetch("SELECT kek_id, count(*) AS n FROM client_keys GROUP BY kek_id")}


# ---------------------------------------------------------------- personal data and referral notes, as ciphertexts
# Each personal-data column `<field>` is stored as `<field>_enc` (adapters/vault.py encrypts and decrypts).
PERSONAL_COLUMNS = ("given_name", "family_name", "date_of_birth", "email", "phone", "education_qualifications", "health")
NOTE_COLUMNS = ("reason", "free_text", "decline_text", "outcome", "revoke_reason")


def _enc(columns: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    names = list(columns)
    unknown = set(names) - set(allowed)
    if unknown:
        raise ValueError(f"not an encrypted column: {sorted(unknown)}")
    return [f"{n}_enc" for n in names]


async def insert_personal_data(conn: asyncpg.Connection, client_id: uuid.UUID, sealed: dict[str, bytes | None]) -> None:
    cols = _enc(sealed, PERSONAL_COLUMNS)
    marks = ", ".join(f"${i}" for i in range(2, len(cols) + 2))
    await conn.execute(f"INSERT INTO client_personal_data (client_id, {', '.join(cols)}) VALUES ($1, {marks})", client_id, *sealed.values())


async def get_sealed_personal_data(conn: asyncpg.Connection, client_id: uuid.UUID) -> Row | None:
    cols = ", ".join(_enc(PERSONAL_COLUMNS, PERSONAL_COLUMNS))
    return await conn.fetchrow(f"SELECT {cols} FROM client_personal_data WHERE client_id = $1", client_id)


async def update_sealed_personal_data(conn: asyncpg.Connection, client_id: uuid.UUID, sealed: dict[str, bytes | None]) -> None:
    if not sealed:
        return
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(_enc(sealed, PERSONAL_COLUMNS), start=2))
    await conn.execute(f"UPDATE client_personal_data SET {sets} WHERE client_id = $1", client_id, *sealed.values())


async def delete_personal_data(conn: asyncpg.Connection, client_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM client_personal_data WHERE client_id = $1", client_id)


async def get_sealed_referral_notes(conn: asyncpg.Connection, referral_id: uuid.UUID) -> Row | None:
    cols = ", ".join(_enc(NOTE_COLUMNS, NOTE_COLUMNS))
    return await conn.fetchrow(f"SELECT {cols} FROM referral_notes WHERE referral_id = $1", referral_id)


async def update_sealed_referral_notes(conn: asyncpg.Connection, referral_id: uuid.UUID, sealed: dict[str, bytes | None]) -> None:
    if not sealed:
        return
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(_enc(sealed, NOTE_COLUMNS), start=2))
    await conn.execute(f"UPDATE referral_notes SET {sets} WHERE referral_id = $1", referral_id, *sealed.values())


# One round trip where a use case needs the case row, its sealed personal data and its wrapped data key together
# (the vault opens them: `Vault.data_key_of`, `Vault.personal_of`). `has_personal` tells a missing personal-data
# row (erased) from one whose values are all NULL.
_SEALED_PERSONAL = ", ".join(f"p.{c}" for c in _enc(PERSONAL_COLUMNS, PERSONAL_COLUMNS))
_WITH_SEALED = f"""c.*, {_SEALED_PERSONAL}, p.client_id IS NOT NULL AS has_personal, k.kek_id, k.nonce, k.wrapped_key
    FROM clients c LEFT JOIN client_personal_data p ON p.client_id = c.client_id LEFT JOIN client_keys k ON k.client_id = c.client_id"""


async def get_client_sealed(conn: asyncpg.Connection, client_id: uuid.UUID, *, for_update: bool = False) -> Row | None:
    """The case row with its sealed personal data and wrapped data key; FOR UPDATE locks the case row only."""
    sql = f"SELECT {_WITH_SEALED} WHERE c.client_id = $1" + (" FOR UPDATE OF c" if for_update else "")
    return await conn.fetchrow(sql, client_id)


async def clients_sealed(conn: asyncpg.Connection, client_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Row]:
    """`get_client_sealed` for many clients in one round trip (unknown ones are absent)."""
    rows = await conn.fetch(f"SELECT {_WITH_SEALED} WHERE c.client_id = ANY($1::uuid[])", list(set(client_ids)))
    return {r["client_id"]: r for r in rows}


async def referrals_with_sealed_notes(conn: asyncpg.Connection, referral_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Row]:
    """Referrals (their client) with their sealed notes (NULL columns and has_notes false when there are none)."""
    cols = ", ".join(f"n.{c}" for c in _enc(NOTE_COLUMNS, NOTE_COLUMNS))
    rows = await conn.fetch(
        f"""SELECT r.referral_id, r.client_id, {cols}, n.referral_id IS NOT NULL AS has_notes
              FROM referrals r LEFT JOIN referral_notes n ON n.referral_id = r.referral_id
             WHERE r.referral_id = ANY($1::uuid[])""",
        list(set(referral_ids)),
    )
    return {r["referral_id"]: r for r in rows}


async def delete_referral_notes_of_client(conn: asyncpg.Connection, client_id: uuid.UUID) -> None:
    await conn.execute(
        "DELETE FROM referral_notes WHERE referral_id IN (SELECT referral_id FROM referrals WHERE client_id = $1)", client_id
    )


# ---------------------------------------------------------------- clear text left by migration 001 (handlers/keys.py)
async def connect_as_owner(admin_dsn: str, schema: str) -> asyncpg.Connection:
    """A connection with the provisioning DSN (the tables' owner): dropping columns needs it."""
    return await asyncpg.connect(admin_dsn, server_settings={"search_path": schema, "application_name": "lotse-intake-encrypt"})


async def lock_for_encryption(conn: asyncpg.Connection, schema: str) -> None:
    """Replicas starting together encrypt one after the other; nobody writes the two tables meanwhile."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"lotse-intake-encrypt:{schema}")
    await conn.execute("LOCK TABLE client_personal_data, referral_notes IN ACCESS EXCLUSIVE MODE")


async def clear_text_columns(conn: asyncpg.Connection) -> dict[str, set[str]]:
    """The clear personal-data columns still present, by table (empty once encrypt_clear_text has run)."""
    rows = await conn.fetch(
        """SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = current_schema()
              AND ((table_name = 'client_personal_data' AND column_name = ANY($1::text[]))
                OR (table_name = 'referral_notes' AND column_name = ANY($2::text[])))""",
        list(PERSONAL_COLUMNS),
        list(NOTE_COLUMNS),
    )
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["table_name"], set()).add(r["column_name"])
    return out


async def clear_personal_rows(conn: asyncpg.Connection) -> list[Row]:
    cols = ", ".join(PERSONAL_COLUMNS)
    return await conn.fetch(f"SELECT client_id, {cols} FROM client_personal_data ORDER BY client_id")


async def clear_note_rows(conn: asyncpg.Connection) -> list[Row]:
    cols = ", ".join(f"n.{c}" for c in NOTE_COLUMNS)
    return await conn.fetch(
        f"SELECT n.referral_id, r.client_id, {cols} FROM referral_notes n JOIN referrals r USING (referral_id) ORDER BY n.referral_id"
    )


async def drop_clear_text_columns(conn: asyncpg.Connection) -> None:
    await conn.execute(f"ALTER TABLE client_personal_data {', '.join(f'DROP COLUMN IF EXISTS {c}' for c in PERSONAL_COLUMNS)}")
    await conn.execute(f"ALTER TABLE referral_notes {', '.join(f'DROP COLUMN IF EXISTS {c}' for c in NOTE_COLUMNS)}")


# ---------------------------------------------------------------- referrals
async def insert_sent_referral(
    conn: asyncpg.Connection, r: dict[str, Any], sealed_notes: dict[str, bytes | None], d: dict[str, Any]
) -> Row:
    """A new referral, its sealed notes and its answer deadline in one statement (one round trip); returns the
    referral's row as written. The notes' foreign key is checked at the end of the statement, when the referral is there."""
    note_cols = _enc(sealed_notes, NOTE_COLUMNS)
    note_marks = "".join(f", ${i}" for i in range(21, 21 + len(note_cols)))
    if (d["client_id"], d["referral_id"], d["deadline_id"]) != (r["client_id"], r["referral_id"], r["answer_deadline_id"]):
        raise ValueError("the answer deadline must be the referral's own")
    return await conn.fetchrow(  # type: ignore[no-any-return]
        f"""WITH ref AS (
                INSERT INTO referrals (referral_id, client_id, from_org, to_org, service, need, requested_categories, status,
                                       consent_id, disclosure_request_id, answer_due, answer_deadline_id, sent_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, 'sent', $8, $9, $10, $11, $12, $12)
                RETURNING *
            ), dl AS (
                INSERT INTO deadlines (deadline_id, client_id, kind, due_at, last_day, responsible_org, referral_id, legal_note,
                                       lead_times_days, status, registered_at, next_check_at)
                VALUES ($11, $2, $13, $14, $15, $16, $1, $17, $18, 'open', $19, $20)
            ), notes AS (
                INSERT INTO referral_notes (referral_id{"".join(", " + c for c in note_cols)}) VALUES ($1{note_marks})
            )
            SELECT * FROM ref""",
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
        d["deadline_id"],
        r["sent_at"],
        d["kind"],
        d["due_at"],
        d["last_day"],
        d["responsible_org"],
        d["legal_note"],
        d["lead_times_days"],
        d["registered_at"],
        d["next_check_at"],
        *sealed_notes.values(),
    )


async def get_referral(conn: asyncpg.Connection, referral_id: uuid.UUID, *, for_update: bool = False) -> Row | None:
    sql = "SELECT * FROM referrals WHERE referral_id = $1" + (" FOR UPDATE" if for_update else "")
    return await conn.fetchrow(sql, referral_id)


async def get_referral_to_answer(conn: asyncpg.Connection, referral_id: uuid.UUID) -> Row | None:
    """The referral, locked, with what an answer needs of its client (`client_found`, `client_erased_at`,
    `client_responsible_org`) in one round trip. Only the referral is locked, as before; the client row is not.

    `client_current` is false when the referral changed while this statement waited for its lock (a case hand-over
    moves the client and its referrals in one transaction): the row is then the new one, but the client's columns
    are from before the wait, so the caller reads the client again (`get_client`)."""
    return await conn.fetchrow(  # type: ignore[no-any-return]
        """SELECT r.*, c.client_id IS NOT NULL AS client_found, c.erased_at AS client_erased_at,
                  c.responsible_org AS client_responsible_org,
                  r.xmin = (SELECT s.xmin FROM referrals s WHERE s.referral_id = $1) AS client_current
             FROM referrals r LEFT JOIN clients c ON c.client_id = r.client_id
            WHERE r.referral_id = $1 FOR UPDATE OF r""",
        referral_id,
    )


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


async def update_referral(
    conn: asyncpg.Connection, referral_id: uuid.UUID, changes: dict[str, Any], updated_at: datetime, *, to_org: str | None = None
) -> Row | None:
    """Changes referral columns and returns the changed row (None: no such referral, or not one to `to_org` if given).
    The notes (decline text, outcome, revoke reason) are the vault's."""
    if set(changes) - _REFERRAL_COLUMNS:
        raise ValueError(f"not updatable: {sorted(set(changes) - _REFERRAL_COLUMNS)}")
    sets = "".join(f", {k} = ${i}" for i, k in enumerate(changes, start=3))
    args: list[Any] = [referral_id, updated_at, *changes.values()]
    where = "referral_id = $1"
    if to_org is not None:
        args.append(to_org)
        where += f" AND to_org = ${len(args)}"
    return await conn.fetchrow(f"UPDATE referrals SET updated_at = $2{sets} WHERE {where} RETURNING *", *args)


async def lock_referrals(conn: asyncpg.Connection, referral_ids: Sequence[uuid.UUID]) -> None:
    """Locks these referrals (those that exist) in referral_id order: the one order every transaction that locks
    several referrals uses, so that two of them wait for each other instead of deadlocking."""
    await conn.execute("SELECT FROM referrals WHERE referral_id = ANY($1::uuid[]) ORDER BY referral_id FOR UPDATE", list(referral_ids))


async def move_open_referrals(conn: asyncpg.Connection, client_id: uuid.UUID, from_org: str, to_org: str, at: datetime) -> list[uuid.UUID]:
    # Locked in referral_id order first (see lock_referrals), then moved.
    rows = await conn.fetch(
        """WITH locked AS (
               SELECT referral_id FROM referrals
                WHERE client_id = $1 AND from_org = $2 AND status IN ('sent', 'accepted')
                ORDER BY referral_id FOR UPDATE)
           UPDATE referrals r SET from_org = $3, updated_at = $4
             FROM locked WHERE r.referral_id = locked.referral_id RETURNING r.referral_id""",
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


async def resolve_open_deadlines(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    referral_id: uuid.UUID,
    at: datetime,
    resolution: str | None,
    *,
    kinds: Iterable[str] | None = None,
) -> list[Row]:
    """`open_deadlines` of a referral and `resolve_deadline` of those of `kinds` (all if None) in one round trip;
    returns the resolved rows by due time. Every open deadline of the referral is locked in due-time order, as
    `open_deadlines` does, also those left open."""
    args: list[Any] = [client_id, referral_id, at, resolution]
    only = ""
    if kinds is not None:
        args.append(list(kinds))
        only = " AND o.kind = ANY($5::text[])"
    return await conn.fetch(
        f"""WITH locked AS (
                SELECT deadline_id, kind FROM deadlines
                 WHERE client_id = $1 AND status = 'open' AND referral_id = $2 ORDER BY due_at FOR UPDATE
            ), done AS (
                UPDATE deadlines d SET status = 'resolved', resolved_at = $3, resolution = $4, next_check_at = NULL
                  FROM locked o WHERE d.deadline_id = o.deadline_id{only}
                RETURNING d.*
            )
            SELECT * FROM done ORDER BY due_at""",
        *args,
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
