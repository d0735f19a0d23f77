"""Wires the notifications service. Parameters let tests swap adapters for fakes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI

from contracts.topics import TopicSpec, platform_topics
from contracts.topics import NOTIFICATIONS
from lotse_kit.http import create_app
from lotse_kit.runtime import Runtime

from .adapters.contacts import Contacts, IntakeContacts
from .adapters.network import NetworkFile, OrgDirectory
from .adapters.senders import EmailSender, HttpSmsGateway, SmsSender, SmtpSender, WebhookSender
from .adapters.templates import Catalog
from .config import NotificationsSettings
from .domain.model import RetryPolicy
from .entrypoints import consumers, http
from .entrypoints.worker import DeliveryWorker
from .handlers import Deps

SERVICE = "notifications"
MIGRATIONS = Path(__file__).parent / "migrations"


def _topic_specs() -> list[TopicSpec]:
    """The topic we produce to, plus the ones we read: created if missing, with the platform's configuration."""
    wanted = {NOTIFICATIONS, *consumers.consumed_topics()}
    return [s for s in platform_topics() if s.name in wanted]


def bootstrap(
    settings: NotificationsSettings | None = None,
    *,
    schema: str | None = None,
    contacts: Contacts | None = None,
    directory: OrgDirectory | Callable[[], OrgDirectory] | None = None,
    email: EmailSender | None = None,
    sms: SmsSender | None = None,
    catalog: Catalog | None = None,
) -> FastAPI:
    settings = settings or NotificationsSettings()
    runtime = Runtime(
        service=SERVICE, settings=settings, migrations_dir=MIGRATIONS,
        schema=schema or settings.db_schema, role=settings.db_role, topics=_topic_specs(),
    )
    if isinstance(directory, OrgDirectory):
        fixed = directory
        directory_fn: Callable[[], OrgDirectory] = lambda: fixed  # noqa: E731
    else:
        directory_fn = directory or NetworkFile(settings.network_file)

    http_client = httpx.AsyncClient(headers={"User-Agent": "Lotse-Notifications/1.0"}, follow_redirects=False)
    contacts = contacts or IntakeContacts(settings.intake_url, settings.intake_timeout_s)
    if sms is None and settings.sms_gateway_url:
        sms = HttpSmsGateway(
            settings.sms_gateway_url, client=http_client, sender=settings.sms_sender, timeout_s=settings.sms_timeout_s,
            token=settings.sms_gateway_token.get_secret_value() if settings.sms_gateway_token else None,
        )
    email = email or SmtpSender(
        host=settings.smtp_host, port=settings.smtp_port, mail_from=settings.mail_from, starttls=settings.smtp_starttls,
        use_ssl=settings.smtp_ssl, username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None, timeout_s=settings.smtp_timeout_s,
    )
    deps = Deps(
        catalog=catalog or Catalog(),
        directory=directory_fn,
        contacts=contacts,
        email=email,
        sms=sms,
        webhooks=WebhookSender(http_client, settings.webhook_timeout_s),
        policy=RetryPolicy(settings.retry_schedule_s, settings.retry_jitter, settings.retry_after_max_s),
        secret_rotation_overlap_s=settings.secret_rotation_overlap_s,
    )

    consumers.register(runtime, deps)
    worker = DeliveryWorker(settings, deps)
    runtime.add_worker(worker)

    runtime.on_stop(http_client.aclose)
    runtime.on_stop(contacts.aclose)

    app = create_app(runtime, [http.router(deps, settings)], title="Lotse notifications")
    app.state.deps = deps
    app.state.worker = worker
    return app
