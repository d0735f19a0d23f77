from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts import Envelope, new_event
from contracts.events import ClientRegistered
from contracts.topics import TopicSpec
from lotse_kit.declaration import EventHandler, Publication, ServiceDeclaration, Subscription
from lotse_kit.kafka import ensure_topics
from lotse_kit.runtime import Runtime
from lotse_kit.settings import KitSettings
from tests.fixtures import FAST_KIT_SETTINGS

MIGRATIONS = Path(__file__).parent / "migrations"


def fast_settings(**overrides: Any) -> KitSettings:
    return KitSettings(**{**FAST_KIT_SETTINGS, **overrides})


def registered(client_id: uuid.UUID | None = None, org: str = "jobcenter-paderborn") -> Envelope[ClientRegistered]:
    data = ClientRegistered(
        client_id=client_id or uuid.uuid4(),
        registering_org=org,
        responsible_org=org,
        preferred_language="uk",
        registered_at=datetime.now(UTC),
    )
    return new_event(data, source="/lotse/kittest", acting_org=org)


async def record_effect(env: Envelope[Any], conn: asyncpg.Connection, deps: Any) -> None:
    await conn.execute("INSERT INTO effects (event_id, client_id, note) VALUES ($1, $2, $3)", env.id, env.data.client_id, env.type)


@pytest.fixture
async def topic(kafka_bootstrap: str, unique: str) -> str:
    name = f"test.kit-{unique}.v1"
    await ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=2)])
    return name


def declaration(topic: str, handlers: dict[str, EventHandler] | None = None, *, group: str | None = None) -> ServiceDeclaration:
    """A test service that writes lotse.client.registered to `topic` and, given handlers, consumes them there."""
    subs = (Subscription(group or f"kittest-{topic}", channels=(topic,), handlers=handlers),) if handlers else ()
    return ServiceDeclaration(
        "kittest",
        "Kit test service",
        "Exercises the kit against the real broker and database.",
        subscriptions=subs,
        publications=(Publication(topic, ("lotse.client.registered",)),),
    )


@pytest.fixture
def make_runtime(infra: Any, unique: str, topic: str) -> Callable[..., Runtime]:
    def make(suffix: str = "", *, handlers: dict[str, EventHandler] | None = None, deps: Any = None, **settings: Any) -> Runtime:
        rt = Runtime(declaration(topic, handlers), fast_settings(**settings), migrations_dir=MIGRATIONS, schema=f"kt_{unique}{suffix}")
        rt.subscribe(deps)
        return rt

    return make


@pytest.fixture
async def runtimes() -> AsyncIterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for rt in reversed(started):
        if rt.started:
            await rt.stop()


async def publish_via_outbox(rt: Runtime, env: Envelope[Any], topic: str) -> None:
    async with rt.db.pool.acquire() as conn, conn.transaction():
        await rt.outbox.enqueue(conn, env, topic)
