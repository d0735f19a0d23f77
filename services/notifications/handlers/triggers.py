"""A trigger event arrived: decide recipients and channels from the routing table and record one row each.

Nothing is sent here; the delivery worker sends what is recorded (handlers.deliveries).

`prepare_triggers` is the subscription's `prepare` (lotse_kit.declaration.Prepare): before a consumer batch's
transaction opens, it asks intake for the contacts of every client the batch's triggers will notify, in one request
(one lookup each, concurrently and bounded, if that fails), so that the handlers do not ask one by one inside the transaction. What it fetched is kept only for
that batch (`lotse_kit.consumer.prepared()`); a handler that finds no prepared answer asks intake itself.

It also names the organisations whose webhook endpoints, the clients whose erasure and the referrals whose remembered
details (for answers) the batch's handlers will need to know. Those are read by the batch's first handler, inside the
batch's transaction, in one query each (`BatchFacts`), not by `prepare`: an endpoint registered or a client erased
after `prepare` but before the transaction is honoured, as it was when every handler asked for itself. What the
batch's own handlers change there is noted as they change it: a referral remembered (`record_notifications`), a
client erased and their referrals forgotten (`forget_client`). Each event's rows are recorded in one statement.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
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
from ..domain.routing import Audience, Route, concerned_orgs, endpoint_takes, orgs_named, routes_for, webhook_orgs
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
    The event's rows are decided first and recorded together, in one statement, in the order decided.
    """
    data = env.data.model_dump(mode="json")
    payload = scrub(env.type, data)
    batch = prepared()
    batch = batch if isinstance(batch, PreparedTriggers) else None
    referral_id = str(data["referral_id"]) if env.type in REFERRAL_ANSWERS and data.get("referral_id") else None
    facts = await _facts(conn, batch, referrals={referral_id} if referral_id else set())
    if env.type == "lotse.referral.sent":
        await repo.remember_referral(conn, data["referral_id"], data["from_org"], data["to_org"], data.get("service"), data["client_id"])
        facts.remember_referral(data)
    elif env.type in REFERRAL_ANSWERS:
        _complete_answer(payload, facts.referrals.get(referral_id) if referral_id else None)
    concerned = concerned_orgs(payload)
    client_id = payload.get("client_id")
    has_client_route = any(r.audience is Audience.CLIENT for r in routes_for(env.type))
    # What prepare did not foresee (e.g. an answer's from_org it could not know): read now.
    await facts.learn(
        conn, orgs=set(webhook_orgs(env.type, payload)), clients={str(client_id)} if client_id and has_client_route else set()
    )
    rows: list[tuple[repo.NewNotification, datetime]] = []
    for route in routes_for(env.type):
        orgs = orgs_named(route, payload)
        if not orgs:
            log.warning(
                "trigger names no organisation for a route; skipped",
                extra={"type": env.type, "field": route.orgs, "template": route.template},
            )
            continue
        if route.audience is Audience.CLIENT:
            rows += await _client_rows(env, route, orgs[0], payload, concerned, facts, batch, deps)
        else:
            for org in orgs:
                rows += _org_rows(env, route, org, deps.directory.organisation(org), payload, concerned, facts, deps)
    recorded = await _record(conn, rows, deps)
    if recorded:
        if batch is None:
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
class BatchFacts:
    """Read from the database inside the transaction that records the notifications (see the module docstring), and
    kept up to date with what the batch's own handlers change there (`remember_referral`, `forget`). Holds an answer
    only for the organisations, clients and referrals it was asked about."""

    endpoints: dict[str, list[asyncpg.Record]] = field(default_factory=dict)  # org -> its active endpoints (id, event_types)
    erased: dict[str, bool] = field(default_factory=dict)  # client id -> erased
    referrals: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # referral id -> remembered (None: unknown)

    async def learn(
        self, conn: asyncpg.Connection, *, orgs: Iterable[str] = (), clients: Iterable[str] = (), referrals: Iterable[str] = ()
    ) -> None:
        """Reads what is not known yet of these organisations' endpoints, clients' erasure and remembered referrals:
        one query each, none for what is known."""
        new_orgs = set(orgs) - self.endpoints.keys()
        new_clients = set(clients) - self.erased.keys()
        new_referrals = set(referrals) - self.referrals.keys()
        if new_orgs:
            self.endpoints.update(await repo.active_endpoints(conn, new_orgs))
        if new_clients:
            gone = await repo.erased_among(conn, new_clients)
            self.erased.update({c: c in gone for c in new_clients})
        if new_referrals:
            known = await repo.referrals(conn, new_referrals)
            self.referrals.update({r: known.get(r) for r in new_referrals})

    def remember_referral(self, data: dict[str, Any]) -> None:
        """What `repo.remember_referral` just wrote for a `lotse.referral.sent` (its data as JSON)."""
        self.referrals[str(data["referral_id"])] = {
            "from_org": data["from_org"],
            "to_org": data["to_org"],
            "service": data.get("service"),
            "client_id": str(data["client_id"]),
        }

    def forget(self, client_id: str) -> None:
        """What `repo.forget_client` just did: the client is erased, their referrals are gone."""
        self.erased[client_id] = True
        for referral_id, known in self.referrals.items():
            if known is not None and known["client_id"] == client_id:
                self.referrals[referral_id] = None


@dataclass
class PreparedTriggers:
    """What `prepare_triggers` fetched for one consumer batch. Never stored: it lives as long as the batch."""

    contacts: dict[tuple[str, str], ClientContact | NoContact] = field(default_factory=dict)
    woken: bool = False  # the delivery workers were notified in this batch's transaction
    # Named by prepare, read by the first handler in the batch's transaction (`facts`), not before it.
    orgs: set[str] = field(default_factory=set)  # organisations whose webhook endpoints the batch may notify
    clients: set[str] = field(default_factory=set)  # clients the batch may notify
    referrals: set[str] = field(default_factory=set)  # referrals the batch's answers answer
    facts: BatchFacts | None = None

    def contact(self, client_id: str, org: str) -> ClientContact | NoContact | None:
        return self.contacts.get((client_id, org))

    def note_erased(self, client_id: str) -> None:
        """A client erased by an event of this batch: later triggers of the batch record nothing for them."""
        if self.facts is not None:
            self.facts.forget(client_id)


async def _facts(conn: asyncpg.Connection, batch: PreparedTriggers | None, *, referrals: set[str]) -> BatchFacts:
    """What the handlers need to know, read inside the transaction: for a batch, by its first handler, for every event
    the batch's `prepare` named; one event at a time, fresh for each (the handler then asks for what it needs)."""
    if batch is None:
        facts = BatchFacts()
        await facts.learn(conn, referrals=referrals)
        return facts
    if batch.facts is None:
        batch.facts = BatchFacts()
        await batch.facts.learn(conn, orgs=batch.orgs, clients=batch.clients, referrals=batch.referrals | referrals)
    else:
        await batch.facts.learn(conn, referrals=referrals)
    return batch.facts


def note_client_erased(client_id: str) -> None:
    """Called by `forget_client` in the consumer's transaction: the batch's later triggers see the erasure."""
    batch = prepared()
    if isinstance(batch, PreparedTriggers):
        batch.note_erased(client_id)


async def prepare_triggers(envs: Sequence[Envelope[Any]], deps: Deps) -> PreparedTriggers:
    """The contacts (client, on behalf of which organisation) the batch's client notifications will need, fetched
    from intake in one batch request (`adapters.contacts.lookup_all`; if that fails, one lookup each, at most
    `deps.intake_concurrency` at once). No effects: nothing is written. Clients
    erased (before, or in this batch) are not asked about; a lookup that fails is left out (the handler asks again
    and meets the failure there). Also names the organisations and clients whose endpoints and erasure the
    batch's first handler reads inside the transaction."""
    out = PreparedTriggers()
    wanted = await _clients_to_contact(envs, deps, out)
    if not wanted:
        return out
    found = await lookup_all(deps.contacts, wanted, concurrency=deps.intake_concurrency, batch=deps.intake_batch_lookups)
    for key, contact in found.items():
        if isinstance(contact, Exception):  # e.g. intake unavailable: the handler's own lookup decides
            log.info("contact lookup in prepare failed; left to the handler", extra={"error": f"{type(contact).__name__}"})
        else:
            out.contacts[key] = contact
    return out


async def _clients_to_contact(envs: Sequence[Envelope[Any]], deps: Deps, out: PreparedTriggers) -> list[tuple[str, str]]:
    """(client id, organisation) for every client route of the batch's triggers, as `record_notifications` will ask;
    on the way, the organisations and clients the batch names go into `out.orgs` and `out.clients`."""
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
        routes = routes_for(env.type)
        if not routes:
            continue
        payload = scrub(env.type, env.data.model_dump(mode="json"))
        if env.type in REFERRAL_ANSWERS:
            out.referrals.add(str(env.data.referral_id))
            _complete_answer(payload, known.get(str(payload.get("referral_id"))))
        out.orgs.update(webhook_orgs(env.type, payload))
        client_routes = [r for r in routes if r.audience is Audience.CLIENT]
        client_id = payload.get("client_id")
        if not client_routes or not client_id:
            continue
        out.clients.add(str(client_id))
        if str(client_id) in erased_here:
            continue
        for route in client_routes:
            orgs = orgs_named(route, payload)
            if orgs:
                wanted[(str(client_id), orgs[0])] = None
    if not wanted:
        return []
    # Erased clients: not even a question to intake (see forget_client).
    gone = await repo.erased_among(deps.db.pool, {c for c, _ in wanted})
    return [(c, o) for c, o in wanted if c not in gone]


# ---------------------------------------------------------------- the rows of one trigger
async def _client_rows(
    env: Envelope[Any],
    route: Route,
    org: str,
    payload: dict[str, Any],
    concerned: list[str],
    facts: BatchFacts,
    batch: PreparedTriggers | None,
    deps: Deps,
) -> list[tuple[repo.NewNotification, datetime]]:
    client_id = payload.get("client_id")
    base: dict[str, Any] = dict(
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
    if client_id and facts.erased[str(client_id)]:
        # A trigger that arrives after the erasure (another topic, another partition): nothing for the client, not even a question.
        failed = repo.NewNotification(
            **{**base, "payload": {}}, channel=route.channels[0], language=None, status=Status.PERMANENT_FAILURE, reason=CLIENT_ERASED
        )
        return [(failed, deps.clock.now())]
    # Raises ContactsUnavailable (an OSError) while intake is down: the kit retries the event until it answers.
    # A client without consent, or who asked not to be contacted (do_not_contact), gets nothing on any channel: one
    # final row records why (never retried), announced as lotse.notification.failed.
    contact = batch.contact(str(client_id), org) if batch is not None else None
    if contact is None:  # no prepare (one event at a time), or it left this one out
        contact = await deps.contacts.lookup(str(client_id), org)
    if isinstance(contact, NoContact):
        failed = repo.NewNotification(
            **base, channel=route.channels[0], language=None, status=Status.PERMANENT_FAILURE, reason=contact.reason
        )
        return [(failed, deps.clock.now())]
    language = choose_language(contact.preferred_language, contact.languages)
    channels = [c for c in route.channels if deps.channel_enabled(c) and address(contact, c)]
    if not channels:
        failed = repo.NewNotification(
            **base,
            channel=route.channels[0],
            language=language,
            status=Status.PERMANENT_FAILURE,
            reason="the consented contact has no address for these channels",
        )
        return [(failed, deps.clock.now())]
    return [(repo.NewNotification(**base, channel=channel, language=language), deps.clock.now()) for channel in channels]


def _org_rows(
    env: Envelope[Any],
    route: Route,
    org: str,
    info: Organisation | None,
    payload: dict[str, Any],
    concerned: list[str],
    facts: BatchFacts,
    deps: Deps,
) -> list[tuple[repo.NewNotification, datetime]]:
    language = org_language(info)
    now = deps.clock.now()
    dpo = route.audience is Audience.DATA_PROTECTION
    rows: list[tuple[repo.NewNotification, datetime]] = []
    for channel in route.channels:
        if channel is Channel.WEBHOOK:
            for ep in facts.endpoints[org]:
                if not endpoint_takes(ep["event_types"], env.type):
                    continue
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
                rows.append((new, now))
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
            rows.append((replace(new, status=Status.TECHNICAL_FAILURE, reason=why), deps.clock.now()))
            continue
        rows.append((new, now))
    return rows


async def _record(conn: asyncpg.Connection, rows: list[tuple[repo.NewNotification, datetime]], deps: Deps) -> int:
    """Records the trigger's rows in one statement; counts them, and announces each that cannot even be attempted
    (recorded with its final status, so caseworkers see it) in one outbox round trip. Returns how many wait to be sent."""
    ids = await repo.insert_notifications(conn, rows)
    recorded = 0
    failed = []
    for (new, now), notification_id in zip(rows, ids, strict=True):
        if notification_id is None:  # recorded before: by another path, or earlier in this very list
            continue
        if not new.status.final:
            metrics.recorded.labels(SERVICE, new.channel.value, _recipient_label(new)).inc()
            recorded += 1
            continue
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
            client_id=uuid.UUID(new.client_id) if new.client_id else None,
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
        failed.append(new_event(data, source=SOURCE, acting_org=new.recipient_org, time=now))
    await deps.outbox.enqueue_many(conn, failed)
    return recorded


def _recipient_label(new: repo.NewNotification) -> str:
    if new.recipient_kind == RecipientKind.ORGANISATION.value and new.recipient_key.startswith(DPO_KEY_PREFIX):
        return "data_protection"
    return new.recipient_kind  # client, organisation, partner_system


def org_language(info: Organisation | None) -> str:
    """Caseworker messages go out in the organisation's first supported language, German by default."""
    return choose_language(info.languages if info else (), DEFAULT_LANGUAGE)


def address(contact: ClientContact, channel: Channel) -> str | None:
    return contact.email if channel is Channel.EMAIL else contact.phone if channel is Channel.SMS else None
