"""A trigger event arrived: decide recipients and channels from the routing table and record one row each.

Nothing is sent here; the delivery worker sends what is recorded (handlers.deliveries).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import asyncpg

from contracts import Envelope, new_event
from contracts.events import NotificationFailed
from contracts.vocab import NotificationFailure
from lotse_kit.i18n import DEFAULT_LANGUAGE, choose_language
from lotse_kit.network import Organisation

from ..adapters import metrics
from ..adapters import repository as repo
from ..adapters.contacts import ClientContact, NoContact
from ..domain.model import CLIENT_ERASED, Channel, RecipientKind, Status, scrub
from ..domain.routing import Audience, Route, concerned_orgs, orgs_named, routes_for
from .deps import Deps

log = logging.getLogger(__name__)

SOURCE = "/lotse/notifications"
SERVICE = "notifications"
# recipient_key prefixes: client:<id>, org:<id> (the team's contact_email), dpo:<id> (its data-protection contact), endpoint:<uuid>
DPO_KEY_PREFIX = "dpo:"


async def record_notifications(env: Envelope[Any], conn: asyncpg.Connection, deps: Deps) -> None:
    """Runs in the consumer's inbox transaction: records one row per recipient and channel, sends nothing.

    Idempotent twice over: the kit skips an event id it has processed, and the unique key
    (trigger event, recipient, channel) stops a second row should the event come by another path.
    """
    data = env.data.model_dump(mode="json")
    payload = scrub(env.type, data)
    if env.type == "lotse.referral.sent":
        await repo.remember_referral(conn, data["referral_id"], data["from_org"], data["to_org"], data.get("service"), data["client_id"])
    elif env.type in ("lotse.referral.accepted", "lotse.referral.declined"):
        known = await repo.referral(conn, data.get("referral_id"))
        if known:
            payload.setdefault("service", known["service"])
            if not payload.get("from_org"):
                payload["from_org"] = known["from_org"]
    concerned = concerned_orgs(payload)
    recorded = 0
    for route in routes_for(env.type):
        orgs = orgs_named(route, payload)
        if not orgs:
            log.warning(
                "trigger names no organisation for a route; skipped",
                extra={"type": env.type, "field": route.orgs, "template": route.template},
            )
            continue
        if route.audience is Audience.CLIENT:
            recorded += await _record_for_client(conn, env, route, orgs[0], payload, concerned, deps)
        else:
            for org in orgs:
                recorded += await _record_for_org(conn, env, route, org, deps.directory.organisation(org), payload, concerned, deps)
    if recorded:
        await repo.wake_workers(conn)


async def _record_for_client(
    conn: asyncpg.Connection, env: Envelope[Any], route: Route, org: str, payload: dict[str, Any], concerned: list[str], deps: Deps
) -> int:
    client_id = payload.get("client_id")
    base = dict(
        trigger_event_id=env.id,
        trigger_type=env.type,
        client_id=client_id,
        recipient_kind=RecipientKind.CLIENT.value,
        recipient_org=org,
        recipient_key=f"client:{client_id}",
        template=route.template,
        payload=payload,
        concerned_orgs=concerned,
    )
    if client_id and await repo.client_erased(conn, client_id):
        # A trigger that arrives after the erasure (another topic, another partition): nothing for the client, not even a question.
        failed = repo.NewNotification(
            **{**base, "payload": {}}, channel=route.channels[0], language=None, status=Status.PERMANENT_FAILURE, reason=CLIENT_ERASED
        )
        return await _record_failed(conn, failed, deps)
    # Raises ContactsUnavailable (an OSError) while intake is down: the kit retries the event until it answers.
    # A client without consent, or who asked not to be contacted (do_not_contact), gets nothing on any channel: one
    # final row records why (never retried), announced as lotse.notification.failed.
    contact = await deps.contacts.lookup(str(client_id), org)
    if isinstance(contact, NoContact):
        return await _record_failed(
            conn,
            repo.NewNotification(**base, channel=route.channels[0], language=None, status=Status.PERMANENT_FAILURE, reason=contact.reason),
            deps,
        )
    language = choose_language(contact.preferred_language, contact.languages)
    channels = [c for c in route.channels if deps.channel_enabled(c) and address(contact, c)]
    if not channels:
        return await _record_failed(
            conn,
            repo.NewNotification(
                **base,
                channel=route.channels[0],
                language=language,
                status=Status.PERMANENT_FAILURE,
                reason="the consented contact has no address for these channels",
            ),
            deps,
        )
    n = 0
    for channel in channels:
        if await repo.insert_notification(conn, repo.NewNotification(**base, channel=channel, language=language), deps.clock.now()):
            metrics.recorded.labels(SERVICE, channel.value, "client").inc()
            n += 1
    return n


async def _record_for_org(
    conn: asyncpg.Connection,
    env: Envelope[Any],
    route: Route,
    org: str,
    info: Organisation | None,
    payload: dict[str, Any],
    concerned: list[str],
    deps: Deps,
) -> int:
    language = org_language(info)
    now = deps.clock.now()
    dpo = route.audience is Audience.DATA_PROTECTION
    n = 0
    for channel in route.channels:
        if channel is Channel.WEBHOOK:
            for ep in await repo.endpoints_for(conn, org, env.type):
                new = repo.NewNotification(
                    trigger_event_id=env.id,
                    trigger_type=env.type,
                    client_id=payload.get("client_id"),
                    recipient_kind=RecipientKind.PARTNER_SYSTEM.value,
                    recipient_org=org,
                    recipient_key=f"endpoint:{ep['id']}",
                    endpoint_id=ep["id"],
                    channel=channel,
                    template=None,
                    language=None,
                    payload=payload,
                    concerned_orgs=concerned,
                )
                if await repo.insert_notification(conn, new, now):
                    metrics.recorded.labels(SERVICE, channel.value, "partner_system").inc()
                    n += 1
            continue
        new = repo.NewNotification(
            trigger_event_id=env.id,
            trigger_type=env.type,
            client_id=payload.get("client_id"),
            recipient_kind=RecipientKind.ORGANISATION.value,
            recipient_org=org,
            recipient_key=f"{DPO_KEY_PREFIX}{org}" if dpo else f"org:{org}",
            channel=channel,
            template=route.template,
            language=language,
            payload=payload,
            concerned_orgs=concerned,
        )
        if info is None or not info.contact_email:
            why = "organisation unknown in the network file" if info is None else "organisation has no contact_email in the network file"
            n += await _record_failed(conn, replace(new, status=Status.TECHNICAL_FAILURE, reason=why), deps)
            continue
        if await repo.insert_notification(conn, new, now):
            metrics.recorded.labels(SERVICE, channel.value, "data_protection" if dpo else "organisation").inc()
            n += 1
    return n


async def _record_failed(conn: asyncpg.Connection, new: repo.NewNotification, deps: Deps) -> int:
    """A notification that cannot even be attempted: recorded with its final status, so caseworkers see it, and announced."""
    now = deps.clock.now()
    notification_id = await repo.insert_notification(conn, new, now)
    if notification_id is None:
        return 0
    metrics.completed.labels(SERVICE, new.channel.value, new.status.value).inc()
    log.warning(
        "notification cannot be sent",
        extra={
            "notification_id": str(notification_id),
            "channel": new.channel.value,
            "recipient_kind": new.recipient_kind,
            "reason": new.reason,
        },
    )
    data = NotificationFailed(
        notification_id=notification_id,
        client_id=new.client_id,
        trigger_event_id=new.trigger_event_id,
        trigger_type=new.trigger_type,
        channel=new.channel,
        recipient_kind=RecipientKind(new.recipient_kind),
        recipient_org=new.recipient_org,
        language=new.language,
        status=NotificationFailure(new.status.value),
        reason=new.reason or new.status.value,
        attempts=0,
        failed_at=now,
    )
    await deps.outbox.enqueue(conn, new_event(data, source=SOURCE, acting_org=new.recipient_org, time=now))
    return 0


def org_language(info: Organisation | None) -> str:
    """Caseworker messages go out in the organisation's first supported language, German by default."""
    return choose_language(info.languages if info else (), DEFAULT_LANGUAGE)


def address(contact: ClientContact, channel: Channel) -> str | None:
    return contact.email if channel is Channel.EMAIL else contact.phone if channel is Channel.SMS else None
