"""Clients: registering a case, changing (correcting) it, handing it over (Rechtskreiswechsel), erasing it (GDPR Art. 17)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from contracts.events import CaseHandedOver, ClientCorrected, ClientErased, ClientRegistered, ClientUpdated, ResidenceStatus
from contracts.vocab import ResidenceTitle
from lotse_kit import calendar

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain import deadlines
from ..domain.clients import PERSONAL_FIELDS, corrected_categories, recorded_categories, running_retention
from ..domain.commands import EraseClient, HandOverCase, RegisterClient, UpdateClient
from ..domain.errors import Forbidden, Invalid, RetentionPeriodRunning
from ..views import case_for
from .deadlines import add_residence_deadline, settle_deadline
from .deps import Deps

log = logging.getLogger(__name__)


async def register_client(cmd: RegisterClient, deps: Deps) -> uuid.UUID:
    acting_org = cmd.acting_org
    deps.require_member(acting_org)
    if cmd.registering_org and cmd.registering_org != acting_org:
        raise Forbidden(f"{acting_org} cannot register a client on behalf of {cmd.registering_org}")
    valid_until = deadlines.check_104c(cmd.residence_title, cmd.residence_valid_until, cmd.residence_valid_from)
    client_id = uuid.uuid4()
    now = deps.clock.now()
    if valid_until and valid_until < calendar.local_date(now, deps.tz):
        raise Invalid("residence_valid_until", "the residence title has already expired")
    case = {
        "client_id": client_id,
        "registering_org": acting_org,
        "responsible_org": acting_org,
        "preferred_language": cmd.preferred_language,
        "languages": list(dict.fromkeys(cmd.languages)),
        "needs": [n.value for n in dict.fromkeys(cmd.needs)],
        "residence_title": cmd.residence_title.value if cmd.residence_title else None,
        "residence_valid_until": valid_until,
        "legal_regime": cmd.legal_regime.value if cmd.legal_regime else None,
        "registered_at": now,
    }
    personal = cmd.model_dump(include=set(PERSONAL_FIELDS))
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await repo.insert_client(conn, case)
        await deps.vault.add_client(conn, client_id, personal)
        await deps.emit(
            conn,
            ClientRegistered(
                client_id=client_id,
                registering_org=acting_org,
                responsible_org=acting_org,
                preferred_language=cmd.preferred_language,
                languages=case["languages"],
                needs=list(dict.fromkeys(cmd.needs)),
                residence=ResidenceStatus(title=cmd.residence_title, valid_until=valid_until) if cmd.residence_title else None,
                legal_regime=cmd.legal_regime,
                registered_at=now,
            ),
            acting_org,
        )
        await add_residence_deadline(
            conn,
            deps,
            deadlines.residence_deadline(cmd.residence_title, valid_until, cmd.residence_valid_from),
            client_id=client_id,
            responsible_org=acting_org,
            acting_org=acting_org,
        )
    log.info("client registered", extra={"client_id": str(client_id), "registering_org": acting_org})
    return client_id


async def update_client(cmd: UpdateClient, deps: Deps) -> list[str]:
    """Changes the fields the caller sent; returns the names of those that really changed. A change of a field
    of a data category (names, contact, residence, needs, education, health, do_not_contact) is a correction:
    `lotse.client.corrected` names the categories (never the values), so that the consent gate can tell every
    organisation that received them (GDPR Art. 16, 19)."""
    fields, client_id, acting_org = cmd.given, cmd.client_id, cmd.acting_org
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        client = await case_for(conn, client_id, acting_org, for_update=True)
        personal = await deps.vault.personal(conn, client_id) or dict.fromkeys(PERSONAL_FIELDS)
        changes: dict[str, Any] = {}
        for f in PERSONAL_FIELDS:
            if f in fields and getattr(cmd, f) != personal[f]:
                changes[f] = getattr(cmd, f)
        for f in ("preferred_language", "do_not_contact"):
            if f in fields and getattr(cmd, f) != client[f]:
                changes[f] = getattr(cmd, f)
        if "languages" in fields and list(dict.fromkeys(cmd.languages or [])) != list(client["languages"]):
            changes["languages"] = list(dict.fromkeys(cmd.languages or []))
        if "needs" in fields:
            needs = [n.value for n in dict.fromkeys(cmd.needs or [])]
            if needs != list(client["needs"]):
                changes["needs"] = needs
        if "legal_regime" in fields:
            regime = cmd.legal_regime.value if cmd.legal_regime else None
            if regime != client["legal_regime"]:
                changes["legal_regime"] = regime
        if fields & {"residence_title", "residence_valid_until", "residence_valid_from"}:
            changes.update(_residence_changes(cmd, client))
        if not changes:
            return []
        await repo.update_client(conn, client_id, {k: v for k, v in changes.items() if k not in PERSONAL_FIELDS}, now)
        await deps.vault.update_personal(conn, client_id, {k: v for k, v in changes.items() if k in PERSONAL_FIELDS})
        if "residence_title" in changes or "residence_valid_until" in changes:
            for d in await repo.open_deadlines(conn, client_id, kinds=[k.value for k in deadlines.RESIDENCE_KINDS]):
                await settle_deadline(conn, deps, d, "residence title changed", acting_org)
            title_value = changes.get("residence_title", client["residence_title"])
            until = changes.get("residence_valid_until", client["residence_valid_until"])
            await add_residence_deadline(
                conn,
                deps,
                deadlines.residence_deadline(ResidenceTitle(title_value) if title_value else None, until, None),
                client_id=client_id,
                responsible_org=client["responsible_org"],
                acting_org=acting_org,
            )
        event_fields = {
            k: changes[k] for k in ("preferred_language", "languages", "needs", "residence_title", "residence_valid_until") if k in changes
        }
        await deps.emit(
            conn,
            ClientUpdated(
                client_id=client_id,
                changed=sorted(changes),
                updated_by_org=acting_org,
                updated_at=now,
                **event_fields,
            ),
            acting_org,
        )
        corrected = corrected_categories(changes)
        if corrected:
            await deps.emit(
                conn, ClientCorrected(client_id=client_id, categories=corrected, corrected_by_org=acting_org, corrected_at=now), acting_org
            )
    log.info("client updated", extra={"client_id": str(client_id), "changed": sorted(changes), "corrected": [c.value for c in corrected]})
    return sorted(changes)


def _residence_changes(cmd: UpdateClient, client: Any) -> dict[str, Any]:
    """The residence title and valid-until date after the update, where they differ from the case."""
    fields = cmd.given
    title = (
        cmd.residence_title
        if "residence_title" in fields
        else (ResidenceTitle(client["residence_title"]) if client["residence_title"] else None)
    )
    until = (
        cmd.residence_valid_until
        if "residence_valid_until" in fields
        else (None if "residence_title" in fields else client["residence_valid_until"])
    )
    if cmd.residence_valid_from and title is not ResidenceTitle.CHANCEN_104C:
        raise Invalid("residence_valid_from", "is only used for a §104c title (aufenthg_104c)")
    until = deadlines.check_104c(title, until, cmd.residence_valid_from)
    if until and title is None:
        raise Invalid("residence_valid_until", "needs a residence_title")
    changes: dict[str, Any] = {}
    if (title.value if title else None) != client["residence_title"]:
        changes["residence_title"] = title.value if title else None
    if until != client["residence_valid_until"]:
        changes["residence_valid_until"] = until
    return changes


async def hand_over_case(cmd: HandOverCase, deps: Deps) -> dict[str, Any]:
    client_id, acting_org = cmd.client_id, cmd.acting_org
    if not deps.directory.has(cmd.to_org):
        raise Invalid("to_org", f"unknown organisation {cmd.to_org!r}")
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        client = await case_for(conn, client_id, acting_org, for_update=True)
        if cmd.to_org == client["responsible_org"]:
            raise Invalid("to_org", f"{cmd.to_org} is already responsible")
        changes: dict[str, Any] = {"responsible_org": cmd.to_org}
        if cmd.to_regime:
            changes["legal_regime"] = cmd.to_regime.value
        await repo.update_client(conn, client_id, changes, now)
        referral_ids = await repo.move_open_referrals(conn, client_id, acting_org, cmd.to_org, now)
        deadline_ids = await repo.move_open_deadlines(conn, client_id, acting_org, cmd.to_org)
        await deps.emit(
            conn,
            CaseHandedOver(
                client_id=client_id,
                from_org=acting_org,
                to_org=cmd.to_org,
                from_regime=client["legal_regime"],
                to_regime=cmd.to_regime,
                reason=cmd.reason,
                open_referral_ids=referral_ids,
                open_deadline_ids=deadline_ids,
                handed_over_at=now,
            ),
            acting_org,
        )
    log.info(
        "case handed over",
        extra={
            "client_id": str(client_id),
            "from_org": acting_org,
            "to_org": cmd.to_org,
            "referrals": len(referral_ids),
            "deadlines": len(deadline_ids),
        },
    )
    return {
        "client_id": client_id,
        "from_org": acting_org,
        "to_org": cmd.to_org,
        "open_referral_ids": referral_ids,
        "open_deadline_ids": deadline_ids,
        "handed_over_at": now,
    }


async def erase_client(cmd: EraseClient, deps: Deps) -> dict[str, Any]:
    """GDPR Art. 17, for the responsible organisation: unless a legal retention period still runs for a category
    the client has data in (409 saying until when), the client's data key and every ciphertext are destroyed,
    the case stays as a pseudonymous skeleton marked erased, open deadlines are resolved, and
    `lotse.client.erased` goes out in the same transaction (the consent gate forwards it to every recipient).
    Idempotent: asked again, it answers the same and emits nothing."""
    client_id, acting_org = cmd.client_id, cmd.acting_org
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        client = await case_for(conn, client_id, acting_org, for_update=True, erased_ok=True)
        if client["erased_at"] is not None:
            metrics.erasures.labels("repeated").inc()
            return _erasure(client_id, client["erased_at"], client["erased_by_org"])
        recorded = recorded_categories(client, await deps.vault.personal(conn, client_id))
        running = running_retention(recorded, deps.settings.retention_days, await repo.last_activity(conn, client_id), now)
        if running:
            metrics.erasures.labels("retained").inc()
            raise RetentionPeriodRunning(client_id, running)
        await deps.vault.shred(conn, client_id)
        await repo.erase_case(conn, client_id, acting_org, now)
        for d in await repo.open_deadlines(conn, client_id):  # no reminders about an erased client
            await settle_deadline(conn, deps, d, "client erased", acting_org)
        await deps.emit(conn, ClientErased(client_id=client_id, requested_by_org=acting_org, erased_at=now), acting_org)
    metrics.erasures.labels("erased").inc()
    log.info("client erased", extra={"client_id": str(client_id), "acting_org": acting_org})
    return _erasure(client_id, now, acting_org)


def _erasure(client_id: uuid.UUID, erased_at: datetime, by_org: str) -> dict[str, Any]:
    """The answer to an erasure, the same every time it is asked (the time in UTC, as stored)."""
    return {"client_id": client_id, "erased": True, "erased_at": erased_at.astimezone(UTC), "erased_by_org": by_org}
