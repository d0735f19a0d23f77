"""Deadlines: registering and resolving them, and the scheduler step that emits their notices."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import asyncpg

from contracts.events import DeadlineApproaching, DeadlineMissed, DeadlineRegistered, DeadlineResolved, EventData
from contracts.vocab import DeadlineKind
from lotse_kit import access, calendar

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain import deadlines
from ..domain.commands import RegisterDeadline, ResolveDeadline
from ..domain.errors import Conflict, Forbidden, Invalid, NotFound
from ..views import case_for, deadline_view, view_of
from .deps import Deps

log = logging.getLogger(__name__)


def lead_times(deps: Deps, kind: DeadlineKind) -> list[int]:
    """Default lead times (days before the due time) for a kind of deadline."""
    s = deps.settings
    if kind is DeadlineKind.APPOINTMENT:
        return list(s.appointment_lead_times_days)
    if kind is DeadlineKind.REFERRAL_ANSWER_DUE:
        return list(s.referral_answer_lead_times_days)
    return list(s.deadline_lead_times_days)


async def add_deadline(
    conn: asyncpg.Connection,
    deps: Deps,
    *,
    client_id: uuid.UUID,
    kind: DeadlineKind,
    due_at: datetime,
    last_day: date | None,
    responsible_org: str,
    acting_org: str,
    referral_id: uuid.UUID | None = None,
    lead_times_days: list[int] | None = None,
) -> uuid.UUID:
    """Registers a deadline and its event in the caller's transaction."""
    row, event = new_deadline(
        deps,
        client_id=client_id,
        kind=kind,
        due_at=due_at,
        last_day=last_day,
        responsible_org=responsible_org,
        referral_id=referral_id,
        lead_times_days=lead_times_days,
    )
    await repo.insert_deadline(conn, row)
    await deps.emit(conn, event, acting_org)
    log_registered(row)
    return event.deadline_id


def new_deadline(
    deps: Deps,
    *,
    client_id: uuid.UUID,
    kind: DeadlineKind,
    due_at: datetime,
    last_day: date | None,
    responsible_org: str,
    referral_id: uuid.UUID | None = None,
    lead_times_days: list[int] | None = None,
) -> tuple[dict[str, Any], DeadlineRegistered]:
    """A new deadline's row and its event, for a caller that writes them itself (`add_deadline`, or a referral
    that writes its answer deadline in the same statement as itself)."""
    now = deps.clock.now()
    leads = sorted(set(lead_times_days or lead_times(deps, kind)), reverse=True)
    deadline_id = uuid.uuid4()
    note = deadlines.legal_note(kind, last_day)
    row = {
        "deadline_id": deadline_id,
        "client_id": client_id,
        "kind": kind.value,
        "due_at": due_at,
        "last_day": last_day,
        "responsible_org": responsible_org,
        "referral_id": referral_id,
        "legal_note": note,
        "lead_times_days": leads,
        "registered_at": now,
        "next_check_at": deadlines.first_check(due_at, leads, now),
    }
    event = DeadlineRegistered(
        client_id=client_id,
        deadline_id=deadline_id,
        kind=kind,
        due_at=due_at,
        responsible_org=responsible_org,
        referral_id=referral_id,
        legal_note=note,
        lead_times_days=leads,
        registered_at=now,
    )
    return row, event


def log_registered(row: dict[str, Any]) -> None:
    log.info("deadline registered", extra={"client_id": str(row["client_id"]), "deadline_id": str(row["deadline_id"]), "kind": row["kind"]})


async def add_residence_deadline(
    conn: asyncpg.Connection,
    deps: Deps,
    auto: tuple[DeadlineKind, date] | None,
    *,
    client_id: uuid.UUID,
    responsible_org: str,
    acting_org: str,
) -> None:
    """The automatic deadline of a residence title (see `domain.deadlines.residence_deadline`), if there is one."""
    if auto is None:
        return
    kind, last = auto
    await add_deadline(
        conn,
        deps,
        client_id=client_id,
        kind=kind,
        due_at=calendar.end_of_day(last, deps.tz),
        last_day=last,
        responsible_org=responsible_org,
        acting_org=acting_org,
    )


def _event_fields(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "client_id": row["client_id"],
        "deadline_id": row["deadline_id"],
        "kind": DeadlineKind(row["kind"]),
        "due_at": row["due_at"],
        "responsible_org": row["responsible_org"],
        "referral_id": row["referral_id"],
        "legal_note": row["legal_note"],
    }


async def settle_deadline(
    conn: asyncpg.Connection, deps: Deps, row: asyncpg.Record, resolution: str | None, acting_org: str | None
) -> None:
    """Resolves an open (locked) deadline and writes its event in the caller's transaction."""
    now = deps.clock.now()
    await repo.resolve_deadline(conn, row["deadline_id"], now, resolution)
    await deps.emit(conn, DeadlineResolved(**_event_fields(row), resolved_at=now, resolution=resolution), acting_org)


async def resolve_referral_deadlines(
    conn: asyncpg.Connection, deps: Deps, ref: Mapping[str, Any], resolution: str, *, kinds: list[DeadlineKind] | None = None
) -> list[DeadlineResolved]:
    """`settle_deadline` for the open deadlines of a referral (of `kinds`, or all) in one round trip; returns their
    events, by due time, for the caller to emit in its transaction."""
    now = deps.clock.now()
    rows = await repo.resolve_open_deadlines(
        conn, ref["client_id"], ref["referral_id"], now, resolution, kinds=None if kinds is None else [k.value for k in kinds]
    )
    return [DeadlineResolved(**_event_fields(row), resolved_at=now, resolution=resolution) for row in rows]


# ---------------------------------------------------------------- commands
async def register_deadline(cmd: RegisterDeadline, deps: Deps) -> dict[str, Any]:
    now = deps.clock.now()
    today = calendar.local_date(now, deps.tz)
    async with deps.db.pool.acquire() as conn, conn.transaction():
        client = await case_for(conn, cmd.client_id, cmd.acting_org, for_update=True)
        responsible = client["responsible_org"]
        last_day: date | None
        if cmd.kind is DeadlineKind.CHANCEN_AUFENTHALT_END:
            assert cmd.valid_from is not None  # the command's validation requires it for this kind
            last_day, field = deadlines.chancen_aufenthalt_last_day(cmd.valid_from, field="valid_from"), "valid_from"
            due_at = calendar.end_of_day(last_day, deps.tz)
        elif cmd.kind is DeadlineKind.APPOINTMENT:
            assert cmd.due_at is not None
            last_day, field, due_at = None, "due_at", cmd.due_at
        else:
            assert cmd.due_date is not None
            last_day, field = cmd.due_date, "due_date"
            due_at = calendar.end_of_day(last_day, deps.tz)
        if (last_day and last_day < today) or due_at <= now:
            raise Invalid(field, "the deadline lies in the past")
        if cmd.referral_id is not None:
            ref = await repo.get_referral(conn, cmd.referral_id)
            if ref is None or ref["client_id"] != cmd.client_id:
                raise Invalid("referral_id", f"no referral {cmd.referral_id} for this client")
            if cmd.kind is DeadlineKind.REFERRAL_ANSWER_DUE:
                responsible = ref["to_org"]
        deadline_id = await add_deadline(
            conn,
            deps,
            client_id=cmd.client_id,
            kind=cmd.kind,
            due_at=due_at,
            last_day=last_day,
            responsible_org=responsible,
            acting_org=cmd.acting_org,
            referral_id=cmd.referral_id,
            lead_times_days=cmd.lead_times_days,
        )
        row = await repo.get_deadline(conn, deadline_id)
    return deadline_view(row)


async def resolve_deadline(cmd: ResolveDeadline, deps: Deps) -> dict[str, Any]:
    async with deps.db.pool.acquire() as conn, conn.transaction():
        d = await repo.get_deadline(conn, cmd.deadline_id, for_update=True)
        if d is None:
            raise NotFound(f"no deadline {cmd.deadline_id}")
        client = await repo.get_client(conn, d["client_id"])
        if cmd.acting_org not in (d["responsible_org"], client["responsible_org"]):
            if await view_of(conn, client, cmd.acting_org) is access.ClientView.NONE:
                raise NotFound(f"no deadline {cmd.deadline_id}")  # a client it does not see: its deadlines do not exist for it
            raise Forbidden(f"only {d['responsible_org']} or the responsible organisation may resolve this deadline")
        if d["status"] != "open":
            raise Conflict(f"deadline {cmd.deadline_id} is already {d['status']}")
        await settle_deadline(conn, deps, d, cmd.resolution, cmd.acting_org)
        row = await repo.get_deadline(conn, cmd.deadline_id)
    log.info("deadline resolved", extra={"client_id": str(row["client_id"]), "deadline_id": str(cmd.deadline_id)})
    return deadline_view(row)


# ---------------------------------------------------------------- the scheduler step
async def emit_due_deadline_notices(deps: Deps) -> int:
    """One scheduler pass over a batch: emits approaching/missed notices that are due. Returns the deadlines looked at.

    Safe with several replicas: rows are claimed with FOR UPDATE SKIP LOCKED, and each notice is a row
    (primary key deadline_id + notice) written in the same transaction as its outbox row, so a notice is
    emitted exactly once, across restarts too.
    """
    now = deps.clock.now()
    emitted: Counter[str] = Counter()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        rows = await repo.claim_due_deadlines(conn, now, deps.settings.deadline_batch_size)
        for row in rows:
            done = await repo.recorded_notices(conn, row["deadline_id"])
            plan = deadlines.plan_notices(row["due_at"], list(row["lead_times_days"]), now, done)
            missed_at = None
            for n in plan.notices:
                event_id = uuid.uuid4() if n.emit else None
                if not await repo.record_notice(conn, row["deadline_id"], n.key, n.emit, event_id, now) or not n.emit:
                    continue
                data: EventData
                if n.key == deadlines.MISSED:
                    missed_at = now
                    data = DeadlineMissed(**_event_fields(row), missed_at=now)
                else:
                    data = DeadlineApproaching(
                        **_event_fields(row), lead_time_days=n.lead_time_days, days_left=deadlines.days_left(row["due_at"], now)
                    )
                await deps.emit(conn, data, row["responsible_org"], event_id=event_id)
                emitted["missed" if n.key == deadlines.MISSED else "approaching"] += 1
                log.info(
                    "deadline notice emitted",
                    extra={"client_id": str(row["client_id"]), "deadline_id": str(row["deadline_id"]), "notice": n.key},
                )
            await repo.set_next_check(conn, row["deadline_id"], plan.next_check_at, missed_at)
    for notice, count in emitted.items():  # counted once the transaction has committed
        metrics.deadline_notices.labels(notice).inc(count)
    return len(rows)
