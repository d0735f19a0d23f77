"""Intake's background workers: the deadline scheduler (one `handlers.deadlines.emit_due_deadline_notices` step
at a time) and the data-key re-wrap job (`handlers.keys.rewrap_data_keys`) after a KEK rotation."""

from __future__ import annotations

from lotse_kit.workers import PeriodicWorker, periodic

from ..handlers.deadlines import emit_due_deadline_notices
from ..handlers.deps import Deps
from ..handlers.keys import rewrap_data_keys


def deadline_notices(deps: Deps) -> PeriodicWorker:
    """Every `deadline_scan_interval_s`, and at once again while a full batch shows more are due."""

    async def step() -> bool:
        return await emit_due_deadline_notices(deps) >= deps.settings.deadline_batch_size

    return periodic("deadline-notices", step, interval_s=deps.settings.deadline_scan_interval_s)


def data_key_rewrap(deps: Deps) -> PeriodicWorker:
    """At start and every `key_rewrap_interval_s` (at once again while a full batch was moved): data keys wrapped
    under an old KEK are wrapped again under the current one; the gauge counts those left."""

    async def step() -> bool:
        return await rewrap_data_keys(deps)

    return periodic("data-key-rewrap", step, interval_s=deps.settings.key_rewrap_interval_s)
