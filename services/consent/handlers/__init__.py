"""The consent service's handlers: events by type, commands by class.

- consents.py: record, withdraw and expire consents (commands);
- disclosures.py: the disclosure gate (lotse.disclosure.requested);
- forwarding.py: copies to partner inboxes, and erasure (lotse.client.erased);
- clients.py: the client's registering and responsible organisations (who may read its consents);
- corrections.py: corrected categories sealed to the organisations that received them (lotse.client.corrected);
- acknowledgements.py: partners' signed acknowledgements, and the overdue job;
- keys.py: recipients' public keys (register, retire); sealing.py: fetching from intake and sealing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from contracts.events import PARTNER_ACK_TYPES
from lotse_kit.declaration import EventHandler, handlers_for

from ..domain.commands import ExpireDueConsents, RaiseOverdueAcknowledgements, RecordConsent, RegisterKey, RetireKey, WithdrawConsent
from ..domain.forwarding import FORWARDED_TYPES
from .acknowledgements import raise_overdue_acknowledgements, record_acknowledgement
from .clients import record_case_handed_over, record_client_registered
from .consents import expire_due_consents, record_consent, withdraw_consent
from .corrections import forward_correction
from .deps import Deps
from .disclosures import gate_disclosure_request
from .forwarding import forward_to_partners, record_client_erasure
from .keys import register_key, retire_key

# Withdrawals and expiries are forwarded in the transaction that produces them, not by consuming
# the service's own topic; erasure and a hand-over are recorded before they are forwarded.
_FORWARDED_HERE = ("lotse.consent.withdrawn", "lotse.consent.expired", "lotse.client.erased", "lotse.case.handed_over")

EVENT_HANDLERS: dict[str, EventHandler] = {
    "lotse.disclosure.requested": gate_disclosure_request,
    **handlers_for((t for t in FORWARDED_TYPES if t not in _FORWARDED_HERE), forward_to_partners),
    "lotse.client.erased": record_client_erasure,
    "lotse.client.registered": record_client_registered,
    "lotse.case.handed_over": record_case_handed_over,  # also forwards, like the types above
    "lotse.client.corrected": forward_correction,
    **handlers_for(PARTNER_ACK_TYPES, record_acknowledgement),
}

COMMAND_HANDLERS: dict[type, Callable[[Any, Deps], Awaitable[Any]]] = {
    RecordConsent: record_consent,
    WithdrawConsent: withdraw_consent,
    ExpireDueConsents: expire_due_consents,
    RegisterKey: register_key,
    RetireKey: retire_key,
    RaiseOverdueAcknowledgements: raise_overdue_acknowledgements,
}


async def handle(cmd: Any, deps: Deps) -> Any:
    """Runs the handler of `cmd`'s class."""
    try:
        handler = COMMAND_HANDLERS[type(cmd)]
    except KeyError:
        raise TypeError(f"no handler for command {type(cmd).__name__}") from None
    return await handler(cmd, deps)


__all__ = ["COMMAND_HANDLERS", "EVENT_HANDLERS", "Deps", "handle"]
