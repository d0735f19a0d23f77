"""Background workers: the consent expiry job. (The decision API's connections are held by
`adapters.decision_reader.DecisionReader`, itself a worker.)"""

from __future__ import annotations

from lotse_kit.workers import PeriodicWorker, periodic

from ..domain.commands import ExpireDueConsents
from ..handlers import Deps, handle

EXPIRY = "consent-expiry"


def expiry_worker(deps: Deps, *, interval_s: float) -> PeriodicWorker:
    """Expires due consents every `interval_s`, at once again while a full batch was expired."""

    async def step() -> bool:
        limit = deps.expiry_batch_size
        return await handle(ExpireDueConsents(limit=limit), deps) >= limit

    return periodic(EXPIRY, step, interval_s=interval_s)
