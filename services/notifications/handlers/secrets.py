"""Keeping stored webhook secrets under the current key-encryption key.

After a KEK rotation (new `secret_kek`, the old one moved to `secret_old_keks`) the re-wrap job
(entrypoints.workers) opens every secret sealed under an old KEK and seals it again under the current
one; it also drops previous secrets whose rotation overlap has ended. When the gauge
`lotse_notifications_webhook_secrets_under_old_keks` is 0, the old KEK can be removed from the configuration.
"""

from __future__ import annotations

import logging
import uuid

from ..adapters import metrics
from ..adapters import repository as repo
from ..adapters.keys import Keyring, SealedValue, SecretUnavailable, rewrap_secret
from .deps import Deps
from .triggers import SERVICE

log = logging.getLogger(__name__)


def _rewrapped(box: Keyring, sealed: SealedValue | None, endpoint_id: uuid.UUID) -> SealedValue | None:
    if sealed is None or sealed.kek_id not in box.known_ids:
        return sealed  # nothing to do, or nothing we can do (reported below)
    return rewrap_secret(box, sealed, endpoint_id)


async def rewrap_secrets(deps: Deps, *, batch: int = 100) -> bool:
    """One batch; True when more may be due right now."""
    box = deps.secrets
    now = deps.clock.now()
    changed = failed = 0
    async with deps.db.pool.acquire() as conn, conn.transaction():
        rows = await repo.endpoints_to_rewrap(conn, box.current_id, sorted(box.known_ids), now, batch)
        for row in rows:
            previous = repo.sealed_previous_secret(row)
            if previous is not None and (row["previous_secret_expires_at"] is None or row["previous_secret_expires_at"] <= now):
                previous = None  # its overlap is over: no longer needed, so no longer kept
            try:
                current = _rewrapped(box, repo.sealed_secret(row), row["id"])
                previous = _rewrapped(box, previous, row["id"])
            except SecretUnavailable as exc:
                failed += 1
                log.error("webhook secret cannot be re-wrapped", extra={"endpoint_id": str(row["id"]), "error": str(exc)})
                continue
            await repo.store_rewrapped(conn, row["id"], current, previous)
            changed += 1
    counts = await repo.secrets_by_kek(deps.db.pool)
    old = {kid: n for kid, n in counts.items() if kid != box.current_id}
    metrics.secrets_under_old_keks.labels(SERVICE).set(sum(old.values()))
    unknown = sorted(kid for kid in old if kid not in box.known_ids)
    if unknown:
        log.error(
            "webhook secrets are sealed under key-encryption keys that are not configured; those endpoints cannot sign",
            extra={"kek_ids": unknown},
        )
    if changed:
        log.info("webhook secrets re-wrapped", extra={"endpoints": changed, "kek_id": box.current_id, "left_under_old_keks": old})
    return len(rows) == batch and changed > 0 and failed < len(rows)
