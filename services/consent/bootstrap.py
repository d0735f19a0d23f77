"""Wires the consent service: settings, network directory, adapters, runtime, consumers, workers, HTTP app.

Tests pass their own settings, schema, clock and adapters (`directory=`, `receipt_texts=`, `cache=`,
`intake=`: a stand-in for intake's internal disclosure API); no mocks.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from contracts import topics
from lotse_kit.clock import Clock, SystemClock
from lotse_kit.http import create_app
from lotse_kit.network import OrgDirectory
from lotse_kit.runtime import Runtime, check_adapters

from .adapters.decision_cache import DecisionCache
from .adapters.decision_reader import DecisionReader
from .adapters.intake import HttpIntakeDisclosures
from .adapters.partner_topics import PartnerTopics
from .adapters.receipt_texts import ReceiptTexts
from .config import ConsentSettings
from .entrypoints import http, workers
from .entrypoints.consumers import DECLARATION
from .handlers import Deps

MIGRATIONS = Path(__file__).parent / "migrations"

# What tests (and tools) may swap: the network directory, the receipt wording, the decision cache (None: off),
# intake's internal disclosure API.
ADAPTERS = frozenset({"directory", "receipt_texts", "cache", "intake"})


def bootstrap(
    settings: ConsentSettings | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    **adapters: Any,
) -> FastAPI:
    check_adapters(adapters, ADAPTERS, service="consent")
    settings = settings or ConsentSettings()
    # A missing or invalid network file raises NetworkConfigError here: the service does not start.
    directory: OrgDirectory = adapters["directory"] if "directory" in adapters else OrgDirectory.from_file(settings.network_file)
    if "cache" in adapters:
        cache = adapters["cache"]
    else:
        cache = DecisionCache(settings.decision_cache_size) if settings.decision_cache_size > 0 else None

    intake = adapters.get("intake") or HttpIntakeDisclosures(settings.intake_url, timeout_s=settings.intake_timeout_s)
    # Every member's outbox and its dead-letter topic: the acknowledgements are read there by pattern.
    outboxes = [spec for org in directory.org_ids() for spec in topics.partner_topics(org) if spec.name != topics.partner_inbox(org)]
    runtime = Runtime(
        DECLARATION,
        settings,
        migrations_dir=MIGRATIONS,
        schema=schema or settings.db_schema,
        role=settings.db_role,
        extra_topics=outboxes,
    )
    reader = DecisionReader(runtime.db, settings.decision_connections) if settings.decision_connections else None
    deps = Deps(
        db=runtime.db,
        outbox=runtime.outbox,
        clock=clock or SystemClock(),
        directory=directory,
        partner_topics=PartnerTopics(runtime.topic_admin),
        receipt_texts=adapters.get("receipt_texts") or ReceiptTexts(),
        intake=intake,
        naming=runtime.naming,
        cache=cache,
        reader=reader,
        default_validity=timedelta(days=settings.default_validity_days),
        max_validity=timedelta(days=settings.max_validity_days),
        expiry_batch_size=settings.expiry_batch_size,
        ack_due_working_days=settings.ack_due_working_days,
        ack_overdue_batch_size=settings.ack_overdue_batch_size,
    )
    runtime.subscribe(deps)
    runtime.add_check("network", directory.health)
    if reader is not None:
        runtime.add_worker("decision-connections", reader)
    if settings.expiry_worker_enabled:
        runtime.add_worker(workers.EXPIRY, workers.expiry_worker(deps, interval_s=settings.expiry_interval_s))
    if settings.ack_overdue_worker_enabled:
        runtime.add_worker(workers.ACK_OVERDUE, workers.overdue_worker(deps, interval_s=settings.ack_overdue_interval_s))
    runtime.on_stop(intake.aclose)
    app = create_app(runtime, [http.router(deps)], title="Lotse consent service")
    app.state.deps = deps
    return app
