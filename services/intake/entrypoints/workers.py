"""Intake's background worker: the deadline scheduler, one `handlers.deadlines.emit_due_deadline_notices` step at a time."""

from __future__ import annotations

from lotse_kit.workers import PeriodicWorker, periodic

from ..handlers.deadlines import emit_due_deadline_notices
from ..handlers.deps import Deps


def deadline_notices(deps: Deps) -> PeriodicWorker:
    """Every `deadline_scan_interval_s`, and at once again while a full batch shows more are due."""

    async def step() -> bool:
        return await emit_due_deadline_notices(deps) >= deps.settings.deadline_batch_size

    return periodic("deadline-notices", step, interval_s=deps.settings.deadline_scan_interval_s)
