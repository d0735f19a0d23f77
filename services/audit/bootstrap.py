"""Wires the audit service: runtime, repository, ingest subscriber, tree-head signer and HTTP API."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from lotse_kit.http import create_app
from lotse_kit.network import NetworkConfigError, load_network
from lotse_kit.runtime import Runtime

from .adapters.keys import load_signing_key
from .adapters.repository import AuditRepository
from .config import AuditSettings
from .entrypoints import http
from .entrypoints.consumers import IngestConsumer, tree_head_signer

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


class AuditRuntime(Runtime):
    """The kit's runtime plus the ingest subscriber in readiness (it is not a kit `EventConsumer`)."""

    ingest: IngestConsumer | None = None

    async def readiness(self) -> dict[str, Any]:
        checks = await super().readiness()
        if self.ingest is not None:
            checks[f"ingest:{self.ingest.group_id}"] = self.ingest.health()
        return checks


def load_org_names(network_file: Path | None) -> dict[str, str]:
    """Organisation names for the readable report, from the network configuration if it is there."""
    if network_file is None or not network_file.exists():
        return {}
    try:
        network = load_network(network_file)
    except NetworkConfigError as exc:  # names are a nicety in the report; ids remain
        log.warning("organisation names unavailable", extra={"error": str(exc)})
        return {}
    return {o.id: o.name for o in network.organisations}


def bootstrap(
    settings: AuditSettings | None = None,
    *,
    schema: str | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    org_names: Mapping[str, str] | None = None,
    network_file: Path | None = None,
) -> FastAPI:
    settings = settings or AuditSettings()
    runtime = AuditRuntime(
        service="audit",
        settings=settings,
        migrations_dir=MIGRATIONS,
        schema=schema or settings.db_schema,
        role=settings.db_role,
        topics=[],  # the audit service produces nothing
    )
    key = signing_key or load_signing_key(
        settings.signing_key.get_secret_value() if settings.signing_key else None,
        settings.signing_key_file,
        generate=settings.generate_key,
    )
    repo = AuditRepository(lambda: runtime.pool, schema=runtime.schema, node_cache_size=settings.node_cache_size)
    ingest = IngestConsumer(runtime, settings, repo)
    ingest.register()
    runtime.ingest = ingest
    runtime.add_worker(tree_head_signer(repo, key, settings.tree_head_interval_s))
    names = org_names if org_names is not None else load_org_names(network_file or settings.network_file)
    app = create_app(runtime, [http.router(repo, settings, key, names)], title="Lotse audit")
    app.state.repo = repo
    app.state.ingest = ingest
    app.state.signing_key = key
    return app
