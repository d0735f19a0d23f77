"""What a service consumes and produces, declared once where it wires its consumers and outbox.

The declaration is used three ways, so it cannot drift from the code:
- `Runtime` subscribes exactly the declared `Subscription`s and creates the declared topics;
- the `Outbox` refuses to enqueue an event its service did not declare for that topic;
- `contracts.export` generates each service's AsyncAPI document from it, and
  `tests/contracts/test_declarations.py` checks that every declared event has a producer in the code.

Channels are logical topic names (`lotse.clients.v1`) or templated partner addresses
(`partner.{orgId}.inbox.v1`). Messages are named by `message_id`: the event type for the current
version of a type, the schema id (`lotse.referral.sent.partner.v1`) for any other schema.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from contracts import Envelope, EventSpec
from contracts.events import EVENTS, SCHEMAS

# One signature for every event handler in every service: the decoded event, the open transaction
# (which also records the event as processed), and the service's dependencies.
EventHandler = Callable[[Envelope[Any], asyncpg.Connection, Any], Awaitable[None]]

# Optional, per subscription: called with a batch's events (those with a handler, in delivery order) and the
# service's dependencies before the batch's transaction opens, e.g. to fetch from another service in one request
# what the handlers will need. What it returns is what `lotse_kit.consumer.prepared()` gives the handlers of
# that batch. It must have no effect of its own: a handler must work without it (prepared() is None when a batch
# falls back to one event at a time), and a failing prepare only costs that fallback.
Prepare = Callable[[Sequence[Envelope[Any]], Any], Awaitable[Any]]

# Optional, per subscription: called inside a batch's transaction, before its handlers, with the batch's events (those
# with a handler, in delivery order), the transaction and the service's dependencies. It takes the row locks the
# handlers will take, in one canonical order (e.g. `ORDER BY id FOR UPDATE`). Without it, two batches that touch the
# same rows in different orders (two subscriptions of one service) lock them in delivery order and can deadlock:
# PostgreSQL then aborts one after `deadlock_timeout` (1 s) and the consumer redoes it one event at a time. Locks
# are all it may take: the handlers still read and write for themselves.
LockBatch = Callable[[Sequence[Envelope[Any]], asyncpg.Connection, Any], Awaitable[None]]

PARTNER_INBOX = "partner.{orgId}.inbox.v1"
PARTNER_OUTBOX = "partner.{orgId}.outbox.v1"


def message_id(spec: EventSpec) -> str:
    return spec.type if EVENTS.get(spec.type) is spec else spec.schema_id


def message_id_of(env: Envelope[Any]) -> str:
    return message_id(SCHEMAS[env.dataschema])


@functools.cache  # the outbox asks per event: compile each channel's pattern once
def channel_regex(channel: str) -> re.Pattern[str]:
    """A regex over logical topic names for a channel address (`{orgId}` matches one organisation id)."""
    parts = re.split(r"(\{[a-zA-Z]+\})", channel)
    body = "".join(r"[a-z0-9][a-z0-9-]*" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


@dataclass(frozen=True)
class Subscription:
    """One consumer group: `handlers` maps each event type it acts on to its handler.

    `channels` are the channel addresses it reads; templated ones are subscribed by pattern.
    A `Subscription` with `custom=True` is registered by the service itself (the audit ingest reads
    raw records in batches); it still declares what it consumes, through `types`.
    """

    name: str
    channels: tuple[str, ...]
    handlers: Mapping[str, EventHandler] = field(default_factory=dict)
    custom: bool = False
    types: Mapping[str, tuple[str, ...]] | None = None  # custom subscriptions: channel -> message ids
    prepare: Prepare | None = None
    lock: LockBatch | None = None
    # No latency goal waits on it (e-mails, bookkeeping of outcomes): its fetches may gather records longer
    # (`LOTSE_CONSUMER_BACKGROUND_FETCH_WAIT_MS`), so it takes fewer, larger batches.
    background: bool = False

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError(f"subscription {self.name!r} reads no channel")
        unknown = [t for t in self.handlers if t not in EVENTS]
        if unknown:
            raise ValueError(f"subscription {self.name!r} handles unknown event types {unknown}")

    @property
    def topics(self) -> list[str]:
        return [c for c in self.channels if "{" not in c]

    @property
    def pattern(self) -> str | None:
        templated = [channel_regex(c).pattern.removeprefix("^").removesuffix("$") for c in self.channels if "{" in c]
        return "|".join(f"(?:{p})" for p in templated) if templated else None

    def consumes(self) -> dict[str, list[str]]:
        if self.types is not None:
            return {c: sorted(self.types.get(c, ())) for c in self.channels}
        out: dict[str, list[str]] = {}
        for c in self.channels:
            out[c] = sorted(t for t in self.handlers if _may_travel(t, c))
        return out


def _may_travel(event_type: str, channel: str) -> bool:
    """Whether an event of this type can appear on the channel (its own topic, or any partner topic)."""
    spec = EVENTS[event_type]
    return spec.topic == channel or spec.topic is None or channel.startswith("partner.")


@dataclass(frozen=True)
class Publication:
    """Events the service writes to its outbox for one channel."""

    channel: str
    messages: tuple[str, ...]

    def __post_init__(self) -> None:
        known = {message_id(s) for s in SCHEMAS.values()}
        unknown = [m for m in self.messages if m not in known]
        if unknown:
            raise ValueError(f"publication on {self.channel!r} names unknown messages {unknown}")


@dataclass(frozen=True)
class ServiceDeclaration:
    service: str
    title: str
    description: str
    subscriptions: tuple[Subscription, ...] = ()
    publications: tuple[Publication, ...] = ()

    def consumes(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for sub in self.subscriptions:
            for channel, types in sub.consumes().items():
                out.setdefault(channel, set()).update(types)
        return {c: sorted(t) for c, t in sorted(out.items())}

    def produces(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for pub in self.publications:
            out.setdefault(pub.channel, set()).update(pub.messages)
        return {c: sorted(t) for c, t in sorted(out.items())}

    def produced_messages(self) -> set[str]:
        return {m for p in self.publications for m in p.messages}

    def may_publish(self, topic: str, env: Envelope[Any]) -> bool:
        """Whether `env` may go to logical `topic` under this declaration."""
        mid = message_id_of(env)
        return any(mid in p.messages and channel_regex(p.channel).match(topic) for p in self.publications)

    def own_topics(self) -> list[str]:
        """Concrete logical topics this service writes or reads (created at start if missing)."""
        names = [p.channel for p in self.publications if "{" not in p.channel]
        for sub in self.subscriptions:
            names += sub.topics
        return list(dict.fromkeys(names))


class UndeclaredEvent(RuntimeError):
    """The code tried to produce an event its service did not declare: a bug, caught in tests."""


def handlers_for(types: Iterable[str], handler: EventHandler) -> dict[str, EventHandler]:
    """`{type: handler}` for several types handled alike (e.g. every notification trigger)."""
    return {t: handler for t in types}
