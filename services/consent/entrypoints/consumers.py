"""Event consumers: the disclosure gate and the partner forwarder."""

from __future__ import annotations

from functools import partial

from contracts import topics
from lotse_kit.runtime import Runtime

from .. import handlers
from ..domain.forwarding import FORWARDING_RULES
from ..handlers import Deps

GATE = "disclosure-gate"
FORWARDER = "partner-forwarder"

# Events this service forwards but produces itself (consent withdrawn/expired) are forwarded in the
# transaction that produces them, not by consuming its own topic.
_OWN = {"lotse.consent.withdrawn", "lotse.consent.expired"}


def register(runtime: Runtime, deps: Deps) -> None:
    runtime.add_consumer(
        GATE,
        {"lotse.disclosure.requested": partial(_gate, deps=deps)},
        topics=[topics.DISCLOSURE_REQUESTS],
    )
    forward = {t: partial(_forward, deps=deps) for t in FORWARDING_RULES if t not in _OWN}
    forward["lotse.client.erased"] = partial(_erased, deps=deps)
    runtime.add_consumer(FORWARDER, forward, topics=[topics.REFERRALS, topics.DEADLINES, topics.CLIENTS])


async def _gate(conn, env, *, deps: Deps) -> None:  # type: ignore[no-untyped-def]
    await handlers.gate_disclosure_request(conn, env, deps)


async def _forward(conn, env, *, deps: Deps) -> None:  # type: ignore[no-untyped-def]
    await handlers.forward_to_partners(conn, env, deps)


async def _erased(conn, env, *, deps: Deps) -> None:  # type: ignore[no-untyped-def]
    await handlers.record_client_erasure(conn, env, deps)
