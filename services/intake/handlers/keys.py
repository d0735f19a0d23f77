"""Keeping personal data encrypted: re-wrapping data keys after a KEK rotation, and encrypting the clear text
that intake stored before issue 13.

After a KEK rotation (a new `LOTSE_INTAKE_KEK`, the old one moved to `LOTSE_INTAKE_OLD_KEKS`) the re-wrap job
(entrypoints/workers.py) unwraps every data key wrapped under an old KEK and wraps it again under the current
one: 32 bytes per client, the data itself is not touched. When the gauge
`lotse_intake_data_keys_under_old_keks` is 0, the old KEK can be removed from the configuration.
"""

from __future__ import annotations

import logging

from lotse_kit.keyring import KeyUnavailable

from ..adapters import metrics
from ..adapters import repository as repo
from .deps import Deps

log = logging.getLogger(__name__)


async def rewrap_data_keys(deps: Deps) -> bool:
    """One batch; True when more may be due right now."""
    keyring = deps.vault.keyring
    changed = failed = 0
    async with deps.db.pool.acquire() as conn, conn.transaction():
        rows = await repo.client_keys_to_rewrap(conn, keyring.current_id, sorted(keyring.known_ids), deps.settings.key_rewrap_batch_size)
        for row in rows:
            try:
                new = deps.vault.rewrapped(row)
            except KeyUnavailable as exc:
                failed += 1
                log.error("data key cannot be re-wrapped", extra={"client_id": str(row["client_id"]), "error": str(exc)})
                continue
            await repo.store_rewrapped_key(conn, row["client_id"], new.kek_id, new.nonce, new.ciphertext, deps.clock.now())
            changed += 1
    counts = await repo.client_keys_by_kek(deps.db.pool)
    old = {kid: n for kid, n in counts.items() if kid != keyring.current_id}
    metrics.data_keys_under_old_keks.set(sum(old.values()))
    unknown = sorted(kid for kid in old if kid not in keyring.known_ids)
    if unknown:
        log.error(
            "data keys are wrapped under key-encryption keys that are not configured; those clients' data cannot be read",
            extra={"kek_ids": unknown},
        )
    if changed:
        log.info("data keys re-wrapped", extra={"clients": changed, "kek_id": keyring.current_id, "left_under_old_keks": old})
    return len(rows) == deps.settings.key_rewrap_batch_size and changed > 0 and failed < len(rows)


async def encrypt_clear_text(deps: Deps) -> int:
    """Migration 002's second half, at start before intake serves: every personal-data value still in clear (from
    before encryption) is encrypted under its client's (new) data key and the clear columns are dropped, in one
    transaction on the tables' owner connection; replicas starting together wait for each other. Returns the
    number of rows encrypted; 0 and nothing done once the clear columns are gone."""
    conn = await repo.connect_as_owner(deps.db.admin_dsn, deps.db.schema)
    try:
        if not await repo.clear_text_columns(conn):
            return 0
        async with conn.transaction():
            await repo.lock_for_encryption(conn, deps.db.schema)
            present = await repo.clear_text_columns(conn)  # another replica may have finished meanwhile
            if not present:
                return 0
            done = 0
            if present.get("client_personal_data"):
                for row in await repo.clear_personal_rows(conn):
                    clear = {c: row[c] for c in repo.PERSONAL_COLUMNS if row[c] is not None}
                    await deps.vault.update_personal(conn, row["client_id"], clear, create_key=True)
                    done += 1
            if present.get("referral_notes"):
                for row in await repo.clear_note_rows(conn):
                    clear = {c: row[c] for c in repo.NOTE_COLUMNS if row[c] is not None}
                    await deps.vault.update_notes(conn, row["client_id"], row["referral_id"], clear, create_key=True)
                    done += 1
            await repo.drop_clear_text_columns(conn)
    finally:
        await conn.close()
    if done:
        log.warning("personal data stored in clear before encryption is now encrypted; the clear columns are dropped", extra={"rows": done})
    else:
        log.info("the clear personal-data columns of migration 001 are dropped (no rows in clear)")
    return done
