"""Who is responsible for a client, as intake announces it on lotse.clients.v1.

The registering and the current responsible organisation may read the client's consent records and
receipts and record a withdrawal (the scope rules in `lotse_kit.access`); the consent service learns
them from intake's events, never from a caller.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from contracts import Envelope
from contracts.events import CaseHandedOver, ClientRegistered
from lotse_kit.consumer import Rejected

from ..adapters import repository as repo
from .deps import Deps
from .forwarding import forward_to_partners

log = logging.getLogger(__name__)

INTAKE_SOURCE = "/lotse/intake"


def _from_intake(env: Envelope[Any]) -> None:
    if env.source != INTAKE_SOURCE:
        raise Rejected(f"client events come from {INTAKE_SOURCE}, not {env.source}")


async def record_client_registered(env: Envelope[ClientRegistered], conn: asyncpg.Connection, deps: Deps) -> None:
    _from_intake(env)
    d = env.data
    await repo.record_registration(conn, d.client_id, d.registering_org, d.responsible_org, d.registered_at)


async def record_case_handed_over(env: Envelope[CaseHandedOver], conn: asyncpg.Connection, deps: Deps) -> None:
    """The new organisation becomes responsible; partners serving the client are told (forwarding rules)."""
    _from_intake(env)
    await repo.record_handover(conn, env.data.client_id, env.data.to_org, env.data.handed_over_at)
    await forward_to_partners(env, conn, deps)
