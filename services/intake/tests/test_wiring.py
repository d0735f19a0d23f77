"""Intake's wiring: every command has a handler, every event handler is subscribed, nothing else is."""

from __future__ import annotations

import inspect

from services.intake.domain import commands as cmds
from services.intake.entrypoints.consumers import DECLARATION
from services.intake.handlers import COMMAND_HANDLERS, EVENT_HANDLERS


def test_every_command_has_exactly_one_handler():
    commands = {
        c
        for _, c in inspect.getmembers(cmds, inspect.isclass)
        if issubclass(c, cmds.Command) and c not in (cmds.Command, cmds.OnClient, cmds.OnReferral, cmds.OnDeadline)
    }
    assert len(commands) == 11
    assert set(COMMAND_HANDLERS) == commands


def test_the_declaration_subscribes_exactly_the_event_handlers():
    subscribed = {t: h for sub in DECLARATION.subscriptions for t, h in sub.handlers.items()}
    assert subscribed == EVENT_HANDLERS
    assert DECLARATION.consumes() == {
        "lotse.disclosures.v1": ["lotse.disclosure.blocked", "lotse.disclosure.made"],
        "partner.{orgId}.outbox.v1": ["lotse.referral.accepted", "lotse.referral.completed", "lotse.referral.declined"],
    }
