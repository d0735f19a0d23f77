"""Background workers: the consent expiry job."""

from __future__ import annotations

import asyncio
import logging

from lotse_kit.consumer import TRANSIENT_ERRORS
from lotse_kit.runtime import Runtime

from .. import handlers
from ..handlers import Deps

log = logging.getLogger(__name__)


def expiry_worker(deps: Deps, interval_s: float):  # type: ignore[no-untyped-def]
    """Runs the expiry job every `interval_s` (at once again while a full batch was expired) until shutdown."""

    async def run(runtime: Runtime) -> None:
        while not runtime.stopping.is_set():
            try:
                n = await handlers.expire_due_consents(deps)
            except TRANSIENT_ERRORS as exc:
                log.warning("expiry job failed; will retry", extra={"error": repr(exc)})
                n = 0
            except Exception:
                log.error("expiry job failed; will retry", exc_info=True)
                n = 0
            if n >= deps.expiry_batch_size:
                continue
            try:
                await asyncio.wait_for(runtime.stopping.wait(), timeout=interval_s)
            except asyncio.TimeoutError:
                pass

    return run
