"""Wires the audit service: runtime, repository, ingest subscriber and writer, tree-head signer and HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from lotse_kit.clock import Clock, SystemClock
from lotse_kit.http import create_app
from lotse_kit.network import OrgDirectory
from lotse_kit.runtime import Runtime, check_adapters

from .adapters.keys import load_signing_key
from .adapters.repository import AuditRepository
from .config import AuditSettings
from .entrypoints import http
from .entrypoints.consumers import DECLARATION, IngestConsumer
from .entrypoints.workers import IngestWriter, TreeHeadSigner
from .handlers import Deps

MIGRATIONS = Path(__file__).parent / "migrations"

# Adapters a caller (a test, a benchmark) may replace:
#   signing_key: an Ed25519PrivateKey instead of the configured or generated one;
#   directory:   an OrgDirectory instead of the network file (organisation names, time zone of the report).
ADAPTERS = frozenset({"signing_key", "directory"})


def bootstrap(
    settings: AuditSettings | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    **adapters: Any,
) -> FastAPI:
    check_adapters(adapters, ADAPTERS, service="audit")
    settings = settings or AuditSettings()
    runtime = Runtime(DECLARATION, settings, migrations_dir=MIGRATIONS, schema=schema or settings.db_schema, role=settings.db_role)
    key = adapters.get("signing_key") or load_signing_key(
        settings.signing_key.get_secret_value() if settings.signing_key else None,
        settings.signing_key_file,
        generate=settings.generate_key,
    )
    # A missing or invalid network file stops the service here (NetworkConfigError; exit 2).
    directory = adapters.get("directory") or OrgDirectory.from_file(settings.network_file)
    deps = Deps(
        db=runtime.db,
        repo=AuditRepository(runtime.db, node_cache_size=settings.node_cache_size),
        clock=clock or SystemClock(),
        signing_key=key,
        directory=directory,
        page_max=settings.page_max,
        export_fetch_rows=settings.export_fetch_rows,
    )
    runtime.subscribe(deps)  # registers nothing today: the one subscription, the ingest, is custom

    ingest = IngestConsumer(runtime.broker, runtime.naming, settings, runtime.stopping)
    ingest.register()
    runtime.add_check(f"ingest:{ingest.group_id}", ingest.health)
    runtime.add_check("network", directory.health)
    signer = TreeHeadSigner(deps, delay_s=settings.tree_head_delay_ms / 1000, interval_s=settings.tree_head_interval_s)
    runtime.add_worker("ingest-writer", IngestWriter(ingest, deps, settings, on_grown=signer.log_grew))
    runtime.add_worker("tree-head-signer", signer)

    app = create_app(runtime, [http.router(deps)], title="Lotse audit")
    app.state.deps = deps
    app.state.ingest = ingest
    app.state.tree_head_signer = signer
    return app
