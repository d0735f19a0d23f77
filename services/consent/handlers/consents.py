"""Consent commands: record, withdraw, expire. State changes and the events announcing them share one transaction."""

from __future__ import annotations

import logging
import uuid

from contracts import new_event
from contracts.events import ConsentExpired, ConsentGranted, ConsentWithdrawn
from lotse_kit import access

from ..adapters import repository as repo
from ..domain.commands import ExpireDueConsents, RecordConsent, WithdrawConsent
from ..domain.errors import ConsentAlreadyExpired, ConsentNotFound, ConsentRuleViolation, NotCollectingOrg
from ..domain.event_ids import SOURCE, expired_event_id
from ..domain.model import Consent, ConsentStatus, new_consent
from .deps import Deps
from .forwarding import forward_to_partners

log = logging.getLogger(__name__)


async def record_consent(cmd: RecordConsent, deps: Deps) -> Consent:
    """Records a consent (ISO/IEC TS 27560 fields, §67b SGB X) and emits lotse.consent.granted."""
    collecting = cmd.collecting_org or cmd.acting_org
    if collecting != cmd.acting_org:
        raise NotCollectingOrg(f"{cmd.acting_org} cannot record a consent collected by {collecting}.")
    unknown = [o for o in [collecting, *cmd.recipients] if not deps.directory.has(o)]
    if unknown:
        raise ConsentRuleViolation("recipients", f"not organisations of this network: {', '.join(sorted(set(unknown)))}")
    consent = new_consent(
        consent_id=uuid.uuid4(),
        client_id=cmd.client_id,
        collecting_org=collecting,
        recipients=cmd.recipients,
        purposes=cmd.purposes,
        categories=cmd.categories,
        form=cmd.form,
        form_reason=cmd.form_reason,
        information=cmd.information,
        information_language=cmd.information_language,
        interpreter_used=cmd.interpreter_used,
        valid_until=cmd.valid_until,
        now=deps.clock.now(),
        default_validity=deps.default_validity,
        max_validity=deps.max_validity,
        recorded_by=cmd.recorded_by,
    )
    event = ConsentGranted(
        client_id=consent.client_id,
        consent_id=consent.consent_id,
        collecting_org=consent.collecting_org,
        recipients=list(consent.recipients),
        purposes=list(consent.purposes),
        categories=list(consent.categories),
        legal_basis=list(consent.legal_basis),
        form=consent.form.value,
        information_language=consent.information_language,
        interpreter_used=consent.interpreter_used,
        granted_at=consent.granted_at,
        valid_until=consent.valid_until,
    )
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await repo.insert_consent(conn, consent)
        await repo.bump_version(conn, consent.client_id)
        await deps.outbox.enqueue(conn, new_event(event, source=SOURCE, acting_org=collecting))
    log.info("consent granted", extra={"consent_id": str(consent.consent_id), "client_id": str(consent.client_id)})
    return consent


async def withdraw_consent(cmd: WithdrawConsent, deps: Deps) -> Consent:
    """GDPR Art. 7(3): effective for every decision after commit; partners that received data are told."""
    async with deps.db.pool.acquire() as conn:
        async with conn.transaction():
            consent = await repo.get_consent(conn, cmd.consent_id, for_update=True)
            if consent is None or not access.may_withdraw(
                cmd.by_org,
                collecting_org=consent.collecting_org,
                recipients=consent.recipients,
                responsible_orgs=await repo.responsible_orgs(conn, consent.client_id),
            ):
                # An unrelated organisation cannot withdraw, nor learn that the consent exists.
                raise ConsentNotFound(f"no consent {cmd.consent_id}")
            now = deps.clock.now()
            status = consent.status(now)
            if status is ConsentStatus.WITHDRAWN:
                pass  # withdrawing twice is harmless; the first withdrawal stands
            elif status is ConsentStatus.EXPIRED:
                raise ConsentAlreadyExpired(
                    f"consent {cmd.consent_id} expired at {consent.valid_until.isoformat()}; there is nothing to withdraw"
                )
            else:
                await repo.mark_withdrawn(conn, cmd.consent_id, at=now, by_org=cmd.by_org)
                await repo.bump_version(conn, consent.client_id)
                disclosed = await repo.recipients_of_consent(conn, cmd.consent_id)
                env = new_event(
                    ConsentWithdrawn(
                        client_id=consent.client_id,
                        consent_id=cmd.consent_id,
                        withdrawn_at=now,
                        recorded_by_org=cmd.by_org,
                        disclosed_to=disclosed,
                    ),
                    source=SOURCE,
                    acting_org=cmd.by_org,
                )
                await deps.outbox.enqueue(conn, env)
                await forward_to_partners(env, conn, deps)
                log.info("consent withdrawn", extra={"consent_id": str(cmd.consent_id), "disclosed_to": disclosed})
        if deps.cache is not None:
            deps.cache.invalidate(consent.client_id)  # not needed for correctness (versions are), frees memory at once
        withdrawn = await repo.get_consent(conn, cmd.consent_id)
    assert withdrawn is not None
    return withdrawn


async def expire_due_consents(cmd: ExpireDueConsents, deps: Deps) -> int:
    """Marks consents past valid_until as expired and emits lotse.consent.expired once per consent.

    Safe with several replicas: rows are claimed FOR UPDATE SKIP LOCKED and the
    status change is conditional, so each consent is expired by exactly one transaction.
    Returns how many were expired (`cmd.limit` means more may be due).
    """
    now = deps.clock.now()
    expired = 0
    async with deps.db.pool.acquire() as conn, conn.transaction():
        for consent in await repo.claim_due_expiries(conn, now=now, limit=cmd.limit):
            if not await repo.mark_expired(conn, consent.consent_id, at=consent.valid_until):
                continue
            await repo.bump_version(conn, consent.client_id)
            disclosed = await repo.recipients_of_consent(conn, consent.consent_id)
            env = new_event(
                ConsentExpired(
                    client_id=consent.client_id,
                    consent_id=consent.consent_id,
                    expired_at=consent.valid_until,
                    disclosed_to=disclosed,
                ),
                source=SOURCE,
                event_id=expired_event_id(consent.consent_id),
            )
            await deps.outbox.enqueue(conn, env)
            await forward_to_partners(env, conn, deps)
            expired += 1
    if expired:
        log.info("consents expired", extra={"count": expired})
    return expired
