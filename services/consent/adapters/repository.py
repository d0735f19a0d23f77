"""PostgreSQL access for the consent ledger, the client versions and the disclosure ledger.

Every function takes the caller's connection, so handlers decide the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from contracts.vocab import DataCategory, Purpose

from ..domain.model import Consent, ConsentForm, ConsentStatus, InformationGiven

_COLUMNS = """c.consent_id, c.client_id, c.collecting_org, c.recipients, c.purposes, c.categories, c.legal_basis,
    c.form, c.form_reason, c.informed_purpose, c.informed_consequences, c.informed_right_to_withdraw,
    c.information_language, c.interpreter_used, c.notice_version, c.granted_at, c.valid_until, c.recorded_by,
    c.status, c.withdrawn_at, c.withdrawal_recorded_by_org, c.expired_at"""

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


async def lock_client_erasure(conn: asyncpg.Connection, client_id: UUID) -> datetime | None:
    """When the client was erased, if so; locks the version row FOR SHARE against a concurrent erasure."""
    return await conn.fetchval("SELECT erased_at FROM client_versions WHERE client_id = $1 FOR SHARE", client_id)


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


async def insert_disclosure(conn: asyncpg.Connection, d: DisclosureRecord) -> bool:
    """Records a gate decision; False if this request was decided before (a re-sent request)."""
    inserted = await conn.fetchval(
        """INSERT INTO disclosures (request_id, client_id, referral_id, from_org, recipient, purpose, categories, outcome,
               consent_id, reason, missing_categories, payload_sha256, partner_event_id, decided_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
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
