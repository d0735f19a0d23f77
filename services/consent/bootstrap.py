"""Wires the consent service. Parameters let tests swap the clock, the network directory or the schema."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from contracts import topics
from lotse_kit.http import create_app
from lotse_kit.runtime import Runtime

from .adapters.decision_cache import DecisionCache
from .adapters.decision_reader import DecisionReader
from .adapters.network import OrgDirectory
from .adapters.partner_topics import PartnerTopics
from .config import ConsentSettings
from .entrypoints import consumers, http, workers
from .handlers import Clock, Deps, utc_now

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(
    *,
    settings: ConsentSettings | None = None,
    schema: str | None = None,
    clock: Clock = utc_now,
    directory: OrgDirectory | None = None,
    run_expiry_worker: bool = True,
) -> FastAPI:
    settings = settings or ConsentSettings()
    runtime = Runtime(
        service="consent",
        settings=settings,
        migrations_dir=MIGRATIONS,
        schema=schema or settings.db_schema,
        role=settings.db_role,
        topics=[t for t in topics.platform_topics() if t.name in (topics.CONSENTS, topics.DISCLOSURES)],
    )
    reader = DecisionReader(lambda: runtime.pool, settings.decision_connections) if settings.decision_connections else None
    deps = Deps(
        pool_getter=lambda: runtime.pool,
        reader=reader,
        partner_topics=PartnerTopics(runtime.ensure_topics),
        directory=directory if directory is not None else OrgDirectory.from_file(settings.network_file),
        cache=DecisionCache(settings.decision_cache_size) if settings.decision_cache_size > 0 else None,
        clock=clock,
        default_validity=timedelta(days=settings.default_validity_days),
        max_validity=timedelta(days=settings.max_validity_days),
        expiry_batch_size=settings.expiry_batch_size,
    )
    consumers.register(runtime, deps)
    if reader is not None:
        runtime.add_worker(lambda rt: reader.run(rt.stopping))
    if run_expiry_worker:
        runtime.add_worker(workers.expiry_worker(deps, settings.expiry_interval_s))
    app = create_app(runtime, [http.router(deps)], title="Lotse consent service")
    app.state.deps = deps
    return app
