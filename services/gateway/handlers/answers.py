"""A partner posts events to its outbox over HTTPS: checked as Lotse's consumers check them, recorded once per
event id, and put on `partner.<org>.outbox.v1` through the gateway's transactional outbox."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

from contracts import DecodeError, Envelope, topics, validate
from contracts.structured import from_structured

from ..adapters import metrics
from ..adapters import repository as repo
from ..domain.commands import SubmitEvents
from ..domain.errors import EventIdReused, InvalidEvent
from ..domain.outbox import check_speaks_for_itself, check_type, digest, parse_data
from .deps import Deps
from .inbox import https_member

log = logging.getLogger(__name__)


def _checked(org: str, obj: Any) -> Envelope[Any]:
    raw = from_structured(obj)
    check_type(raw.type, raw.dataschema)
    env = validate(raw)
    data = parse_data(env.type, raw.data)
    check_speaks_for_itself(org, env.source, data)
    return replace(env, data=data)


async def submit_events(cmd: SubmitEvents, deps: Deps) -> list[str]:
    """All or nothing: one invalid event refuses the whole request (422, naming it by its index)."""
    https_member(deps, cmd.org)
    if not cmd.events:
        raise InvalidEvent("No event in the request.")
    if len(cmd.events) > deps.batch_max:
        raise InvalidEvent(f"At most {deps.batch_max} events per request.")
    envs: list[Envelope[Any]] = []
    digests: dict[uuid.UUID, str] = {}
    for i, obj in enumerate(cmd.events):
        try:
            env = _checked(cmd.org, obj)
        except DecodeError as exc:
            raise InvalidEvent(f"event {i}: {exc.reason}", index=i) from None
        except InvalidEvent as exc:
            raise InvalidEvent(f"event {i}: {exc.detail}", index=i) from None
        d = digest(obj)
        if env.id in digests:
            if digests[env.id] != d:
                raise EventIdReused(f"event {i}: id {env.id} is used twice in this request for different events", index=i)
            continue
        digests[env.id] = d
        envs.append(env)
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        before = await repo.accepted(conn, list(digests))
        for event_id, (org, d) in before.items():
            if org != cmd.org or d != digests[event_id]:
                raise EventIdReused(f"id {event_id} was used before for another event")
        new = [e for e in envs if e.id not in before]
        inserted = set(await repo.record_accepted(conn, [(e.id, cmd.org, digests[e.id]) for e in new], now))
        fresh = [e for e in new if e.id in inserted]
        if fresh:
            await deps.outbox.enqueue_many(conn, fresh, topic=topics.partner_outbox(cmd.org))
    if fresh:
        metrics.EVENTS_ACCEPTED.labels(cmd.org, "accepted").inc(len(fresh))
    if len(envs) > len(fresh):
        metrics.EVENTS_ACCEPTED.labels(cmd.org, "repeated").inc(len(envs) - len(fresh))
    for e in fresh:
        log.info("outbox event accepted", extra={"org": cmd.org, "event_id": str(e.id), "client_id": e.subject, "type": e.type})
    return [str(e.id) for e in envs]
