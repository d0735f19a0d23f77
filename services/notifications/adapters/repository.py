"""All SQL of the notifications service: notifications, attempts, webhook endpoints, remembered referrals, erasures.

Every function takes the connection (or pool) it runs on, so callers decide the transaction.
Times that rules depend on (due, lease, expiry) come from the service's clock (`now`), not from
the database's `now()`, so a test clock moves them; bookkeeping columns keep their defaults.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..domain.model import Channel, Decision, Outcome, Status
from .keys import SealedValue


def wake_channel(schema: str) -> str:
    return f"lotse_notifications_{schema}"


@dataclass(frozen=True)
class NewNotification:
    trigger_event_id: uuid.UUID
    trigger_type: str
    client_id: str | None
    recipient_kind: str
    recipient_org: str | None
    recipient_key: str
    channel: Channel
    template: str | None
    language: str | None
    payload: dict[str, Any]
    concerned_orgs: list[str]
    endpoint_id: uuid.UUID | None = None
    status: Status = Status.CREATED
    reason: str | None = None


async def insert_notifications(conn: asyncpg.Connection, rows: Sequence[tuple[NewNotification, datetime]]) -> list[uuid.UUID | None]:
    """Inserts the rows of one trigger event (each with the `now` it was decided at), in the order given, in one
    statement: each unless the trigger already notified its recipient on its channel (also earlier in this very list:
    the first one wins, as one insert after the other would). Returns, per row, its new id or None when it was skipped.
    A row recorded final for an erased client keeps no payload (see `forget_client`)."""
    if not rows:
        return []
    first = rows[0][0]
    trigger = (first.trigger_event_id, first.trigger_type, first.client_id, first.concerned_orgs)
    if any((n.trigger_event_id, n.trigger_type, n.client_id, n.concerned_orgs) != trigger for n, _ in rows):
        raise ValueError("insert_notifications takes the rows of one trigger event")
    ids = [uuid.uuid4() for _ in rows]
    dumped: dict[int, str] = {}  # the rows of one trigger share their payload: encoded once
    payloads = []
    for n, _ in rows:
        text = dumped.get(id(n.payload))
        if text is None:
            text = dumped[id(n.payload)] = json.dumps(n.payload, default=str)
        payloads.append(text)
    inserted = {
        r["id"]
        for r in await conn.fetch(
            """INSERT INTO notifications (id, trigger_event_id, trigger_type, client_id, recipient_kind, recipient_org, recipient_key,
                                          endpoint_id, channel, template, language, payload, concerned_orgs, status, reason,
                                          next_attempt_at, completed_at)
               SELECT r.id, $1::uuid, $2::text, $3::uuid, r.recipient_kind, r.recipient_org, r.recipient_key,
                      r.endpoint_id, r.channel, r.template, r.language,
                      CASE WHEN r.final AND EXISTS (SELECT 1 FROM erased_clients e WHERE e.client_id = $3::uuid)
                           THEN '{}'::jsonb ELSE r.payload::jsonb END,
                      $4::text[], r.status, r.reason,
                      CASE WHEN r.final THEN NULL ELSE r.now END, CASE WHEN r.final THEN r.now END
                 FROM unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[], $12::text[],
                             $13::text[], $14::text[], $15::text[], $16::bool[], $17::timestamptz[])
                      WITH ORDINALITY AS r(id, recipient_kind, recipient_org, recipient_key, endpoint_id, channel, template, language,
                                           payload, status, reason, final, now, ord)
                ORDER BY r.ord
               ON CONFLICT (trigger_event_id, recipient_key, channel) DO NOTHING
               RETURNING id""",
            first.trigger_event_id,
            first.trigger_type,
            uuid.UUID(first.client_id) if first.client_id else None,
            first.concerned_orgs,
            ids,
            [n.recipient_kind for n, _ in rows],
            [n.recipient_org for n, _ in rows],
            [n.recipient_key for n, _ in rows],
            [n.endpoint_id for n, _ in rows],
            [n.channel.value for n, _ in rows],
            [n.template for n, _ in rows],
            [n.language for n, _ in rows],
            payloads,
            [n.status.value for n, _ in rows],
            [n.reason for n, _ in rows],
            [n.status.final for n, _ in rows],
            [now for _, now in rows],
        )
    }
    return [i if i in inserted else None for i in ids]


async def wake_workers(conn: asyncpg.Connection, schema: str) -> None:
    """Delivered at commit: the delivery workers look for due rows at once instead of at their next poll.
    `schema` is the service's (`Database.schema`, the connection's search_path): no round trip to ask for it."""
    await conn.execute("SELECT pg_notify($1, '')", wake_channel(schema))


# ---------------------------------------------------------------- referrals
async def remember_referral(
    conn: asyncpg.Connection, referral_id: Any, from_org: str, to_org: str, service: str | None, client_id: Any
) -> None:
    await conn.execute(
        """INSERT INTO referrals (referral_id, from_org, to_org, service, client_id) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (referral_id) DO UPDATE SET from_org = EXCLUDED.from_org, to_org = EXCLUDED.to_org, service = EXCLUDED.service,
                                                   client_id = EXCLUDED.client_id""",
        uuid.UUID(str(referral_id)),
        from_org,
        to_org,
        service,
        uuid.UUID(str(client_id)),
    )


async def referrals(conn: asyncpg.Connection | asyncpg.Pool, referral_ids: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """referral id (as a string) -> from_org, to_org, service, client_id (a string), for those of these referrals
    that are remembered."""
    rows = await conn.fetch(
        "SELECT referral_id, from_org, to_org, service, client_id FROM referrals WHERE referral_id = ANY($1::uuid[])",
        list({uuid.UUID(str(r)) for r in referral_ids}),
    )
    return {
        str(r["referral_id"]): {
            "from_org": r["from_org"],
            "to_org": r["to_org"],
            "service": r["service"],
            "client_id": str(r["client_id"]) if r["client_id"] else None,
        }
        for r in rows
    }


# ---------------------------------------------------------------- erasure (GDPR Art. 17)
async def erased_among(conn: asyncpg.Connection | asyncpg.Pool, client_ids: Iterable[Any]) -> set[str]:
    """Which of these clients were erased (as strings)."""
    rows = await conn.fetch(
        "SELECT client_id FROM erased_clients WHERE client_id = ANY($1::uuid[])", list({uuid.UUID(str(c)) for c in client_ids})
    )
    return {str(r["client_id"]) for r in rows}


async def forget_client(
    conn: asyncpg.Connection, client_id: uuid.UUID, erased_at: datetime, reason: str, now: datetime
) -> list[asyncpg.Record]:
    """After `lotse.client.erased`: remembers the (pseudonymous) id, so that later rows keep nothing either; ends the client's
    own notifications not yet sent (returned, to be announced); empties the payload of every finished row about the client;
    forgets the client's referrals. What stays is the pseudonymous delivery record: which trigger, to which organisation
    or kind of recipient, on which channel, when, with which outcome, and every attempt.

    Rows still to be sent to an organisation keep their payload until they end (`finish_attempts` empties it then)."""
    await conn.execute(
        "INSERT INTO erased_clients (client_id, erased_at) VALUES ($1, $2) ON CONFLICT (client_id) DO NOTHING", client_id, erased_at
    )
    cancelled = await conn.fetch(
        """UPDATE notifications
              SET status = 'permanent-failure', reason = $2, next_attempt_at = NULL, leased_until = NULL, completed_at = $3::timestamptz,
                  updated_at = now()
            WHERE client_id = $1 AND recipient_kind = 'client' AND status IN ('created', 'sending')
           RETURNING *""",
        client_id,
        reason,
        now,
    )
    await conn.execute(
        "UPDATE notifications SET payload = '{}'::jsonb WHERE client_id = $1 AND status NOT IN ('created', 'sending') AND payload <> '{}'::jsonb",
        client_id,
    )
    await conn.execute("DELETE FROM referrals WHERE client_id = $1", client_id)
    return cancelled


# ---------------------------------------------------------------- delivery
async def claim_due(
    pool: asyncpg.Pool | asyncpg.Connection, channel: Channel, limit: int, lease_s: float, now: datetime
) -> list[asyncpg.Record]:
    """Claims up to `limit` due notifications of one channel. SKIP LOCKED lets replicas claim side by side;
    the claim sets the lease's end (`leased_until`), so a row whose sender died is claimed again then.

    The claim changes no indexed column: not `next_attempt_at` (the due index's key), and not `status` (indexed for
    the status API): a row's first claim leaves it `created` with `attempts` 1, which the status API shows as `sending`
    (NOTIFICATION_COLUMNS). So a claim is a HOT update, no index entries (migration 004). A row in flight stays in the
    due index, and the claim passes over it until its lease ends (at most the workers' batches in flight)."""
    if limit <= 0:
        return []
    return await pool.fetch(
        """WITH due AS (
               SELECT id FROM notifications
                WHERE channel = $1 AND next_attempt_at <= $4::timestamptz AND status IN ('created', 'sending')
                  AND (leased_until IS NULL OR leased_until <= $4::timestamptz)
                ORDER BY next_attempt_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED)
           UPDATE notifications n
              SET attempts = n.attempts + 1, updated_at = now(), leased_until = $4::timestamptz + make_interval(secs => $3)
             FROM due WHERE n.id = due.id
           RETURNING n.*""",
        channel.value,
        limit,
        lease_s,
        now,
    )


@dataclass(frozen=True)
class Finished:
    """One attempt's result, for `finish_attempts`."""

    row: asyncpg.Record
    outcome: Outcome
    decision: Decision
    started_at: datetime
    finished_at: datetime


async def finish_attempts(conn: asyncpg.Connection, done: list[Finished]) -> set[uuid.UUID]:
    """Records a batch of attempts in one statement: every attempt goes into `delivery_attempts`, and each row still ours
    (same attempt, not ended) gets its new status, its lease ended. Returns the ids of those rows; the others were
    re-claimed by another worker after their lease ended, or ended meanwhile (an erasure). A row that ends for an erased
    client drops its payload (it was kept only to send; see `forget_client`). A retry moves `next_attempt_at` (the due
    index's key) and a final status sets it NULL (the row leaves the due index): these updates write index entries."""
    if not done:
        return set()
    rows = await conn.fetch(
        """WITH f AS (
               SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::timestamptz[],
                                    $8::timestamptz[], $9::text[], $10::int[], $11::float8[])
                        AS f(id, attempts, status, next_attempt_at, reason, provider_ref, started_at, finished_at, outcome, status_code,
                             retry_after_s)),
           attempts AS (
               INSERT INTO delivery_attempts (notification_id, attempt, started_at, finished_at, outcome, status_code, reason,
                                              retry_after_s, next_attempt_at)
               SELECT id, attempts, started_at, finished_at, outcome, status_code, reason, retry_after_s, next_attempt_at FROM f)
           UPDATE notifications n
              SET status = f.status, next_attempt_at = f.next_attempt_at, leased_until = NULL, reason = f.reason,
                  provider_ref = COALESCE(f.provider_ref, n.provider_ref), updated_at = now(),
                  completed_at = CASE WHEN f.status IN ('created', 'sending') THEN NULL ELSE f.finished_at END,
                  payload = CASE WHEN f.status NOT IN ('created', 'sending')
                                      AND EXISTS (SELECT 1 FROM erased_clients e WHERE e.client_id = n.client_id)
                                 THEN '{}'::jsonb ELSE n.payload END
             FROM f
            WHERE n.id = f.id AND n.attempts = f.attempts AND n.status IN ('created', 'sending')
           RETURNING n.id""",
        [d.row["id"] for d in done],
        [d.row["attempts"] for d in done],
        [d.decision.status.value for d in done],
        [d.decision.next_attempt_at for d in done],
        [d.outcome.reason for d in done],
        [d.outcome.reference for d in done],
        [d.started_at for d in done],
        [d.finished_at for d in done],
        [d.outcome.kind.value for d in done],
        [d.outcome.status_code for d in done],
        [d.outcome.retry_after_s for d in done],
    )
    return {r["id"] for r in rows}


# ---------------------------------------------------------------- webhook endpoints
# Secrets are stored sealed (adapters/keys.py): key-encryption key id, nonce, ciphertext. No query here
# decrypts; the handlers open what they need. ENDPOINT_COLUMNS (what the API may show) holds none of them.
ENDPOINT_COLUMNS = """id, org_id, url, description, event_types, status, disabled_reason, disabled_at,
                      previous_secret_expires_at, created_at, updated_at"""
SECRET_COLUMNS = """secret_kek_id, secret_nonce, secret_ciphertext,
                    previous_secret_kek_id, previous_secret_nonce, previous_secret_ciphertext, previous_secret_expires_at"""


def _sealed(row: asyncpg.Record, prefix: str) -> SealedValue | None:
    if row[f"{prefix}kek_id"] is None:
        return None
    return SealedValue(row[f"{prefix}kek_id"], bytes(row[f"{prefix}nonce"]), bytes(row[f"{prefix}ciphertext"]))


def sealed_secret(row: asyncpg.Record) -> SealedValue | None:
    return _sealed(row, "secret_")


def sealed_previous_secret(row: asyncpg.Record) -> SealedValue | None:
    return _sealed(row, "previous_secret_")


async def create_endpoint(
    conn: asyncpg.Connection,
    *,
    endpoint_id: uuid.UUID,
    org_id: str,
    url: str,
    description: str | None,
    event_types: list[str] | None,
    secret: SealedValue,
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""INSERT INTO webhook_endpoints (id, org_id, url, description, event_types, secret_kek_id, secret_nonce, secret_ciphertext)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {ENDPOINT_COLUMNS}""",
        endpoint_id,
        org_id,
        url,
        description,
        event_types,
        secret.kek_id,
        secret.nonce,
        secret.ciphertext,
    )


async def get_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: uuid.UUID, *, with_secrets: bool = False
) -> asyncpg.Record | None:
    cols = f"{ENDPOINT_COLUMNS}, {SECRET_COLUMNS}" if with_secrets else ENDPOINT_COLUMNS
    return await conn.fetchrow(f"SELECT {cols} FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL", endpoint_id)


async def list_endpoints(conn: asyncpg.Connection | asyncpg.Pool, org_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND deleted_at IS NULL ORDER BY created_at", org_id
    )


async def active_endpoints(conn: asyncpg.Connection, org_ids: Iterable[str]) -> dict[str, list[asyncpg.Record]]:
    """org id -> its active endpoints (id, event_types), oldest first, for all these organisations in one query; an
    organisation without any maps to an empty list. Which event an endpoint takes: `domain.routing.endpoint_takes`."""
    orgs = sorted(set(org_ids))
    out: dict[str, list[asyncpg.Record]] = {o: [] for o in orgs}
    if not orgs:
        return out
    for row in await conn.fetch(
        """SELECT id, org_id, event_types FROM webhook_endpoints
            WHERE org_id = ANY($1::text[]) AND status = 'active' AND deleted_at IS NULL
            ORDER BY created_at, id""",
        orgs,
    ):
        out[row["org_id"]].append(row)
    return out


async def has_secret(conn: asyncpg.Connection, endpoint_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT secret_kek_id IS NOT NULL FROM webhook_endpoints WHERE id = $1", endpoint_id))


async def rotate_secret(
    conn: asyncpg.Connection, endpoint_id: uuid.UUID, new_secret: SealedValue, overlap_s: float, now: datetime
) -> asyncpg.Record | None:
    """The current secret becomes the previous one (signing too until the overlap ends); an endpoint without a
    secret (discarded by migration 002) gets one and no previous."""
    return await conn.fetchrow(
        f"""UPDATE webhook_endpoints
               SET previous_secret_kek_id = secret_kek_id, previous_secret_nonce = secret_nonce,
                   previous_secret_ciphertext = secret_ciphertext,
                   previous_secret_expires_at = CASE WHEN secret_kek_id IS NULL THEN NULL
                                                     ELSE $5::timestamptz + make_interval(secs => $6) END,
                   secret_kek_id = $2, secret_nonce = $3, secret_ciphertext = $4, updated_at = now()
             WHERE id = $1 AND deleted_at IS NULL RETURNING {ENDPOINT_COLUMNS}""",
        endpoint_id,
        new_secret.kek_id,
        new_secret.nonce,
        new_secret.ciphertext,
        now,
        overlap_s,
    )


async def endpoints_to_rewrap(
    conn: asyncpg.Connection, current_kek_id: str, known_kek_ids: list[str], now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Locked rows with a secret sealed under another known KEK than the current one, or with an expired
    previous secret; SKIP LOCKED lets replicas share the work. Secrets under unknown KEKs are left alone."""
    return await conn.fetch(
        f"""SELECT id, {SECRET_COLUMNS} FROM webhook_endpoints
             WHERE (secret_kek_id <> $1 AND secret_kek_id = ANY($2::text[]))
                OR (previous_secret_kek_id <> $1 AND previous_secret_kek_id = ANY($2::text[]))
                OR (previous_secret_kek_id IS NOT NULL AND (previous_secret_expires_at IS NULL OR previous_secret_expires_at <= $3::timestamptz))
             ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED""",
        current_kek_id,
        known_kek_ids,
        now,
        limit,
    )


async def store_rewrapped(
    conn: asyncpg.Connection, endpoint_id: uuid.UUID, secret: SealedValue | None, previous: SealedValue | None
) -> None:
    await conn.execute(
        """UPDATE webhook_endpoints
              SET secret_kek_id = $2, secret_nonce = $3, secret_ciphertext = $4,
                  previous_secret_kek_id = $5, previous_secret_nonce = $6, previous_secret_ciphertext = $7,
                  previous_secret_expires_at = CASE WHEN $5::text IS NULL THEN NULL ELSE previous_secret_expires_at END
            WHERE id = $1""",
        endpoint_id,
        secret.kek_id if secret else None,
        secret.nonce if secret else None,
        secret.ciphertext if secret else None,
        previous.kek_id if previous else None,
        previous.nonce if previous else None,
        previous.ciphertext if previous else None,
    )


async def secrets_by_kek(pool: asyncpg.Pool | asyncpg.Connection) -> dict[str, int]:
    """How many stored secrets (current and previous) each KEK seals."""
    rows = await pool.fetch(
        """SELECT kek_id, count(*) AS n FROM (
               SELECT secret_kek_id AS kek_id FROM webhook_endpoints WHERE secret_kek_id IS NOT NULL
               UNION ALL
               SELECT previous_secret_kek_id FROM webhook_endpoints WHERE previous_secret_kek_id IS NOT NULL) s
            GROUP BY kek_id"""
    )
    return {r["kek_id"]: r["n"] for r in rows}


async def disable_endpoint(conn: asyncpg.Connection, endpoint_id: uuid.UUID, reason: str, now: datetime) -> None:
    await conn.execute(
        """UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2, disabled_at = $3, updated_at = now()
            WHERE id = $1 AND status = 'active'""",
        endpoint_id,
        reason,
        now,
    )


async def enable_endpoint(conn: asyncpg.Connection, endpoint_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""UPDATE webhook_endpoints SET status = 'active', disabled_reason = NULL, disabled_at = NULL, updated_at = now()
             WHERE id = $1 AND deleted_at IS NULL RETURNING {ENDPOINT_COLUMNS}""",
        endpoint_id,
    )


async def delete_endpoint(conn: asyncpg.Connection, endpoint_id: uuid.UUID) -> None:
    # Kept (without secrets) so that past notifications still name it.
    await conn.execute(
        """UPDATE webhook_endpoints SET deleted_at = now(), status = 'disabled', disabled_reason = 'deleted',
                  secret_kek_id = NULL, secret_nonce = NULL, secret_ciphertext = NULL,
                  previous_secret_kek_id = NULL, previous_secret_nonce = NULL, previous_secret_ciphertext = NULL,
                  previous_secret_expires_at = NULL, updated_at = now() WHERE id = $1""",
        endpoint_id,
    )


# ---------------------------------------------------------------- status API
# What the status API shows is what it showed before migration 004, when the claim set `status = 'sending'` and kept
# the lease in `next_attempt_at`: a row claimed for its first attempt (stored `created`, attempts > 0) is `sending`, and
# while an attempt is in flight `next_attempt_at` is the lease's end (GREATEST ignores a NULL lease).
SHOWN_STATUS = "CASE WHEN status = 'created' AND attempts > 0 THEN 'sending' ELSE status END"
NOTIFICATION_COLUMNS = f"""id, trigger_event_id, trigger_type, client_id, recipient_kind, recipient_org, endpoint_id, channel, template,
                          language, {SHOWN_STATUS} AS status, attempts, GREATEST(next_attempt_at, leased_until) AS next_attempt_at,
                          reason, created_at, updated_at, completed_at"""


async def list_notifications(
    pool: asyncpg.Pool,
    *,
    visible_to: str | None,
    client_id: uuid.UUID | None,
    status: str | None,
    channel: str | None,
    trigger_event_id: uuid.UUID | None,
    before: datetime | None,
    limit: int,
) -> list[asyncpg.Record]:
    """`visible_to` None: everything (operators); else rows addressed to or concerning that organisation.

    The status filter as shown (SHOWN_STATUS). Rows still to be attempted (`created`, `sending`) are the ones with a
    `next_attempt_at`, which lets them be found by notifications_due; the failures by the (partial) notifications_status;
    `delivered` rows, most of all, walking back by notifications_created."""
    return await pool.fetch(
        f"""SELECT {NOTIFICATION_COLUMNS} FROM notifications
             WHERE ($1::text IS NULL OR recipient_org = $1 OR $1 = ANY(concerned_orgs))
               AND ($2::uuid IS NULL OR client_id = $2)
               AND ($3::text IS NULL
                    OR ($3 NOT IN ('created', 'sending') AND status = $3)
                    OR ($3 IN ('created', 'sending') AND next_attempt_at IS NOT NULL AND {SHOWN_STATUS} = $3))
               AND ($4::text IS NULL OR channel = $4)
               AND ($5::uuid IS NULL OR trigger_event_id = $5)
               AND ($6::timestamptz IS NULL OR created_at < $6)
             ORDER BY created_at DESC, id
             LIMIT $7""",
        visible_to,
        client_id,
        status,
        channel,
        trigger_event_id,
        before,
        limit,
    )


async def get_notification(pool: asyncpg.Pool, notification_id: uuid.UUID) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    row = await pool.fetchrow(f"SELECT {NOTIFICATION_COLUMNS}, concerned_orgs FROM notifications WHERE id = $1", notification_id)
    if row is None:
        return None, []
    attempts = await pool.fetch(
        """SELECT attempt, started_at, finished_at, outcome, status_code, reason, retry_after_s, next_attempt_at
             FROM delivery_attempts WHERE notification_id = $1 ORDER BY attempt, id""",
        notification_id,
    )
    return row, attempts
