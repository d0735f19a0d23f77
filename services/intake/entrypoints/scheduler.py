"""The deadline scheduler: a worker that emits approaching/missed notices when they fall due."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lotse_kit.consumer import TRANSIENT_ERRORS
from lotse_kit.runtime import Runtime

from .. import handlers as h

log = logging.getLogger(__name__)


def deadline_scheduler(deps: h.Deps):  # noqa: ANN201 - a kit Worker
    async def run(runtime: Runtime) -> None:
        interval = deps.settings.deadline_scan_interval_s
        batch = deps.settings.deadline_batch_size
        while not runtime.stopping.is_set():
            try:
                # Drain: a full batch means there may be more due right now.
                while await h.emit_due_deadline_notices(runtime.pool, deps) >= batch and not runtime.stopping.is_set():
                    pass
            except TRANSIENT_ERRORS as exc:
                log.warning("deadline scan failed; retrying", extra={"error": repr(exc)})
            except Exception:
                log.error("deadline scan failed", exc_info=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(runtime.stopping.wait(), timeout=interval)

    return run
