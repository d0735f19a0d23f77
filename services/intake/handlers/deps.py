"""What intake's handlers and views work with: the database, the outbox, the clock, the network, the consent
service and the vault (personal data encrypted at rest)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from contracts import Envelope, new_event
from contracts.events import EventData
from lotse_kit.clock import Clock
from lotse_kit.db import Database
from lotse_kit.naming import Naming
from lotse_kit.network import OrgDirectory
from lotse_kit.outbox import Outbox

from ..adapters.consent import ConsentDecisions
from ..adapters.vault import Vault
from ..config import IntakeSettings
from ..domain.errors import Forbidden

SOURCE = "/lotse/intake"


@dataclass
class Deps:
    db: Database
    outbox: Outbox
    naming: Naming
    clock: Clock
    directory: OrgDirectory
    consent: ConsentDecisions
    settings: IntakeSettings
    vault: Vault

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.directory.timezone)

    def require_member(self, org: str) -> None:
        if not self.directory.has(org):
            raise Forbidden(f"{org} is not a member of the network {self.directory.network.district}")

    async def emit(
        self, conn: asyncpg.Connection, data: EventData, acting_org: str | None, *, event_id: uuid.UUID | None = None
    ) -> Envelope[Any]:
        """Writes the event to the outbox in the caller's transaction (on its contract's topic)."""
        env = new_event(data, source=SOURCE, acting_org=acting_org, event_id=event_id)
        await self.outbox.enqueue(conn, env)
        return env

    async def emit_all(self, conn: asyncpg.Connection, events: Sequence[EventData], acting_org: str | None) -> list[Envelope[Any]]:
        """`emit` for several events, in this order, in one round trip."""
        envs = [new_event(data, source=SOURCE, acting_org=acting_org) for data in events]
        await self.outbox.enqueue_many(conn, envs)
        return envs
