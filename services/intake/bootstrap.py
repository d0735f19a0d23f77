"""Wires intake: settings, network directory, keys, adapters, runtime, consumers, workers, HTTP app.

Tests pass their own settings, schema, clock and adapters (`directory=`, `consent=`: fakes, no mocks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from contracts import topics
from lotse_kit.clock import Clock, SystemClock
from lotse_kit.http import create_app
from lotse_kit.keyring import load_keyring
from lotse_kit.network import OrgDirectory
from lotse_kit.runtime import Runtime, check_adapters

from .adapters.consent import HttpConsentDecisions
from .adapters.vault import Vault
from .config import IntakeSettings
from .entrypoints import consumers, http, workers
from .handlers.deps import Deps
from .handlers.keys import encrypt_clear_text

MIGRATIONS = Path(__file__).parent / "migrations"

# The adapters a caller may replace: the network directory and the consent decision client.
ADAPTERS = frozenset({"directory", "consent"})


def bootstrap(settings: IntakeSettings | None = None, *, schema: str | None = None, clock: Clock | None = None, **adapters: Any) -> FastAPI:
    check_adapters(adapters, ADAPTERS, service="intake")
    settings = settings or IntakeSettings()
    directory: OrgDirectory = adapters.get("directory") or OrgDirectory.from_file(settings.network_file)  # invalid file: exit 2
    # A missing or malformed KEK stops the service here (KeyConfigError, exit 2); in development one is generated.
    keyring = load_keyring(
        settings.kek.get_secret_value() if settings.kek else None,
        settings.kek_id,
        {kid: key.get_secret_value() for kid, key in settings.old_keks.items()},
        settings.kek_file,
        generate=settings.generate_keys,
        setting="LOTSE_INTAKE_KEK",
        purpose="intake",
    )
    consent = adapters.get("consent") or HttpConsentDecisions(settings.consent_url, timeout_s=settings.consent_timeout_s)
    # Every member's outbox and its dead-letter topic: intake reads the outboxes by pattern (the inboxes are
    # consent's to write; under the broker's ACLs intake cannot even see them).
    partner_topics = [spec for org in directory.org_ids() for spec in topics.partner_topics(org) if spec.name != topics.partner_inbox(org)]
    clock = clock or SystemClock()
    runtime = Runtime(consumers.DECLARATION, settings, migrations_dir=MIGRATIONS, schema=schema, extra_topics=partner_topics)
    deps = Deps(
        db=runtime.db,
        outbox=runtime.outbox,
        naming=runtime.naming,
        clock=clock,
        directory=directory,
        consent=consent,
        settings=settings,
        vault=Vault(keyring, clock),
    )
    runtime.subscribe(deps)
    runtime.add_worker("deadline-notices", workers.deadline_notices(deps))
    runtime.add_worker("data-key-rewrap", workers.data_key_rewrap(deps))
    runtime.add_check("network", directory.health)
    runtime.on_stop(consent.aclose)
    app = create_app(runtime, [http.build_router(deps)], title="Lotse intake")
    served = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with served(app):
            # Before the first request: personal data still in clear from before issue 13 is encrypted (once).
            await encrypt_clear_text(deps)
            yield

    app.router.lifespan_context = lifespan
    app.state.deps = deps
    return app
