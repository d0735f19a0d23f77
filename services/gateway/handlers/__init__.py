"""Use cases of the gateway.

The gateway consumes no events through the kit's consumers: it reads partner inboxes on request, from the
positions it keeps (adapters/inbox.py), so `EVENT_HANDLERS` is empty.
Commands (`COMMAND_HANDLERS`, dispatched by `handle`):
  inbox.acknowledge_records   a partner acknowledged every record up to a cursor
  answers.submit_events       a partner posted events to its outbox
Called by the workers (entrypoints.workers):
  push.push_records           post a push organisation's next records to its webhook URL
  overdue.report_unfetched    tell organisations whose inbox records were left unfetched
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from lotse_kit.declaration import EventHandler

from ..domain.commands import AcknowledgeRecords, SubmitEvents
from .answers import submit_events
from .deps import Deps
from .inbox import acknowledge_records, https_member
from .overdue import report_unfetched
from .push import push_records

__all__ = [
    "COMMAND_HANDLERS",
    "EVENT_HANDLERS",
    "Deps",
    "acknowledge_records",
    "handle",
    "https_member",
    "push_records",
    "report_unfetched",
    "submit_events",
]

EVENT_HANDLERS: dict[str, EventHandler] = {}

COMMAND_HANDLERS: dict[type, Callable[[Any, Deps], Awaitable[Any]]] = {
    AcknowledgeRecords: acknowledge_records,
    SubmitEvents: submit_events,
}


async def handle(cmd: object, deps: Deps) -> Any:
    handler = COMMAND_HANDLERS.get(type(cmd))
    if handler is None:
        raise TypeError(f"no handler for {type(cmd).__name__}")
    return await handler(cmd, deps)
