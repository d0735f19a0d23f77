"""Kafka entry point: every trigger in the routing table, one consumer group."""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts import Envelope
from contracts.events import EVENTS
from lotse_kit.runtime import Runtime

from ..domain.routing import TRIGGERS
from ..handlers import Deps, record_notifications


def consumed_topics() -> list[str]:
    return sorted({EVENTS[t].topic for t in TRIGGERS if EVENTS[t].topic})


def register(runtime: Runtime, deps: Deps) -> None:
    async def on_trigger(conn: asyncpg.Connection, env: Envelope[Any]) -> None:
        await record_notifications(conn, env, deps)

    runtime.add_consumer("triggers", {t: on_trigger for t in sorted(TRIGGERS)}, topics=consumed_topics())
