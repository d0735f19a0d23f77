"""A trigger event arrived: decide recipients and channels from the routing table and record one row each.

Nothing is sent here; the delivery worker sends what is recorded (handlers.deliveries).

`prepare_triggers` is the subscription's `prepare` (lotse_kit.declaration.Prepare): before a consumer batch's
transaction opens, it asks intake for the contacts of every client the batch's triggers will notify, in one request
(one lookup each, concurrently and bounded, if that fails), so that the handlers do not ask one by one inside the transaction. What it fetched is kept only for
that batch (`lotse_kit.consumer.prepared()`); a handler that finds no prepared answer asks intake itself.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from contracts import Envelope, new_event
from contracts.events import NotificationFailed
from contracts.vocab import NotificationFailure
from lotse_kit.consumer import prepared
from lotse_kit.i18n import DEFAULT_LANGUAGE, choose_language
from lotse_kit.network import Organisation

from ..adapters import metrics
from ..adapters import repository as repo
from ..adapters.contacts import ClientContact, NoContact, lookup_all
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
    elif env.type in REFERRAL_ANSWERS:
        _complete_answer(payload, await repo.referral(conn, data.get("referral_id")))
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
        batch = prepared()
        if not isinstance(batch, PreparedTriggers):
            await repo.wake_workers(conn, deps.db.schema)
        elif not batch.woken:  # one NOTIFY per batch transaction is enough (PostgreSQL folds identical ones anyway)
            await repo.wake_workers(conn, deps.db.schema)
            batch.woken = True


REFERRAL_ANSWERS = ("lotse.referral.accepted", "lotse.referral.declined")


def _complete_answer(payload: dict[str, Any], known: dict[str, Any] | None) -> None:
    """Referral answers may lack `from_org` and never name the service: both from the remembered referral."""
    if known:
        payload.setdefault("service", known["service"])
        if not payload.get("from_org"):
            payload["from_org"] = known["from_org"]


# ---------------------------------------------------------------- per batch
@dataclass
class PreparedTriggers:
    """What `prepare_triggers` fetched for one consumer batch. Never stored: it lives as long as the batch."""

    contacts: dict[tuple[str, str], ClientContact | NoContact] = field(default_factory=dict)
    woken: bool = False  # the delivery workers were notified in this batch's transaction

    def contact(self, client_id: str, org: str) -> ClientContact | NoContact | None:
        return self.contacts.get((client_id, org))


async def prepare_triggers(envs: Sequence[Envelope[Any]], deps: Deps) -> PreparedTriggers:
    """The contacts (client, on behalf of which organisation) the batch's client notifications will need, fetched
    from intake in one batch request (`adapters.contacts.lookup_all`; if that fails, one lookup each, at most
    `deps.intake_concurrency` at once). No effects: nothing is written. Clients
    erased (before, or in this batch) are not asked about; a lookup that fails is left out (the handler asks again
    and meets the failure there)."""
    wanted = await _clients_to_contact(envs, deps)
    out = PreparedTriggers()
    if not wanted:
        return out
    found = await lookup_all(deps.contacts, wanted, concurrency=deps.intake_concurrency, batch=deps.intake_batch_lookups)
    for key, contact in found.items():
        if isinstance(contact, Exception):  # e.g. intake unavailable: the handler's own lookup decides
            log.info("contact lookup in prepare failed; left to the handler", extra={"error": f"{type(contact).__name__}"})
        else:
            out.contacts[key] = contact
    return out


async def _clients_to_contact(envs: Sequence[Envelope[Any]], deps: Deps) -> list[tuple[str, str]]:
    """(client id, organisation) for every client route of the batch's triggers, as `record_notifications` will ask."""
    erased_here = {str(e.data.client_id) for e in envs if e.type == "lotse.client.erased"}
    sent_here: dict[str, dict[str, Any]] = {}
    unknown_referrals: set[uuid.UUID] = set()
    for env in envs:
        if env.type == "lotse.referral.sent":
            sent_here[str(env.data.referral_id)] = {"from_org": env.data.from_org, "service": env.data.service}
        elif env.type in REFERRAL_ANSWERS and not env.data.from_org and str(env.data.referral_id) not in sent_here:
            unknown_referrals.add(env.data.referral_id)
    known = dict(sent_here)
    if unknown_referrals:
        known.update(await repo.referrals(deps.db.pool, unknown_referrals))
    wanted: dict[tuple[str, str], None] = {}
    for env in envs:
        routes = [r for r in routes_for(env.type) if r.audience is Audience.CLIENT]
        if not routes:
            continue
        payload = scrub(env.type, env.data.model_dump(mode="json"))
        if env.type in REFERRAL_ANSWERS:
            _complete_answer(payload, known.get(str(payload.get("referral_id"))))
        client_id = payload.get("client_id")
        if not client_id or str(client_id) in erased_here:
            continue
        for route in routes:
            orgs = orgs_named(route, payload)
            if orgs:
                wanted[(str(client_id), orgs[0])] = None
    if not wanted:
        return []
    # Erased clients: not even a question to intake (see forget_client).
    gone = await repo.erased_among(deps.db.pool, {c for c, _ in wanted})
    return [(c, o) for c, o in wanted if c not in gone]


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
    batch = prepared()
    contact = batch.contact(str(client_id), org) if isinstance(batch, PreparedTriggers) else None
    if contact is None:  # no prepare (one event at a time), or it left this one out
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
