"""Intake's use cases: one function per command or consumed event, found through two dicts.

- `COMMAND_HANDLERS` maps each command class (`domain.commands`) to `async def verb_noun(cmd, deps)`;
  a command runs in its own transaction on the pool, and `handle(cmd, deps)` dispatches it.
- `EVENT_HANDLERS` maps each consumed event type to `async def verb_noun(env, conn, deps)`; it runs on
  the consumer's connection, inside the transaction that also records the event as processed.
  `entrypoints/consumers.py` declares which topics feed them.

Every state change writes its events to the outbox in the same transaction. Personal data is never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from contracts.events import PARTNER_ANSWER_TYPES
from lotse_kit.declaration import EventHandler, handlers_for

from ..domain import commands as cmds
from . import clients, deadlines, keys, partner_answers, referrals
from .deps import Deps

COMMAND_HANDLERS: dict[type[cmds.Command], Callable[[Any, Deps], Awaitable[Any]]] = {
    cmds.RegisterClient: clients.register_client,
    cmds.UpdateClient: clients.update_client,
    cmds.HandOverCase: clients.hand_over_case,
    cmds.EraseClient: clients.erase_client,
    cmds.SendReferral: referrals.send_referral,
    cmds.AcceptReferral: referrals.accept_referral,
    cmds.DeclineReferral: referrals.decline_referral,
    cmds.CompleteReferral: referrals.complete_referral,
    cmds.RevokeReferral: referrals.revoke_referral,
    cmds.RegisterDeadline: deadlines.register_deadline,
    cmds.ResolveDeadline: deadlines.resolve_deadline,
}

EVENT_HANDLERS: dict[str, EventHandler] = {
    **handlers_for(PARTNER_ANSWER_TYPES, partner_answers.record_partner_answer),
    "lotse.disclosure.blocked": referrals.record_disclosure_blocked,
    "lotse.disclosure.made": referrals.record_disclosure_made,
}


async def handle(cmd: cmds.Command, deps: Deps) -> Any:
    """Runs a command with its handler."""
    return await COMMAND_HANDLERS[type(cmd)](cmd, deps)


__all__ = ["COMMAND_HANDLERS", "EVENT_HANDLERS", "Deps", "handle", "keys"]
