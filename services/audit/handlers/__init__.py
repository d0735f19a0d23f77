"""What the audit service does, by what asks for it.

EVENT_HANDLERS is empty on purpose: the audit log is not fed by the kit's event consumer (one
handler per event type, idempotent by event id, dead-lettering) but by its own batch ingest
(`entrypoints/consumers.py`), which logs every record as what it is, by record position, and
never dead-letters. The ingest's writer appends through `handle(AppendEntries(...))`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from lotse_kit.declaration import EventHandler

from ..domain.commands import AppendEntries, SignTreeHead, SignTreeHeadIfGrown
from .deps import Deps
from .entries import append_entries
from .tree_heads import sign_tree_head, sign_tree_head_if_grown

EVENT_HANDLERS: dict[str, EventHandler] = {}

COMMAND_HANDLERS: dict[type, Callable[[Any, Deps], Awaitable[Any]]] = {
    AppendEntries: append_entries,
    SignTreeHead: sign_tree_head,
    SignTreeHeadIfGrown: sign_tree_head_if_grown,
}


async def handle(cmd: Any, deps: Deps) -> Any:
    return await COMMAND_HANDLERS[type(cmd)](cmd, deps)


__all__ = ["COMMAND_HANDLERS", "EVENT_HANDLERS", "Deps", "handle"]
