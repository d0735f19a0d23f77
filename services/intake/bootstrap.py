"""Wires intake: settings, network, adapters, runtime, consumers, scheduler, HTTP app.

Tests pass their own settings, schema, clock and consent decisions (fakes, no mocks).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from contracts import topics
from contracts.topics import TopicSpec
from lotse_kit.http import create_app
from lotse_kit.runtime import Runtime

from . import handlers
from .adapters.clock import Clock, SystemClock
from .adapters.consent import ConsentDecisions, HttpConsentDecisions
from .config import IntakeSettings
from .entrypoints import consumers, scheduler
from .entrypoints.http import build_router, install_error_mapping
from lotse_kit.network import Network, load_network

SERVICE = "intake"
MIGRATIONS = Path(__file__).parent / "migrations"

# Topics intake produces to, plus the one it consumes (so a fresh deployment can subscribe).
_OWN = (topics.CLIENTS, topics.REFERRALS, topics.DEADLINES, topics.DISCLOSURE_REQUESTS, topics.DISCLOSURES)


def topic_specs(network: Network) -> list[TopicSpec]:
    specs = [s for s in topics.platform_topics() if s.name in _OWN or s.name.removesuffix(topics.DLQ_SUFFIX) in _OWN]
    # Every member's partner topics: intake subscribes to their outboxes by pattern.
    for org in network.org_ids():
        specs += topics.partner_topics(org)
    return specs


def bootstrap(
    settings: IntakeSettings | None = None,
    *,
    schema: str | None = None,
    network: Network | None = None,
    consent: ConsentDecisions | None = None,
    clock: Clock | None = None,
    with_scheduler: bool = True,
) -> FastAPI:
    settings = settings or IntakeSettings()
    network = network or load_network(settings.network_file)  # an invalid file stops the service here
    consent = consent or HttpConsentDecisions(settings.consent_url, timeout_s=settings.consent_timeout_s)
    deps = handlers.Deps(network=network, consent=consent, clock=clock or SystemClock(), settings=settings)
    runtime = Runtime(service=SERVICE, settings=settings, migrations_dir=MIGRATIONS, schema=schema, topics=topic_specs(network))
    consumers.register(runtime, deps)

    runtime.on_stop(consent.aclose)
    if with_scheduler:
        runtime.add_worker(scheduler.deadline_scheduler(deps))
    app = create_app(runtime, [build_router(runtime, deps)], title="Lotse intake")
    install_error_mapping(app)
    app.state.deps = deps
    return app
