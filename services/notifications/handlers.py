"""Use cases: one function per event or command.

record_notifications  a trigger event arrived: decide recipients and channels (routing table), record rows
send_notification     the delivery worker sends one claimed notification and records the outcome
register_endpoint, rotate_endpoint_secret, enable_endpoint, remove_endpoint: webhook endpoint commands
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import jinja2

from contracts import Envelope, new_event
from contracts.events import NotificationDelivered, NotificationFailed
from contracts.topics import NOTIFICATIONS
from contracts.vocab import NotificationFailure
from lotse_kit import outbox

from . import metrics
from .adapters import postgres as pg
from .adapters.contacts import ClientContact, Contacts, ContactsUnavailable, NoContact
from .adapters.network import OrgDirectory, OrgInfo
from .adapters.senders import EmailSender, SmsSender, WebhookSender, webhook_body
from .adapters.templates import Catalog, Rendered, TemplateMissing
from .domain.context import build_context
from .domain.model import SUPPORTED_LANGUAGES, Channel, Outcome, RecipientKind, RetryPolicy, Status, choose_language, decide, scrub
from .domain.routing import Audience, Route, concerned_orgs, orgs_named, routes_for

log = logging.getLogger(__name__)

SOURCE = "/lotse/notifications"
SERVICE = "notifications"


@dataclass
class Deps:
    """Everything the use cases need; bootstrap builds it, tests swap parts for fakes."""

    catalog: Catalog
    directory: Callable[[], OrgDirectory]
    contacts: Contacts
    email: EmailSender
    sms: SmsSender | None
    webhooks: WebhookSender
    policy: RetryPolicy
    secret_rotation_overlap_s: float = 86400.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def channel_enabled(self, channel: Channel) -> bool:
        return channel is not Channel.SMS or self.sms is not None


# ====================================================================== recording (consumer)
async def record_notifications(conn: asyncpg.Connection, env: Envelope[Any], deps: Deps) -> int:
    """Runs in the consumer's inbox transaction: records one row per recipient and channel, sends nothing.

    Idempotent twice over: the kit skips an event id it has processed, and the unique key
    (trigger event, recipient, channel) stops a second row should the event come by another path.
    """
    data = env.data.model_dump(mode="json")
    payload = scrub(env.type, data)
    if env.type == "lotse.referral.sent":
        await pg.remember_referral(conn, data["referral_id"], data["from_org"], data["to_org"], data.get("service"))
    elif env.type in ("lotse.referral.accepted", "lotse.referral.declined"):
        known = await pg.referral(conn, data.get("referral_id"))
        if known:
            payload.setdefault("service", known["service"])
            if not payload.get("from_org"):
                payload["from_org"] = known["from_org"]
    directory = deps.directory()
    concerned = concerned_orgs(payload)
    recorded = 0
    for route in routes_for(env.type):
        orgs = orgs_named(route, payload)
        if not orgs:
            log.warning("trigger names no organisation for a route; skipped", extra={"type": env.type, "field": route.orgs, "template": route.template})
            continue
        if route.audience is Audience.CLIENT:
            recorded += await _record_for_client(conn, env, route, orgs[0], payload, concerned, deps)
        else:
            for org in orgs:
                recorded += await _record_for_org(conn, env, route, org, directory.get(org), payload, concerned)
    if recorded:
        await pg.wake_workers(conn)
    return recorded


async def _record_for_client(conn: asyncpg.Connection, env: Envelope[Any], route: Route, org: str, payload: dict[str, Any], concerned: list[str], deps: Deps) -> int:
    client_id = payload.get("client_id")
    base = dict(trigger_event_id=env.id, trigger_type=env.type, client_id=client_id, recipient_kind=RecipientKind.CLIENT.value,
                recipient_org=org, recipient_key=f"client:{client_id}", template=route.template, payload=payload, concerned_orgs=concerned)
    # Raises ContactsUnavailable (an OSError) while intake is down: the kit retries the event until it answers.
    contact = await deps.contacts.lookup(str(client_id), org)
    if isinstance(contact, NoContact):
        return await _record_failed(conn, pg.NewNotification(**base, channel=route.channels[0], language=None,
                                                             status=Status.PERMANENT_FAILURE, reason=contact.reason))
    language = choose_language(contact.preferred_language, contact.languages)
    channels = [c for c in route.channels if deps.channel_enabled(c) and _address(contact, c)]
    if not channels:
        return await _record_failed(conn, pg.NewNotification(**base, channel=route.channels[0], language=language,
                                                             status=Status.PERMANENT_FAILURE, reason="the consented contact has no address for these channels"))
    n = 0
    for channel in channels:
        if await pg.insert_notification(conn, pg.NewNotification(**base, channel=channel, language=language)):
            metrics.recorded.labels(SERVICE, channel.value, "client").inc()
            n += 1
    return n


async def _record_for_org(conn: asyncpg.Connection, env: Envelope[Any], route: Route, org: str, info: OrgInfo | None,
                          payload: dict[str, Any], concerned: list[str]) -> int:
    language = org_language(info)
    n = 0
    for channel in route.channels:
        if channel is Channel.WEBHOOK:
            for ep in await pg.endpoints_for(conn, org, env.type):
                new = pg.NewNotification(
                    trigger_event_id=env.id, trigger_type=env.type, client_id=payload.get("client_id"),
                    recipient_kind=RecipientKind.PARTNER_SYSTEM.value, recipient_org=org, recipient_key=f"endpoint:{ep['id']}",
                    endpoint_id=ep["id"], channel=channel, template=None, language=None, payload=payload, concerned_orgs=concerned,
                )
                if await pg.insert_notification(conn, new):
                    metrics.recorded.labels(SERVICE, channel.value, "partner_system").inc()
                    n += 1
            continue
        new = pg.NewNotification(
            trigger_event_id=env.id, trigger_type=env.type, client_id=payload.get("client_id"),
            recipient_kind=RecipientKind.ORGANISATION.value, recipient_org=org, recipient_key=f"org:{org}",
            channel=channel, template=route.template, language=language, payload=payload, concerned_orgs=concerned,
        )
        if info is None or not info.contact_email:
            why = "organisation unknown in the network file" if info is None else "organisation has no contact_email in the network file"
            n += await _record_failed(conn, replace(new, status=Status.TECHNICAL_FAILURE, reason=why))
            continue
        if await pg.insert_notification(conn, new):
            metrics.recorded.labels(SERVICE, channel.value, "organisation").inc()
            n += 1
    return n


async def _record_failed(conn: asyncpg.Connection, new: pg.NewNotification) -> int:
    """A notification that cannot even be attempted: recorded with its final status, so caseworkers see it, and announced."""
    notification_id = await pg.insert_notification(conn, new)
    if notification_id is None:
        return 0
    metrics.completed.labels(SERVICE, new.channel.value, new.status.value).inc()
    log.warning("notification cannot be sent", extra={"notification_id": str(notification_id), "channel": new.channel.value,
                                                     "recipient_kind": new.recipient_kind, "reason": new.reason})
    data = NotificationFailed(
        notification_id=notification_id, client_id=new.client_id, trigger_event_id=new.trigger_event_id, trigger_type=new.trigger_type,
        channel=new.channel, recipient_kind=RecipientKind(new.recipient_kind), recipient_org=new.recipient_org, language=new.language,
        status=NotificationFailure(new.status.value), reason=new.reason or new.status.value, attempts=0, failed_at=datetime.now(UTC),
    )
    await outbox.enqueue(conn, new_event(data, source=SOURCE, acting_org=new.recipient_org), NOTIFICATIONS)
    return 0


def org_language(info: OrgInfo | None) -> str:
    """Caseworker messages go out in the organisation's first supported language, German by default."""
    for tag in info.languages if info else ():
        primary = tag.split("-")[0].lower()
        if primary in SUPPORTED_LANGUAGES:
            return primary
    return "de"


def _address(contact: ClientContact, channel: Channel) -> str | None:
    return contact.email if channel is Channel.EMAIL else contact.phone if channel is Channel.SMS else None


# ====================================================================== sending (worker)
async def send_notification(pool: asyncpg.Pool, row: asyncpg.Record, deps: Deps) -> Status:
    """One attempt for a claimed row; records the attempt, the new status and, when final, the event."""
    started = deps.clock()
    channel = Channel(row["channel"])
    try:
        outcome = await _attempt(pool, row, channel, deps)
    except Exception as exc:  # a bug must not leave the row in limbo
        log.error("notification attempt crashed", extra={"notification_id": str(row["id"])}, exc_info=True)
        outcome = Outcome.technical(f"internal error ({type(exc).__name__})")
    metrics.attempts.labels(SERVICE, channel.value, outcome.kind.value).inc()
    now = deps.clock()
    decision = decide(outcome, row["attempts"], deps.policy, now)
    async with pool.acquire() as conn, conn.transaction():
        mine = await pg.finish_attempt(conn, row, outcome, decision, started, provider_ref=outcome.reference)
        if not mine:
            log.warning("notification was re-claimed by another worker; outcome recorded as attempt only", extra={"notification_id": str(row["id"])})
            return decision.status
        if outcome.disable_endpoint and row["endpoint_id"]:
            await pg.disable_endpoint(conn, row["endpoint_id"], outcome.reason)
            log.warning("webhook endpoint disabled", extra={"endpoint_id": str(row["endpoint_id"]), "reason": outcome.reason})
        if decision.final:
            await outbox.enqueue(conn, _final_event(row, decision.status, outcome, now), NOTIFICATIONS)
            metrics.completed.labels(SERVICE, channel.value, decision.status.value).inc()
    log.info(
        "notification attempt", extra={"notification_id": str(row["id"]), "channel": channel.value, "attempt": row["attempts"],
                                       "outcome": outcome.kind.value, "status": decision.status.value, "reason": outcome.reason,
                                       "next_attempt_at": decision.next_attempt_at.isoformat() if decision.next_attempt_at else None},
    )
    return decision.status


def _final_event(row: asyncpg.Record, status: Status, outcome: Outcome, now: datetime) -> Envelope[Any]:
    common = dict(
        notification_id=row["id"], client_id=row["client_id"], trigger_event_id=row["trigger_event_id"], trigger_type=row["trigger_type"],
        channel=Channel(row["channel"]), recipient_kind=RecipientKind(row["recipient_kind"]), recipient_org=row["recipient_org"],
        language=row["language"],
    )
    if status is Status.DELIVERED:
        data: Any = NotificationDelivered(**common, delivered_at=now, attempts=row["attempts"])
    else:
        data = NotificationFailed(**common, status=NotificationFailure(status.value), reason=outcome.reason, attempts=row["attempts"], failed_at=now)
    return new_event(data, source=SOURCE, acting_org=row["recipient_org"])


async def _attempt(pool: asyncpg.Pool, row: asyncpg.Record, channel: Channel, deps: Deps) -> Outcome:
    payload = row["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else dict(payload)
    if channel is Channel.WEBHOOK:
        return await _attempt_webhook(pool, row, payload, deps)

    directory = deps.directory()
    if row["recipient_kind"] == RecipientKind.CLIENT.value:
        try:
            contact = await deps.contacts.lookup(str(row["client_id"]), row["recipient_org"])
        except ContactsUnavailable:
            return Outcome.retry("intake contact API unavailable")
        if isinstance(contact, NoContact):
            return Outcome.permanent(contact.reason)  # e.g. consent withdrawn since the notification was recorded
        address = _address(contact, channel)
        if not address:
            return Outcome.permanent(f"the consented contact no longer has an address for {channel.value}")
    else:
        info = directory.get(row["recipient_org"])
        address = info.contact_email if info else None
        if not address:
            return Outcome.technical("organisation has no contact_email in the network file")

    try:
        rendered = render(deps.catalog, directory, row["template"], channel, row["language"] or "de", row["trigger_type"], payload, row["recipient_org"])
    except (TemplateMissing, jinja2.TemplateError, KeyError, ValueError) as exc:
        log.error("template rendering failed", extra={"notification_id": str(row["id"]), "template": row["template"], "error": f"{type(exc).__name__}: {exc}"[:300]})
        return Outcome.technical(f"template {row['template']} could not be rendered ({type(exc).__name__})")

    if channel is Channel.EMAIL:
        return await deps.email.send(to=address, rendered=rendered, message_id=str(row["id"]))
    if deps.sms is None:
        return Outcome.technical("no SMS gateway configured")
    return await deps.sms.send(to=address, rendered=rendered, reference=str(row["id"]))


def render(catalog: Catalog, directory: OrgDirectory, template: str, channel: Channel, language: str, trigger_type: str,
           payload: dict[str, Any], on_behalf_of: str | None) -> Rendered:
    try:
        tz = ZoneInfo(directory.timezone)
    except Exception:  # noqa: BLE001
        tz = ZoneInfo("Europe/Berlin")
    ctx = build_context(trigger_type, payload, language=language, on_behalf_of=on_behalf_of, terms=catalog.term,
                        org_name=directory.name, service_name=directory.service_name, tz=tz)
    return catalog.render(template, channel, language, ctx)


async def _attempt_webhook(pool: asyncpg.Pool, row: asyncpg.Record, payload: dict[str, Any], deps: Deps) -> Outcome:
    ep = await pg.get_endpoint(pool, row["endpoint_id"], with_secrets=True) if row["endpoint_id"] else None
    if ep is None or ep["status"] != "active":
        return Outcome.permanent("webhook endpoint disabled or deleted")
    now = deps.clock()
    keys = [ep["secret"]]
    if ep["previous_secret"] and ep["previous_secret_expires_at"] and ep["previous_secret_expires_at"] > now:
        keys.append(ep["previous_secret"])
    data = {**payload, "notification_id": str(row["id"]), "trigger_event_id": str(row["trigger_event_id"]), "organisation": row["recipient_org"]}
    body = webhook_body(row["trigger_type"], row["created_at"], data)
    # The id is stable across retries so that the partner can drop duplicates (Standard Webhooks).
    return await deps.webhooks.send(url=ep["url"], secrets=keys, msg_id=f"msg_{row['id']}", body=body, now=now)


# ====================================================================== webhook endpoint commands
def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def register_endpoint(pool: asyncpg.Pool, *, org_id: str, url: str, description: str | None, event_types: list[str] | None) -> tuple[asyncpg.Record, str]:
    secret = new_secret()
    async with pool.acquire() as conn:
        row = await pg.create_endpoint(conn, org_id=org_id, url=url, description=description, event_types=event_types, secret=secret)
    log.info("webhook endpoint registered", extra={"endpoint_id": str(row["id"]), "org": org_id})
    return row, secret


async def rotate_endpoint_secret(pool: asyncpg.Pool, endpoint_id: uuid.UUID, overlap_s: float) -> tuple[asyncpg.Record | None, str]:
    secret = new_secret()
    async with pool.acquire() as conn:
        row = await pg.rotate_secret(conn, endpoint_id, secret, overlap_s)
    if row is not None:
        log.info("webhook secret rotated", extra={"endpoint_id": str(endpoint_id), "previous_valid_until": row["previous_secret_expires_at"].isoformat()})
    return row, secret
