"""Background workers: the consent expiry job and the acknowledgement overdue job. (The decision API's
connections are held by `adapters.decision_reader.DecisionReader`, itself a worker.)"""

from __future__ import annotations

from lotse_kit.workers import PeriodicWorker, periodic

from ..domain.commands import ExpireDueConsents, RaiseOverdueAcknowledgements
from ..handlers import Deps, handle

EXPIRY = "consent-expiry"
ACK_OVERDUE = "acknowledgement-overdue"


def expiry_worker(deps: Deps, *, interval_s: float) -> PeriodicWorker:
    """Expires due consents every `interval_s`, at once again while a full batch was expired."""

    async def step() -> bool:
        limit = deps.expiry_batch_size
        return await handle(ExpireDueConsents(limit=limit), deps) >= limit

    return periodic(EXPIRY, step, interval_s=interval_s)


def overdue_worker(deps: Deps, *, interval_s: float) -> PeriodicWorker:
    """Raises lotse.acknowledgement.overdue for missing acknowledgements past due, every `interval_s`."""

    async def step() -> bool:
        limit = deps.ack_overdue_batch_size
        return await handle(RaiseOverdueAcknowledgements(limit=limit), deps) >= limit

    return periodic(ACK_OVERDUE, step, interval_s=interval_s)
