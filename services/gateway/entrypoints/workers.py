"""The gateway's background jobs: push delivery, the unfetched check, housekeeping, the inbox readers' probe."""

from __future__ import annotations

from datetime import timedelta

from lotse_kit.workers import PeriodicWorker, Step, periodic

from ..adapters import repository as repo
from ..handlers import Deps, push_records, report_unfetched

# Event ids a partner posted are kept this long to recognise a repeated POST (longer than any client retries).
ACCEPTED_RETENTION = timedelta(days=35)


def push(deps: Deps, interval_s: float) -> PeriodicWorker:
    async def step() -> bool:
        more = False
        for member in deps.directory.network.https_inboxes():
            if member.inbox.mode == "push":
                more = await push_records(member, deps) or more
        return more

    return periodic("push", step, interval_s=interval_s)


def unfetched(deps: Deps, interval_s: float) -> PeriodicWorker:
    return periodic("unfetched", lambda: report_unfetched(deps), interval_s=interval_s)


def housekeeping(deps: Deps, close_idle: object, interval_s: float = 60.0) -> PeriodicWorker:
    async def step() -> bool:
        if callable(close_idle):
            await close_idle()
        await repo.prune_accepted(deps.db.pool, deps.clock.now() - ACCEPTED_RETENTION)
        return False

    return periodic("housekeeping", step, interval_s=interval_s)


def reader_probe(probe: Step | None, interval_s: float) -> PeriodicWorker | None:
    """Checks the inbox readers' contact with Kafka for readiness (adapters/inbox.py: `KafkaInbox.probe`);
    None for an inbox adapter without a probe."""
    return None if probe is None else periodic("inbox-reader-probe", probe, interval_s=interval_s)
