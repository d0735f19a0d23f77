"""Wires the gateway. Keyword overrides let tests swap adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from lotse_kit.clock import Clock, SystemClock
from lotse_kit.http import create_app
from lotse_kit.network import OrgDirectory
from lotse_kit.runtime import Runtime, check_adapters

from .adapters.inbox import KafkaInbox
from .adapters.push import HttpPusher, WebhookSecrets
from .config import GatewaySettings
from .entrypoints import http
from .entrypoints.consumers import DECLARATION
from .entrypoints.workers import housekeeping, push, reader_probe, unfetched
from .handlers import Deps

MIGRATIONS = Path(__file__).parent / "migrations"
# The adapters a caller may replace: the network directory, the inbox reader, the webhook sender.
ADAPTERS = frozenset({"directory", "inbox", "pusher"})


def bootstrap(
    settings: GatewaySettings | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    **adapters: Any,
) -> FastAPI:
    check_adapters(adapters, ADAPTERS, service="gateway")
    settings = settings or GatewaySettings()
    clock = clock or SystemClock()
    # A missing or invalid network file stops the service here (NetworkConfigError, exit 2); later edits are reloaded.
    directory = adapters.get("directory") or OrgDirectory.from_file(settings.network_file)
    # A malformed configured secret stops the service here too (InvalidSecret, exit 2).
    secrets = WebhookSecrets(
        {org: s.get_secret_value() for org, s in settings.webhook_keys.items()},
        settings.webhook_key_dir,
        generate=settings.generate_webhook_keys,
    )
    runtime = Runtime(DECLARATION, settings, migrations_dir=MIGRATIONS, schema=schema or settings.db_schema, role=settings.db_role)
    inbox = adapters.get("inbox") or KafkaInbox(
        runtime.kafka, runtime.naming, idle_s=settings.reader_idle_s, probe_timeout_s=settings.readiness_timeout_s
    )
    pusher = adapters.get("pusher") or HttpPusher(settings.push_timeout_s)
    deps = Deps(
        db=runtime.db,
        outbox=runtime.outbox,
        naming=runtime.naming,
        clock=clock,
        directory=directory,
        inbox=inbox,
        pusher=pusher,
        secrets=secrets,
        page_max=settings.page_max,
        page_default=settings.page_default,
        wait_max_s=settings.wait_max_s,
        batch_max=settings.batch_max,
        push_batch=settings.push_batch,
        push_retry_base_s=settings.push_retry_base_s,
        push_retry_max_s=settings.push_retry_max_s,
        push_allow_http=settings.push_allow_http,
        unfetched_after=settings.unfetched_after,
        unfetched_repeat_after=settings.unfetched_repeat_after,
    )
    runtime.subscribe(deps)  # nothing: the inbox subscription is the gateway's own reader (custom)
    runtime.add_worker("push", push(deps, settings.push_interval_s))
    runtime.add_worker("unfetched", unfetched(deps, settings.unfetched_check_interval_s))
    runtime.add_worker("housekeeping", housekeeping(deps, getattr(inbox, "close_idle", None)))
    runtime.add_check("network", directory.health)
    # The per-organisation readers are Kafka clients of their own, outside the kit's `kafka` check.
    probe = reader_probe(getattr(inbox, "probe", None), settings.reader_probe_interval_s)
    if probe is not None:
        runtime.add_worker("inbox-reader-probe", probe)
        runtime.add_check("inbox-readers", inbox.health)
    runtime.on_stop(inbox.aclose)
    runtime.on_stop(pusher.aclose)

    app = create_app(runtime, [http.router(deps, body_max_bytes=settings.body_max_bytes)], title="Lotse HTTPS gateway")
    app.state.deps = deps
    return app
