"""Wires the notifications service. Keyword overrides let tests swap adapters for fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from lotse_kit.clock import Clock, SystemClock
from lotse_kit.http import create_app
from lotse_kit.network import OrgDirectory
from lotse_kit.runtime import Runtime, check_adapters

from .adapters.contacts import IntakeContacts
from .adapters.egress import EgressGuard, webhook_client
from .adapters.keys import load_secret_keyring, load_signing_keys
from .adapters.senders import USER_AGENT, HttpSmsGateway, SmtpSender, WebhookSender
from .adapters.templates import Catalog
from .config import NotificationsSettings
from .domain.egress import EgressPolicy
from .domain.model import RetryPolicy
from .entrypoints import http
from .entrypoints.consumers import DECLARATION
from .entrypoints.workers import DeliveryWorker, secret_rewrap
from .handlers import Deps

MIGRATIONS = Path(__file__).parent / "migrations"
# The adapters a caller may replace: intake's contact API, the network directory, the e-mail and SMS senders, the messages,
# and the DNS resolver the egress guard asks (`async (host, port) -> [ip, ...]`; tests simulate DNS rebinding with it).
ADAPTERS = frozenset({"contacts", "directory", "email", "sms", "catalog", "resolver"})


def bootstrap(
    settings: NotificationsSettings | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    **adapters: Any,
) -> FastAPI:
    check_adapters(adapters, ADAPTERS, service="notifications")
    settings = settings or NotificationsSettings()
    clock = clock or SystemClock()
    # A missing or invalid network file stops the service here (NetworkConfigError, exit 2); later edits are reloaded.
    directory = adapters.get("directory") or OrgDirectory.from_file(settings.network_file)
    # Missing or malformed keys stop the service here too (KeyConfigError, exit 2); in development they are generated.
    secrets = load_secret_keyring(
        settings.secret_kek.get_secret_value() if settings.secret_kek else None,
        settings.secret_kek_id,
        {kid: key.get_secret_value() for kid, key in settings.secret_old_keks.items()},
        settings.secret_kek_file,
        generate=settings.generate_keys,
    )
    signing_keys = load_signing_keys(
        settings.webhook_signing_key.get_secret_value() if settings.webhook_signing_key else None,
        settings.webhook_signing_previous_key.get_secret_value() if settings.webhook_signing_previous_key else None,
        settings.webhook_signing_key_file,
        generate=settings.generate_keys,
    )
    runtime = Runtime(DECLARATION, settings, migrations_dir=MIGRATIONS, schema=schema or settings.db_schema, role=settings.db_role)

    http_client = httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=False)
    # Webhooks have their own client: every connection passes the egress guard (SSRF), no proxies from the environment.
    egress = EgressGuard(
        EgressPolicy.from_entries(settings.webhook_allowed_hosts),
        adapters.get("resolver"),
        resolve_timeout_s=settings.webhook_resolve_timeout_s,
    )
    webhook_http = webhook_client(egress, ca_file=settings.webhook_ca_file, user_agent=USER_AGENT)
    contacts = adapters.get("contacts") or IntakeContacts(settings.intake_url, settings.intake_timeout_s)
    sms = adapters.get("sms")
    if sms is None and settings.sms_gateway_url:
        sms = HttpSmsGateway(
            settings.sms_gateway_url,
            client=http_client,
            sender=settings.sms_sender,
            timeout_s=settings.sms_timeout_s,
            clock=clock,
            token=settings.sms_gateway_token.get_secret_value() if settings.sms_gateway_token else None,
        )
    email = adapters.get("email") or SmtpSender(
        host=settings.smtp_host,
        port=settings.smtp_port,
        mail_from=settings.mail_from,
        starttls=settings.smtp_starttls,
        use_ssl=settings.smtp_ssl,
        username=settings.smtp_username,
        clock=clock,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout_s=settings.smtp_timeout_s,
        max_idle=settings.smtp_idle_connections,
        idle_timeout_s=settings.smtp_idle_timeout_s,
    )
    deps = Deps(
        db=runtime.db,
        outbox=runtime.outbox,
        clock=clock,
        directory=directory,
        catalog=adapters.get("catalog") or Catalog(),
        contacts=contacts,
        email=email,
        sms=sms,
        webhooks=WebhookSender(webhook_http, settings.webhook_timeout_s, signing_keys),
        policy=RetryPolicy(settings.retry_schedule_s, settings.retry_jitter, settings.retry_after_max_s),
        secrets=secrets,
        signing_keys=signing_keys,
        egress=egress,
        secret_rotation_overlap_s=settings.secret_rotation_overlap_s,
        webhook_allow_http=settings.webhook_allow_http,
        operator_orgs=frozenset(settings.operator_orgs),
        intake_concurrency=settings.intake_concurrency,
        intake_batch_lookups=settings.intake_batch_lookups,
    )

    runtime.subscribe(deps)
    runtime.add_worker("delivery", DeliveryWorker(settings, deps))
    runtime.add_worker("secret-rewrap", secret_rewrap(deps, settings.secret_rewrap_interval_s))
    runtime.add_check("network", directory.health)
    runtime.on_stop(http_client.aclose)
    runtime.on_stop(webhook_http.aclose)
    runtime.on_stop(contacts.aclose)
    if hasattr(email, "aclose"):  # the SMTP connections kept open between batches
        runtime.on_stop(email.aclose)

    app = create_app(runtime, [http.router(deps)], title="Lotse notifications")
    app.state.deps = deps
    return app
