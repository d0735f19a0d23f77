"""Wires intake: settings, network directory, adapters, runtime, consumers, worker, HTTP app.

Tests pass their own settings, schema, clock and adapters (`directory=`, `consent=`: fakes, no mocks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from contracts import topics
from lotse_kit.clock import Clock, SystemClock
from lotse_kit.http import create_app
from lotse_kit.network import OrgDirectory
from lotse_kit.runtime import Runtime, check_adapters

from .adapters.consent import HttpConsentDecisions
from .config import IntakeSettings
from .entrypoints import consumers, http, workers
from .handlers.deps import Deps

MIGRATIONS = Path(__file__).parent / "migrations"

# The adapters a caller may replace: the network directory and the consent decision client.
ADAPTERS = frozenset({"directory", "consent"})


def bootstrap(settings: IntakeSettings | None = None, *, schema: str | None = None, clock: Clock | None = None, **adapters: Any) -> FastAPI:
    check_adapters(adapters, ADAPTERS, service="intake")
    settings = settings or IntakeSettings()
    directory: OrgDirectory = adapters.get("directory") or OrgDirectory.from_file(settings.network_file)  # invalid file: exit 2
    consent = adapters.get("consent") or HttpConsentDecisions(settings.consent_url, timeout_s=settings.consent_timeout_s)
    # Every member's outbox and its dead-letter topic: intake reads the outboxes by pattern (the inboxes are
    # consent's to write; under the broker's ACLs intake cannot even see them).
    partner_topics = [spec for org in directory.org_ids() for spec in topics.partner_topics(org) if spec.name != topics.partner_inbox(org)]
    runtime = Runtime(consumers.DECLARATION, settings, migrations_dir=MIGRATIONS, schema=schema, extra_topics=partner_topics)
    deps = Deps(
        db=runtime.db,
        outbox=runtime.outbox,
        naming=runtime.naming,
        clock=clock or SystemClock(),
        directory=directory,
        consent=consent,
        settings=settings,
    )
    runtime.subscribe(deps)
    runtime.add_worker("deadline-notices", workers.deadline_notices(deps))
    runtime.add_check("network", directory.health)
    runtime.on_stop(consent.aclose)
    app = create_app(runtime, [http.build_router(deps)], title="Lotse intake")
    app.state.deps = deps
    return app
