"""What the HTTP GETs show: an organisation's webhook endpoints, the webhook signing public keys and the notification status API.

Operators (the `operator` role, and organisations in settings.operator_orgs) see every notification;
other organisations what was addressed to or concerns them (`lotse_kit.access.notification_scope`).
Another organisation's endpoint or notification is reported as absent.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from .adapters import repository as repo
from .domain.errors import NotificationNotFound
from .handlers.deps import Deps
from .handlers.endpoints import own_endpoint


def public_keys(deps: Deps) -> list[dict[str, str]]:
    """The Ed25519 public keys that verify `v1a` signatures; the current one first. Public by nature."""
    return [
        {"key_id": k.key_id, "public_key": k.public_key, "status": "current" if i == 0 else "previous"}
        for i, k in enumerate(deps.signing_keys)
    ]


async def endpoints(deps: Deps, org_id: str) -> list[asyncpg.Record]:
    return await repo.list_endpoints(deps.db.pool, org_id)


async def endpoint(deps: Deps, org_id: str, endpoint_id: uuid.UUID) -> asyncpg.Record:
    return await own_endpoint(deps.db.pool, org_id, endpoint_id)


async def notifications(
    deps: Deps,
    visible_to: str | None,
    *,
    client_id: uuid.UUID | None = None,
    status: str | None = None,
    channel: str | None = None,
    trigger_event_id: uuid.UUID | None = None,
    before: datetime | None = None,
    limit: int = 100,
) -> list[asyncpg.Record]:
    return await repo.list_notifications(
        deps.db.pool,
        visible_to=visible_to,
        client_id=client_id,
        status=status,
        channel=channel,
        trigger_event_id=trigger_event_id,
        before=before,
        limit=limit,
    )


async def notification(deps: Deps, visible_to: str | None, notification_id: uuid.UUID) -> tuple[dict[str, Any], list[asyncpg.Record]]:
    """The notification (without its list of concerned organisations) and its attempts; `visible_to` None: any."""
    row, attempts = await repo.get_notification(deps.db.pool, notification_id)
    org = visible_to
    if row is None or (org is not None and row["recipient_org"] != org and org not in (row["concerned_orgs"] or [])):
        raise NotificationNotFound(f"no notification {notification_id}")
    return {k: v for k, v in dict(row).items() if k != "concerned_orgs"}, attempts
