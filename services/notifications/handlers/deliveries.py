"""Sending one claimed notification: render, send on its channel, record the outcome and, when final, announce it.

The delivery worker (entrypoints.workers) claims rows and calls `send_notification` for each.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import jinja2

from contracts import Envelope, new_event
from contracts.events import NotificationDelivered, NotificationFailed
from contracts.vocab import NotificationFailure
from lotse_kit.i18n import DEFAULT_LANGUAGE
from lotse_kit.network import OrgDirectory

from ..adapters import metrics
from ..adapters import repository as repo
from ..adapters.contacts import ContactsUnavailable, NoContact
from ..adapters.keys import SecretUnavailable, open_secret
from ..adapters.senders import webhook_body
from ..adapters.templates import Catalog, Rendered, TemplateMissing
from ..domain.context import build_context
from ..domain.model import Channel, Outcome, RecipientKind, Status, decide
from .deps import Deps
from .triggers import DPO_KEY_PREFIX, SERVICE, SOURCE, address

log = logging.getLogger(__name__)


async def send_notification(row: asyncpg.Record, deps: Deps) -> Status:
    """One attempt for a claimed row; records the attempt, the new status and, when final, the event."""
    started = deps.clock.now()
    channel = Channel(row["channel"])
    try:
        outcome = await _attempt(row, channel, deps)
    except Exception as exc:  # a bug must not leave the row in limbo
        log.error("notification attempt crashed", extra={"notification_id": str(row["id"])}, exc_info=True)
        outcome = Outcome.technical(f"internal error ({type(exc).__name__})")
    metrics.attempts.labels(SERVICE, channel.value, outcome.kind.value).inc()
    now = deps.clock.now()
    decision = decide(outcome, row["attempts"], deps.policy, now)
    async with deps.db.pool.acquire() as conn, conn.transaction():
        mine = await repo.finish_attempt(conn, row, outcome, decision, started, now, provider_ref=outcome.reference)
        if not mine:
            log.warning(
                "notification was re-claimed by another worker; outcome recorded as attempt only", extra={"notification_id": str(row["id"])}
            )
            return decision.status
        if outcome.disable_endpoint and row["endpoint_id"]:
            await repo.disable_endpoint(conn, row["endpoint_id"], outcome.reason, now)
            log.warning("webhook endpoint disabled", extra={"endpoint_id": str(row["endpoint_id"]), "reason": outcome.reason})
        if decision.final:
            await deps.outbox.enqueue(conn, _final_event(row, decision.status, outcome, now))
            metrics.completed.labels(SERVICE, channel.value, decision.status.value).inc()
    log.info(
        "notification attempt",
        extra={
            "notification_id": str(row["id"]),
            "channel": channel.value,
            "attempt": row["attempts"],
            "outcome": outcome.kind.value,
            "status": decision.status.value,
            "reason": outcome.reason,
            "next_attempt_at": decision.next_attempt_at.isoformat() if decision.next_attempt_at else None,
        },
    )
    return decision.status


def _final_event(row: asyncpg.Record, status: Status, outcome: Outcome, now: datetime) -> Envelope[Any]:
    common = dict(
        notification_id=row["id"],
        client_id=row["client_id"],
        trigger_event_id=row["trigger_event_id"],
        trigger_type=row["trigger_type"],
        channel=Channel(row["channel"]),
        recipient_kind=RecipientKind(row["recipient_kind"]),
        recipient_org=row["recipient_org"],
        language=row["language"],
    )
    if status is Status.DELIVERED:
        data: Any = NotificationDelivered(**common, delivered_at=now, attempts=row["attempts"])
    else:
        data = NotificationFailed(
            **common, status=NotificationFailure(status.value), reason=outcome.reason, attempts=row["attempts"], failed_at=now
        )
    return new_event(data, source=SOURCE, acting_org=row["recipient_org"], time=now)


async def _attempt(row: asyncpg.Record, channel: Channel, deps: Deps) -> Outcome:
    payload = row["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else dict(payload)
    if channel is Channel.WEBHOOK:
        return await _attempt_webhook(row, payload, deps)

    if row["recipient_kind"] == RecipientKind.CLIENT.value:
        try:
            contact = await deps.contacts.lookup(str(row["client_id"]), row["recipient_org"])
        except ContactsUnavailable:
            return Outcome.retry("intake contact API unavailable")
        if isinstance(contact, NoContact):
            # e.g. consent withdrawn, or the client asked not to be contacted, since the notification was recorded: final
            return Outcome.permanent(contact.reason)
        to = address(contact, channel)
        if not to:
            return Outcome.permanent(f"the consented contact no longer has an address for {channel.value}")
    elif row["recipient_key"].startswith(DPO_KEY_PREFIX):
        org = deps.directory.organisation(row["recipient_org"])
        if org is None:
            return Outcome.technical("organisation unknown in the network file")
        to = org.data_protection_email  # dpo_email, else contact_email
    else:
        org = deps.directory.organisation(row["recipient_org"])
        to = str(org.contact_email) if org and org.contact_email else None
        if not to:
            return Outcome.technical("organisation has no contact_email in the network file")

    try:
        rendered = render(
            deps.catalog,
            deps.directory,
            row["template"],
            channel,
            row["language"] or DEFAULT_LANGUAGE,
            row["trigger_type"],
            payload,
            row["recipient_org"],
        )
    except (TemplateMissing, jinja2.TemplateError, KeyError, ValueError) as exc:
        log.error(
            "template rendering failed",
            extra={"notification_id": str(row["id"]), "template": row["template"], "error": f"{type(exc).__name__}: {exc}"[:300]},
        )
        return Outcome.technical(f"template {row['template']} could not be rendered ({type(exc).__name__})")

    if channel is Channel.EMAIL:
        return await deps.email.send(to=to, rendered=rendered, message_id=str(row["id"]))
    if deps.sms is None:
        return Outcome.technical("no SMS gateway configured")
    return await deps.sms.send(to=to, rendered=rendered, reference=str(row["id"]))


def render(
    catalog: Catalog,
    directory: OrgDirectory,
    template: str,
    channel: Channel,
    language: str,
    trigger_type: str,
    payload: dict[str, Any],
    on_behalf_of: str | None,
) -> Rendered:
    """One message for one recipient: the context from the (scrubbed) event, dates in the network's time zone."""
    ctx = build_context(
        trigger_type,
        payload,
        language=language,
        on_behalf_of=on_behalf_of,
        terms=catalog.term,
        org_name=directory.name,
        service_name=directory.service_name,
        tz=ZoneInfo(directory.timezone),
    )
    return catalog.render(template, channel, language, ctx)


async def _attempt_webhook(row: asyncpg.Record, payload: dict[str, Any], deps: Deps) -> Outcome:
    ep = await repo.get_endpoint(deps.db.pool, row["endpoint_id"], with_secrets=True) if row["endpoint_id"] else None
    if ep is None or ep["status"] != "active":
        return Outcome.permanent("webhook endpoint disabled or deleted")
    now = deps.clock.now()
    current = repo.sealed_secret(ep)
    if current is None:
        return Outcome.technical("webhook endpoint has no secret")
    sealed = [current]
    previous = repo.sealed_previous_secret(ep)
    if previous is not None and ep["previous_secret_expires_at"] and ep["previous_secret_expires_at"] > now:
        sealed.append(previous)
    try:
        keys = [open_secret(deps.secrets, s, ep["id"]) for s in sealed]
    except SecretUnavailable as exc:
        # Our side (a KEK missing from the configuration, or an altered row): nothing is sent unsigned.
        log.error("webhook secret unavailable", extra={"endpoint_id": str(ep["id"]), "error": str(exc)})
        return Outcome.technical(str(exc))
    data = {
        **payload,
        "notification_id": str(row["id"]),
        "trigger_event_id": str(row["trigger_event_id"]),
        "organisation": row["recipient_org"],
    }
    body = webhook_body(row["trigger_type"], row["created_at"], data)
    # The id is stable across retries so that the partner can drop duplicates (Standard Webhooks).
    return await deps.webhooks.send(url=ep["url"], secrets=keys, msg_id=f"msg_{row['id']}", body=body, now=now)
