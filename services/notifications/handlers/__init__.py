"""Use cases of the notifications service.

Event handlers (`EVENT_HANDLERS`, registered through entrypoints.consumers.DECLARATION):
  triggers.record_notifications   a trigger event arrived: record one notification per recipient and channel
  triggers.prepare_triggers       the subscription's prepare: a batch's client contacts, fetched before its transaction
  erasure.forget_client           a client was erased: end their pending notifications, keep only pseudonymous facts
Called by the delivery worker (entrypoints.workers):
  deliveries.send_batch           send a claimed batch of one channel and record the outcomes together
  deliveries.send_notification    the same for one notification
Commands (`COMMAND_HANDLERS`, dispatched by `handle`): webhook endpoints (endpoints.py).
Called by the re-wrap job (entrypoints.workers):
  secrets.rewrap_secrets          seal stored webhook secrets under the current key-encryption key
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from lotse_kit.declaration import EventHandler, handlers_for

from ..domain.commands import EnableEndpoint, RegisterEndpoint, RemoveEndpoint, RotateEndpointSecret
from ..domain.routing import TRIGGERS
from .deliveries import send_batch, send_notification
from .deps import Deps
from .endpoints import enable_endpoint, register_endpoint, remove_endpoint, rotate_endpoint_secret
from .erasure import forget_client
from .secrets import rewrap_secrets
from .triggers import prepare_triggers, record_notifications

__all__ = [
    "COMMAND_HANDLERS",
    "EVENT_HANDLERS",
    "Deps",
    "forget_client",
    "handle",
    "prepare_triggers",
    "record_notifications",
    "rewrap_secrets",
    "send_batch",
    "send_notification",
]

# Every trigger of the routing table is handled alike: the table decides whom to notify.
EVENT_HANDLERS: dict[str, EventHandler] = {
    **handlers_for(sorted(TRIGGERS), record_notifications),
    "lotse.client.erased": forget_client,
}

COMMAND_HANDLERS: dict[type, Callable[[Any, Deps], Awaitable[Any]]] = {
    RegisterEndpoint: register_endpoint,
    RotateEndpointSecret: rotate_endpoint_secret,
    EnableEndpoint: enable_endpoint,
    RemoveEndpoint: remove_endpoint,
}


async def handle(cmd: object, deps: Deps) -> Any:
    handler = COMMAND_HANDLERS.get(type(cmd))
    if handler is None:
        raise TypeError(f"no handler for {type(cmd).__name__}")
    return await handler(cmd, deps)
