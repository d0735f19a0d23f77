"""The consent service's handlers: events by type, commands by class.

- consents.py: record, withdraw and expire consents (commands);
- disclosures.py: the disclosure gate (lotse.disclosure.requested);
- forwarding.py: copies to partner inboxes, and erasure (lotse.client.erased);
- clients.py: the client's registering and responsible organisations (who may read its consents).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from lotse_kit.declaration import EventHandler, handlers_for

from ..domain.commands import ExpireDueConsents, RecordConsent, WithdrawConsent
from ..domain.forwarding import FORWARDED_TYPES
from .clients import record_case_handed_over, record_client_registered
from .consents import expire_due_consents, record_consent, withdraw_consent
from .deps import Deps
from .disclosures import gate_disclosure_request
from .forwarding import forward_to_partners, record_client_erasure

# Withdrawals and expiries are forwarded in the transaction that produces them, not by consuming
# the service's own topic; erasure and a hand-over are recorded before they are forwarded.
_FORWARDED_HERE = ("lotse.consent.withdrawn", "lotse.consent.expired", "lotse.client.erased", "lotse.case.handed_over")

EVENT_HANDLERS: dict[str, EventHandler] = {
    "lotse.disclosure.requested": gate_disclosure_request,
    **handlers_for((t for t in FORWARDED_TYPES if t not in _FORWARDED_HERE), forward_to_partners),
    "lotse.client.erased": record_client_erasure,
    "lotse.client.registered": record_client_registered,
    "lotse.case.handed_over": record_case_handed_over,  # also forwards, like the types above
}

COMMAND_HANDLERS: dict[type, Callable[[Any, Deps], Awaitable[Any]]] = {
    RecordConsent: record_consent,
    WithdrawConsent: withdraw_consent,
    ExpireDueConsents: expire_due_consents,
}


async def handle(cmd: Any, deps: Deps) -> Any:
    """Runs the handler of `cmd`'s class."""
    try:
        handler = COMMAND_HANDLERS[type(cmd)]
    except KeyError:
        raise TypeError(f"no handler for command {type(cmd).__name__}") from None
    return await handler(cmd, deps)


__all__ = ["COMMAND_HANDLERS", "EVENT_HANDLERS", "Deps", "handle"]
