"""PostgreSQL access for the consent ledger, the client versions and the disclosure ledger.

Every function takes the caller's connection, so handlers decide the transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from contracts.vocab import DataCategory, Purpose

from ..domain.acknowledgements import AckDue
from ..domain.corrections import Received
from ..domain.keys import OrgKey
from ..domain.model import Consent, ConsentForm, ConsentStatus, InformationGiven

_COLUMNS = """c.consent_id, c.client_id, c.collecting_org, c.recipients, c.purposes, c.categories, c.legal_basis,
    c.form, c.form_reason, c.informed_purpose, c.informed_consequences, c.informed_right_to_withdraw,
    c.information_language, c.interpreter_used, c.notice_version, c.granted_at, c.valid_until, c.recorded_by,
    c.status, c.withdrawn_at, c.withdrawal_recorded_by_org, c.expired_at"""

# An organisation's stored keys as one JSON array each (`_key_from_json`): an array of rows would cost asyncpg a
# type introspection per connection, JSON is a built-in type.
_KEY_FIELDS = ("org", "kid", "use", "jwk", "source", "registered_at", "registered_by", "retired_at")
_KEY_COLUMNS = ", ".join(_KEY_FIELDS)


_DISCLOSED_TO = """ARRAY(SELECT DISTINCT d.recipient FROM disclosures d
                         WHERE d.consent_id = c.consent_id AND d.outcome = 'made' ORDER BY 1) AS disclosed_to"""


def _consent(r: asyncpg.Record) -> Consent:
    return Consent(
        consent_id=r["consent_id"],
        client_id=r["client_id"],
        collecting_org=r["collecting_org"],
        recipients=tuple(r["recipients"]),
        purposes=tuple(Purpose(p) for p in r["purposes"]),
        categories=tuple(DataCategory(c) for c in r["categories"]),
        legal_basis=tuple(r["legal_basis"]),
        form=ConsentForm(r["form"]),
        form_reason=r["form_reason"],
        information=InformationGiven(r["informed_purpose"], r["informed_consequences"], r["informed_right_to_withdraw"]),
        information_language=r["information_language"],
        interpreter_used=r["interpreter_used"],
        granted_at=r["granted_at"],
        valid_until=r["valid_until"],
        recorded_by=r["recorded_by"],
        notice_version=r["notice_version"],
        stored_status=ConsentStatus(r["status"]),
        withdrawn_at=r["withdrawn_at"],
        withdrawal_recorded_by_org=r["withdrawal_recorded_by_org"],
        expired_at=r["expired_at"],
        disclosed_to=tuple(r.get("disclosed_to") or ()),
    )


async def insert_consent(conn: asyncpg.Connection, c: Consent) -> None:
    await conn.execute(
        """INSERT INTO consents (consent_id, client_id, collecting_org, recipients, purposes, categories, legal_basis,
               form, form_reason, informed_purpose, informed_consequences, informed_right_to_withdraw,
               information_language, interpreter_used, notice_version, granted_at, valid_until, recorded_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)""",
        c.consent_id,
        c.client_id,
        c.collecting_org,
        list(c.recipients),
        [p.value for p in c.purposes],
        [x.value for x in c.categories],
        list(c.legal_basis),
        c.form.value,
        c.form_reason,
        c.information.purpose,
        c.information.consequences_of_refusal,
        c.information.right_to_withdraw,
        c.information_language,
        c.interpreter_used,
        c.notice_version,
        c.granted_at,
        c.valid_until,
        c.recorded_by,
    )


async def get_consent(conn: asyncpg.Connection, consent_id: UUID, *, for_update: bool = False) -> Consent | None:
    if for_update:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM consents c WHERE c.consent_id = $1 FOR UPDATE", consent_id)
    else:
        row = await conn.fetchrow(f"SELECT {_COLUMNS}, {_DISCLOSED_TO} FROM consents c WHERE c.consent_id = $1", consent_id)
    return _consent(row) if row else None


async def client_consents(conn: asyncpg.Connection, client_id: UUID, *, with_disclosures: bool = False) -> list[Consent]:
    extra = f", {_DISCLOSED_TO}" if with_disclosures else ""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS}{extra} FROM consents c WHERE c.client_id = $1 ORDER BY c.granted_at DESC, c.consent_id", client_id
    )
    return [_consent(r) for r in rows]


async def lock_client_consents(conn: asyncpg.Connection, client_id: UUID) -> list[Consent]:
    """The client's consents, locked FOR SHARE: a concurrent withdrawal or expiry waits for our commit, or we for its."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM consents c WHERE c.client_id = $1 ORDER BY c.granted_at DESC FOR SHARE", client_id)
    return [_consent(r) for r in rows]


async def mark_withdrawn(conn: asyncpg.Connection, consent_id: UUID, *, at: datetime, by_org: str) -> None:
    await conn.execute(
        "UPDATE consents SET status = 'withdrawn', withdrawn_at = $2, withdrawal_recorded_by_org = $3 WHERE consent_id = $1",
        consent_id,
        at,
        by_org,
    )


async def claim_due_expiries(conn: asyncpg.Connection, *, now: datetime, limit: int) -> list[Consent]:
    """Active consents past valid_until, locked; a replica running the same job at once skips them."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM consents c WHERE c.status = 'active' AND c.valid_until <= $1
             ORDER BY c.valid_until LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [_consent(r) for r in rows]


async def mark_expired(conn: asyncpg.Connection, consent_id: UUID, *, at: datetime) -> bool:
    status = await conn.execute(
        "UPDATE consents SET status = 'expired', expired_at = $2 WHERE consent_id = $1 AND status = 'active'", consent_id, at
    )
    return status.endswith(" 1")


# ---------------------------------------------------------------- client versions
async def bump_version(conn: asyncpg.Connection, client_id: UUID, *, erased_at: datetime | None = None) -> int:
    return await conn.fetchval(
        """INSERT INTO client_versions (client_id, version, erased_at) VALUES ($1, 1, $2)
           ON CONFLICT (client_id) DO UPDATE
              SET version = client_versions.version + 1, erased_at = coalesce(client_versions.erased_at, EXCLUDED.erased_at)
           RETURNING version""",
        client_id,
        erased_at,
    )


async def client_version(conn: asyncpg.Connection | asyncpg.Pool, client_id: UUID) -> int:
    """The client's version (0 without a version row): a decision with a cached snapshot checks it against this."""
    return await conn.fetchval("SELECT version FROM client_versions WHERE client_id = $1", client_id) or 0


@dataclass(frozen=True)
class ClientSnapshot:
    version: int
    erased_at: datetime | None
    consents: tuple[Consent, ...]


async def client_snapshot(conn: asyncpg.Connection | asyncpg.Pool, client_id: UUID) -> ClientSnapshot:
    """Version, erasure and consents from one statement, hence one consistent snapshot, in one round trip."""
    rows = await conn.fetch(
        f"""SELECT v.version AS v_version, v.erased_at AS v_erased_at, {_COLUMNS}
              FROM (SELECT $1::uuid AS client_id) k
              LEFT JOIN client_versions v ON v.client_id = k.client_id
              LEFT JOIN consents c ON c.client_id = k.client_id
             ORDER BY c.granted_at DESC, c.consent_id""",
        client_id,
    )
    first = rows[0]
    consents = tuple(_consent(r) for r in rows if r["consent_id"] is not None)
    return ClientSnapshot(first["v_version"] or 0, first["v_erased_at"], consents)


async def client_versions(conn: asyncpg.Connection | asyncpg.Pool, client_ids: list[UUID]) -> dict[UUID, int]:
    """`client_version` for many clients in one round trip (0 for a client without a version row)."""
    rows = await conn.fetch("SELECT client_id, version FROM client_versions WHERE client_id = ANY($1::uuid[])", client_ids)
    found = {r["client_id"]: r["version"] for r in rows}
    return {c: found.get(c) or 0 for c in client_ids}


async def client_snapshots(conn: asyncpg.Connection | asyncpg.Pool, client_ids: list[UUID]) -> dict[UUID, ClientSnapshot]:
    """`client_snapshot` for many clients from one statement (each one consistent, as the single one is)."""
    rows = await conn.fetch(
        f"""SELECT k.client_id AS k_client_id, v.version AS v_version, v.erased_at AS v_erased_at, {_COLUMNS}
              FROM unnest($1::uuid[]) AS k (client_id)
              LEFT JOIN client_versions v ON v.client_id = k.client_id
              LEFT JOIN consents c ON c.client_id = k.client_id
             ORDER BY c.granted_at DESC, c.consent_id""",
        list(dict.fromkeys(client_ids)),
    )
    heads: dict[UUID, tuple[int, datetime | None]] = {}
    consents: dict[UUID, list[Consent]] = {}
    for r in rows:
        heads[r["k_client_id"]] = (r["v_version"] or 0, r["v_erased_at"])
        found = consents.setdefault(r["k_client_id"], [])
        if r["consent_id"] is not None:
            found.append(_consent(r))
    return {c: ClientSnapshot(v, e, tuple(consents[c])) for c, (v, e) in heads.items()}


async def lock_client_erasure(conn: asyncpg.Connection, client_id: UUID) -> datetime | None:
    """When the client was erased, if so; locks the version row FOR SHARE against a concurrent erasure."""
    return await conn.fetchval("SELECT erased_at FROM client_versions WHERE client_id = $1 FOR SHARE", client_id)


@dataclass(frozen=True)
class GateState:
    """What the gate decides on, read and locked by `lock_gate_state` in one statement."""

    decided: bool  # the disclosure ledger already holds a decision for this request
    consents: list[Consent]  # newest first, locked FOR SHARE (as `lock_client_consents`)
    erased_at: datetime | None  # from the version row, locked FOR SHARE (as `lock_client_erasure`)
    stored_keys: list[OrgKey] | None  # `stored_keys` of the organisation asked for, None if none was


# Each CTE locks exactly the rows its single-table query names, like the two statements it replaces (a locking
# clause may not reach the nullable side of an outer join, hence no join). MATERIALIZED keeps each CTE one
# locking scan; `v` reads `c` first, so the consents are locked before the version row, in the old order, and
# the main query reads both in full (a SELECT CTE runs only as far as the main query reads it).
_GATE_STATE = f"""WITH c AS MATERIALIZED (
        SELECT {_COLUMNS} FROM consents c WHERE c.client_id = $1 FOR SHARE),
     v AS MATERIALIZED (
        SELECT erased_at FROM client_versions WHERE client_id = $1 AND (SELECT count(*) FROM c) >= 0 FOR SHARE)
SELECT EXISTS (SELECT FROM disclosures WHERE request_id = $2::uuid) AS g_decided,
       (SELECT max(erased_at) FROM v) AS g_erased_at,
       (SELECT json_agg(json_build_array({_KEY_COLUMNS}) ORDER BY registered_at DESC, kid)::text
          FROM org_keys WHERE org = $3) AS g_keys,
       c.*
  FROM (VALUES (1)) one LEFT JOIN c ON true
 ORDER BY c.granted_at DESC, c.consent_id"""


async def lock_gate_state(conn: asyncpg.Connection, client_id: UUID, request_id: UUID | None, *, keys_of: str | None = None) -> GateState:
    """`disclosure_decided`, `lock_client_consents` and `lock_client_erasure` in one round trip, with the same
    locks: a concurrent withdrawal, expiry or erasure waits for our commit, or we for its. Without `request_id`
    `decided` is False (the caller knows it undecided); with `keys_of` also that organisation's `stored_keys`
    (unlocked, as there)."""
    rows = await conn.fetch(_GATE_STATE, client_id, request_id, keys_of)
    first = rows[0]
    consents = [_consent(r) for r in rows if r["consent_id"] is not None]
    keys = [_key_from_json(k) for k in json.loads(first["g_keys"] or "[]")] if keys_of is not None else None
    return GateState(first["g_decided"], consents, first["g_erased_at"], keys)


@dataclass(frozen=True)
class GateBatchState:
    """What the gate's batch pre-check reads, unlocked, with `gate_batch_state` in one statement."""

    decided: set[UUID]  # the requests the disclosure ledger already holds a decision for
    consents: dict[UUID, list[Consent]]  # each client's consents, newest first
    erased: dict[UUID, datetime | None]  # when each client was erased, if so
    stored_keys: dict[str, list[OrgKey]]  # `stored_keys` of each organisation asked for (empty list: none)


# Per client one row per consent (one with NULLs without any), as `client_snapshots`; the decided requests and the
# organisations' keys are InitPlans computed once, sent with the first row only.
_GATE_BATCH_STATE = f"""SELECT CASE WHEN row_number() OVER () = 1
                   THEN ARRAY(SELECT request_id FROM disclosures WHERE request_id = ANY($1::uuid[])) END AS g_decided,
       CASE WHEN row_number() OVER () = 1
                   THEN (SELECT json_agg(json_build_array({_KEY_COLUMNS}) ORDER BY registered_at DESC, kid)::text
                           FROM org_keys WHERE org = ANY($3::text[])) END AS g_keys,
       k.client_id AS k_client_id, v.erased_at AS v_erased_at, {_COLUMNS}
  FROM unnest($2::uuid[]) AS k (client_id)
  LEFT JOIN client_versions v ON v.client_id = k.client_id
  LEFT JOIN consents c ON c.client_id = k.client_id
 ORDER BY c.granted_at DESC, c.consent_id"""


async def gate_batch_state(
    conn: asyncpg.Connection | asyncpg.Pool, request_ids: list[UUID], client_ids: list[UUID], orgs: list[str]
) -> GateBatchState:
    """Unlocked, for the gate's read-only pre-check of a batch (the handlers decide again under `lock_gate_state`):
    which requests are decided, each client's consents and erasure, each organisation's stored keys; one statement
    where it took three (the decided requests, the consents, the keys)."""
    rows = await conn.fetch(_GATE_BATCH_STATE, list(dict.fromkeys(request_ids)), list(dict.fromkeys(client_ids)), list(dict.fromkeys(orgs)))
    decided: set[UUID] = set()
    stored: dict[str, list[OrgKey]] = {org: [] for org in orgs}
    consents: dict[UUID, list[Consent]] = {}
    erased: dict[UUID, datetime | None] = {}
    for r in rows:
        if r["g_decided"] is not None:  # the first row
            decided.update(r["g_decided"])
            for values in json.loads(r["g_keys"] or "[]"):
                key = _key_from_json(values)
                stored[key.org].append(key)
        erased[r["k_client_id"]] = r["v_erased_at"]
        found = consents.setdefault(r["k_client_id"], [])
        if r["consent_id"] is not None:
            found.append(_consent(r))
    return GateBatchState(decided, consents, erased, stored)


# ---------------------------------------------------------------- disclosures
@dataclass(frozen=True)
class DisclosureRecord:
    request_id: UUID
    client_id: UUID
    referral_id: UUID | None
    from_org: str
    recipient: str
    purpose: Purpose
    categories: tuple[DataCategory, ...]
    outcome: str
    consent_id: UUID | None
    reason: str
    missing_categories: tuple[DataCategory, ...]
    payload_sha256: str | None
    partner_event_id: UUID | None
    decided_at: datetime
    kind: str = "referral"  # or "correction" (GDPR Art. 19)


async def insert_disclosure(conn: asyncpg.Connection, d: DisclosureRecord) -> bool:
    """Records a gate decision; False if this request was decided before (a re-sent request)."""
    inserted = await conn.fetchval(
        """INSERT INTO disclosures (request_id, client_id, referral_id, from_org, recipient, purpose, categories, outcome,
               consent_id, reason, missing_categories, payload_sha256, partner_event_id, decided_at, kind)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           ON CONFLICT (request_id) DO NOTHING RETURNING true""",
        d.request_id,
        d.client_id,
        d.referral_id,
        d.from_org,
        d.recipient,
        d.purpose.value,
        [c.value for c in d.categories],
        d.outcome,
        d.consent_id,
        d.reason,
        [c.value for c in d.missing_categories],
        d.payload_sha256,
        d.partner_event_id,
        d.decided_at,
        d.kind,
    )
    return bool(inserted)


async def disclosure_decided(conn: asyncpg.Connection, request_id: UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM disclosures WHERE request_id = $1", request_id))


async def recipients_of_consent(conn: asyncpg.Connection, consent_id: UUID) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT recipient FROM disclosures WHERE consent_id = $1 AND outcome = 'made' ORDER BY 1", consent_id)
    return [r["recipient"] for r in rows]


async def recipients_of_client(conn: asyncpg.Connection, client_id: UUID) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT recipient FROM disclosures WHERE client_id = $1 AND outcome = 'made' ORDER BY 1", client_id)
    return [r["recipient"] for r in rows]


async def serving_recipients(conn: asyncpg.Connection, client_id: UUID, *, now: datetime) -> list[str]:
    """Organisations that received data about the client under a consent still in effect."""
    rows = await conn.fetch(
        """SELECT DISTINCT d.recipient FROM disclosures d JOIN consents c ON c.consent_id = d.consent_id
            WHERE d.client_id = $1 AND d.outcome = 'made' AND c.status = 'active' AND c.valid_until > $2
              AND d.recipient = ANY(c.recipients)
            ORDER BY 1""",
        client_id,
        now,
    )
    return [r["recipient"] for r in rows]


async def referral_parties(conn: asyncpg.Connection, referral_id: UUID) -> tuple[set[str], set[str]]:
    """(senders, recipients) of a referral, as far as it went through the gate."""
    rows = await conn.fetch("SELECT from_org, recipient FROM disclosures WHERE referral_id = $1 AND outcome = 'made'", referral_id)
    return {r["from_org"] for r in rows}, {r["recipient"] for r in rows}


# ---------------------------------------------------------------- who is responsible for a client
async def record_registration(conn: asyncpg.Connection, client_id: UUID, registering_org: str, responsible_org: str, at: datetime) -> None:
    """A client registered in intake; a hand-over seen first (replayed topics) keeps its responsible organisation."""
    await conn.execute(
        """INSERT INTO client_orgs (client_id, registering_org, responsible_org, updated_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (client_id) DO UPDATE SET registering_org = EXCLUDED.registering_org""",
        client_id,
        registering_org,
        responsible_org,
        at,
    )


async def record_handover(conn: asyncpg.Connection, client_id: UUID, to_org: str, at: datetime) -> None:
    """The case moved to `to_org` (events of one client arrive in order: they share a partition)."""
    await conn.execute(
        """INSERT INTO client_orgs (client_id, registering_org, responsible_org, updated_at) VALUES ($1, NULL, $2, $3)
           ON CONFLICT (client_id) DO UPDATE SET responsible_org = EXCLUDED.responsible_org, updated_at = EXCLUDED.updated_at""",
        client_id,
        to_org,
        at,
    )


async def responsible_orgs(conn: asyncpg.Connection | asyncpg.Pool, client_id: UUID) -> frozenset[str]:
    """The client's registering and current responsible organisation (empty if intake never announced the client)."""
    row = await conn.fetchrow("SELECT registering_org, responsible_org FROM client_orgs WHERE client_id = $1", client_id)
    if row is None:
        return frozenset()
    return frozenset(o for o in (row["registering_org"], row["responsible_org"]) if o)


async def collecting_org_of(conn: asyncpg.Connection, consent_id: UUID) -> str | None:
    return await conn.fetchval("SELECT collecting_org FROM consents WHERE consent_id = $1", consent_id)


async def latest_collecting_org(conn: asyncpg.Connection, client_id: UUID, recipient: str) -> str | None:
    """The collecting organisation of the consent under which `recipient` last received the client's data."""
    return await conn.fetchval(
        """SELECT c.collecting_org FROM disclosures d JOIN consents c ON c.consent_id = d.consent_id
            WHERE d.client_id = $1 AND d.recipient = $2 AND d.outcome = 'made' ORDER BY d.decided_at DESC LIMIT 1""",
        client_id,
        recipient,
    )


async def received_by_client(conn: asyncpg.Connection, client_id: UUID) -> list[Received]:
    """Per recipient, consent and purpose: the categories it received about the client (referrals and corrections)."""
    rows = await conn.fetch(
        """SELECT recipient, consent_id, purpose, array_agg(DISTINCT cat) AS categories
             FROM disclosures, unnest(categories) AS cat
            WHERE client_id = $1 AND outcome = 'made'
            GROUP BY recipient, consent_id, purpose""",
        client_id,
    )
    return [
        Received(r["recipient"], r["consent_id"], Purpose(r["purpose"]), frozenset(DataCategory(c) for c in r["categories"])) for r in rows
    ]


async def erase_consent_free_text(conn: asyncpg.Connection, client_id: UUID, *, at: datetime) -> int:
    """GDPR Art. 17: the only free text of a consent record (form_reason) is erased; the record itself stays."""
    status = await conn.execute(
        """UPDATE consents SET form_reason = NULL, personal_data_erased_at = coalesce(personal_data_erased_at, $2)
            WHERE client_id = $1""",
        client_id,
        at,
    )
    return int(status.split()[-1])


# ---------------------------------------------------------------- recipients' keys
def _key(r: asyncpg.Record | dict[str, Any]) -> OrgKey:
    jwk = r["jwk"]
    return OrgKey(
        org=r["org"],
        kid=r["kid"],
        use=r["use"],
        jwk=json.loads(jwk) if isinstance(jwk, str) else dict(jwk),
        source=r["source"],
        registered_at=r["registered_at"] if r["source"] == "api" else None,
        registered_by=r["registered_by"],
        retired_at=r["retired_at"],
    )


def _key_from_json(values: list[Any]) -> OrgKey:
    r = dict(zip(_KEY_FIELDS, values, strict=True))
    for at in ("registered_at", "retired_at"):
        r[at] = datetime.fromisoformat(r[at]) if r[at] is not None else None
    return _key(r)


async def stored_keys(conn: asyncpg.Connection | asyncpg.Pool, org: str) -> list[OrgKey]:
    rows = await conn.fetch(
        """SELECT org, kid, use, jwk::text AS jwk, source, registered_at, registered_by, retired_at
             FROM org_keys WHERE org = $1 ORDER BY registered_at DESC, kid""",
        org,
    )
    return [_key(r) for r in rows]


async def insert_key(conn: asyncpg.Connection, key: OrgKey, *, at: datetime) -> bool:
    """False when the organisation already has a row for this kid."""
    inserted = await conn.fetchval(
        """INSERT INTO org_keys (org, kid, use, jwk, source, registered_at, registered_by, retired_at)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
           ON CONFLICT (org, kid) DO NOTHING RETURNING true""",
        key.org,
        key.kid,
        key.use,
        json.dumps(key.jwk),
        key.source,
        key.registered_at or at,
        key.registered_by,
        key.retired_at,
    )
    return bool(inserted)


async def retire_key(conn: asyncpg.Connection, org: str, kid: str, *, at: datetime, by: str | None) -> None:
    await conn.execute(
        "UPDATE org_keys SET retired_at = $3, retired_by = $4 WHERE org = $1 AND kid = $2 AND retired_at IS NULL", org, kid, at, by
    )


async def lock_org_keys(conn: asyncpg.Connection, org: str) -> None:
    """Serialises registrations and retirements of one organisation's keys."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('consent-org-keys:' || $1))", org)


# ---------------------------------------------------------------- acknowledgements
_ACK_COLUMNS = """event_id, client_id, org, kind, consent_id, collecting_org, forwarded_at, due_at, acknowledged_at,
    received_at, overdue_raised_at"""


def _ack(r: asyncpg.Record) -> AckDue:
    return AckDue(
        event_id=r["event_id"],
        client_id=r["client_id"],
        org=r["org"],
        kind=r["kind"],
        consent_id=r["consent_id"],
        collecting_org=r["collecting_org"],
        forwarded_at=r["forwarded_at"],
        due_at=r["due_at"],
        acknowledged_at=r["acknowledged_at"],
        received_at=r["received_at"],
        overdue_raised_at=r["overdue_raised_at"],
    )


async def insert_ack_due(conn: asyncpg.Connection, a: AckDue) -> None:
    await conn.execute(
        """INSERT INTO acknowledgements (event_id, client_id, org, kind, consent_id, collecting_org, forwarded_at, due_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING""",
        a.event_id,
        a.client_id,
        a.org,
        a.kind,
        a.consent_id,
        a.collecting_org,
        a.forwarded_at,
        a.due_at,
    )


async def get_ack_due(conn: asyncpg.Connection, event_id: UUID, *, for_update: bool = False) -> AckDue | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_ACK_COLUMNS} FROM acknowledgements WHERE event_id = $1{lock}", event_id)
    return _ack(row) if row else None


async def mark_acknowledged(
    conn: asyncpg.Connection, event_id: UUID, *, acknowledged_at: datetime, ack_event_id: UUID, kid: str, received_at: datetime
) -> bool:
    status = await conn.execute(
        """UPDATE acknowledgements SET acknowledged_at = $2, ack_event_id = $3, ack_kid = $4, received_at = $5
            WHERE event_id = $1 AND acknowledged_at IS NULL""",
        event_id,
        acknowledged_at,
        ack_event_id,
        kid,
        received_at,
    )
    return status.endswith(" 1")


async def claim_overdue(conn: asyncpg.Connection, *, now: datetime, limit: int) -> list[AckDue]:
    """Acknowledgements past due and not yet reported, locked; a replica running the same job skips them."""
    rows = await conn.fetch(
        f"""SELECT {_ACK_COLUMNS} FROM acknowledgements
             WHERE acknowledged_at IS NULL AND overdue_raised_at IS NULL AND due_at <= $1
             ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [_ack(r) for r in rows]


async def mark_overdue_raised(conn: asyncpg.Connection, event_id: UUID, *, at: datetime) -> bool:
    status = await conn.execute(
        "UPDATE acknowledgements SET overdue_raised_at = $2 WHERE event_id = $1 AND overdue_raised_at IS NULL AND acknowledged_at IS NULL",
        event_id,
        at,
    )
    return status.endswith(" 1")


# ---------------------------------------------------------------- the listing API
_LISTED = """d.request_id, d.kind, d.client_id, d.referral_id, d.from_org, d.recipient, d.purpose, d.categories,
    d.consent_id, c.collecting_org, c.status AS consent_status, c.valid_until, d.payload_sha256, d.decided_at"""


async def disclosures_of_client(conn: asyncpg.Connection | asyncpg.Pool, client_id: UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""SELECT {_LISTED} FROM disclosures d JOIN consents c ON c.consent_id = d.consent_id
             WHERE d.client_id = $1 AND d.outcome = 'made' ORDER BY d.decided_at, d.request_id""",
        client_id,
    )
    return [dict(r) for r in rows]


async def disclosures_of_org(conn: asyncpg.Connection | asyncpg.Pool, org: str) -> list[dict[str, Any]]:
    """What the organisation received and what was disclosed at its request."""
    rows = await conn.fetch(
        f"""SELECT {_LISTED} FROM disclosures d JOIN consents c ON c.consent_id = d.consent_id
             WHERE (d.recipient = $1 OR d.from_org = $1) AND d.outcome = 'made' ORDER BY d.decided_at, d.request_id""",
        org,
    )
    return [dict(r) for r in rows]


async def acks_of_client(conn: asyncpg.Connection | asyncpg.Pool, client_id: UUID) -> list[AckDue]:
    rows = await conn.fetch(f"SELECT {_ACK_COLUMNS} FROM acknowledgements WHERE client_id = $1 ORDER BY forwarded_at, org", client_id)
    return [_ack(r) for r in rows]


async def acks_of_org(conn: asyncpg.Connection | asyncpg.Pool, org: str) -> list[AckDue]:
    """Acknowledgements the organisation owes, and those owed for consents it collected."""
    rows = await conn.fetch(
        f"SELECT {_ACK_COLUMNS} FROM acknowledgements WHERE org = $1 OR collecting_org = $1 ORDER BY forwarded_at, org", org
    )
    return [_ack(r) for r in rows]
