"""Sending claimed notifications: render, send on their channel, record the outcomes and, for final ones, announce them.

The delivery worker (entrypoints.workers) claims a batch of rows of one channel and calls `send_batch`: the client
contacts the batch needs are asked of intake in one batch request (once per client and organisation; one lookup each,
concurrently and bounded, if that fails); the e-mails
of the batch go to the SMTP sender together (one connection); the outcomes are written in one transaction.
`send_notification` is the same for one row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Sequence
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
from ..adapters.contacts import ClientContact, ContactsUnavailable, NoContact, lookup_all
from ..adapters.keys import SecretUnavailable, open_secret
from ..adapters.senders import Email, webhook_body
from ..adapters.templates import Catalog, Rendered, TemplateMissing
from ..domain.context import build_context
from ..domain.model import Channel, Outcome, RecipientKind, Status, decide
from .deps import Deps
from .triggers import DPO_KEY_PREFIX, SERVICE, SOURCE, address

log = logging.getLogger(__name__)

Contact = ClientContact | NoContact | Exception  # the exception: the lookup failed (ContactsUnavailable: retried)


async def send_notification(row: asyncpg.Record, deps: Deps) -> Status:
    """One attempt for one claimed row (a batch of one)."""
    [status] = await send_batch([row], deps)
    return status


async def send_batch(rows: Sequence[asyncpg.Record], deps: Deps) -> list[Status]:
    """One attempt for each claimed row (all of one channel); records every attempt, the new statuses and, for final
    ones, the events, in one transaction. Returns the statuses in the order of `rows`."""
    if not rows:
        return []
    started = deps.clock.now()
    outcomes = await _attempt_all(rows, deps)
    return await _record(rows, outcomes, started, deps)


async def _attempt_all(rows: Sequence[asyncpg.Record], deps: Deps) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(rows)
    # Asked again before every send (a consent withdrawn or do_not_contact set since recording stops the message),
    # but once per client and organisation in a batch; kept only for this batch.
    contacts = await _contacts(rows, deps)
    emails: list[tuple[int, Email]] = []
    others: list[tuple[int, Awaitable[Outcome]]] = []
    for i, row in enumerate(rows):
        try:
            channel = Channel(row["channel"])
            payload = row["payload"]
            payload = json.loads(payload) if isinstance(payload, str) else dict(payload)
            if channel is Channel.WEBHOOK:
                others.append((i, _guarded(row, _attempt_webhook(row, payload, deps))))
                continue
            message = _message(row, channel, payload, contacts.get(_contact_key(row)), deps)
            if isinstance(message, Outcome):
                outcomes[i] = message
            elif channel is Channel.EMAIL:
                emails.append((i, Email(to=message[0], rendered=message[1], message_id=str(row["id"]))))
            elif deps.sms is None:
                outcomes[i] = Outcome.technical("no SMS gateway configured")
            else:
                others.append((i, _guarded(row, deps.sms.send(to=message[0], rendered=message[1], reference=str(row["id"])))))
        except Exception as exc:  # a bug must not leave the row in limbo
            outcomes[i] = _crashed(row, exc)
    if emails:
        try:
            sent = await deps.email.send_many([e for _, e in emails])
        except Exception as exc:
            sent = [_crashed(rows[i], exc) for i, _ in emails]
        for (i, _), outcome in zip(emails, sent, strict=True):
            outcomes[i] = outcome
    if others:
        for (i, _), outcome in zip(others, await asyncio.gather(*(a for _, a in others)), strict=True):
            outcomes[i] = outcome
    return [o if o is not None else Outcome.technical("internal error (no outcome)") for o in outcomes]


async def _guarded(row: asyncpg.Record, attempt: Awaitable[Outcome]) -> Outcome:
    try:
        return await attempt
    except Exception as exc:
        return _crashed(row, exc)


def _crashed(row: asyncpg.Record, exc: Exception) -> Outcome:
    log.error("notification attempt crashed", extra={"notification_id": str(row["id"])}, exc_info=exc)
    return Outcome.technical(f"internal error ({type(exc).__name__})")


def _contact_key(row: asyncpg.Record) -> tuple[str, str] | None:
    if row["recipient_kind"] != RecipientKind.CLIENT.value or row["channel"] == Channel.WEBHOOK.value:
        return None
    return str(row["client_id"]), row["recipient_org"]


async def _contacts(rows: Sequence[asyncpg.Record], deps: Deps) -> dict[tuple[str, str] | None, Contact]:
    keys = [k for k in map(_contact_key, rows) if k is not None]
    found = await lookup_all(deps.contacts, keys, concurrency=deps.intake_concurrency, batch=deps.intake_batch_lookups)
    return dict(found)


def _message(
    row: asyncpg.Record, channel: Channel, payload: dict[str, Any], contact: Contact | None, deps: Deps
) -> tuple[str, Rendered] | Outcome:
    """The address and the rendered text of an e-mail or SMS, or the outcome that ends this attempt without sending."""
    if row["recipient_kind"] == RecipientKind.CLIENT.value:
        if contact is None or isinstance(contact, ContactsUnavailable):
            return Outcome.retry("intake contact API unavailable")
        if isinstance(contact, Exception):
            return _crashed(row, contact)
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
    return to, rendered


async def _record(rows: Sequence[asyncpg.Record], outcomes: list[Outcome], started: datetime, deps: Deps) -> list[Status]:
    now = deps.clock.now()
    done = [
        repo.Finished(row, outcome, decide(outcome, row["attempts"], deps.policy, now), started, now)
        for row, outcome in zip(rows, outcomes, strict=True)
    ]
    for d in done:
        metrics.attempts.labels(SERVICE, d.row["channel"], d.outcome.kind.value).inc()
    completed: list[repo.Finished] = []
    async with deps.db.pool.acquire() as conn, conn.transaction():
        mine = await repo.finish_attempts(conn, done)
        for d in done:
            if d.row["id"] not in mine:
                log.warning(
                    "notification was re-claimed by another worker or ended meanwhile; outcome recorded as attempt only",
                    extra={"notification_id": str(d.row["id"])},
                )
                continue
            if d.outcome.disable_endpoint and d.row["endpoint_id"]:
                await repo.disable_endpoint(conn, d.row["endpoint_id"], d.outcome.reason, now)
                log.warning("webhook endpoint disabled", extra={"endpoint_id": str(d.row["endpoint_id"]), "reason": d.outcome.reason})
            if d.decision.final:
                completed.append(d)
        # The batch's final events in one round trip.
        await deps.outbox.enqueue_many(conn, [final_event(d.row, d.decision.status, d.outcome.reason, now) for d in completed])
    for d in completed:  # counted once committed
        metrics.completed.labels(SERVICE, d.row["channel"], d.decision.status.value).inc()
    for d in done:
        log.info(
            "notification attempt",
            extra={
                "notification_id": str(d.row["id"]),
                "channel": d.row["channel"],
                "attempt": d.row["attempts"],
                "outcome": d.outcome.kind.value,
                "status": d.decision.status.value,
                "reason": d.outcome.reason,
                "next_attempt_at": d.decision.next_attempt_at.isoformat() if d.decision.next_attempt_at else None,
            },
        )
    return [d.decision.status for d in done]


def final_event(row: asyncpg.Record, status: Status, reason: str | None, now: datetime) -> Envelope[Any]:
    """`lotse.notification.delivered` or `.failed` for a notification row that ended with `status`."""
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
            **common, status=NotificationFailure(status.value), reason=reason, attempts=row["attempts"], failed_at=now
        )
    return new_event(data, source=SOURCE, acting_org=row["recipient_org"], time=now)


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
