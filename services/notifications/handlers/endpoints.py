"""Webhook endpoint commands: an organisation registers, rotates the secret of, re-enables or removes its endpoints."""

from __future__ import annotations

import base64
import logging
import secrets
import uuid

import asyncpg

from ..adapters import repository as repo
from ..domain.commands import EnableEndpoint, RegisterEndpoint, RemoveEndpoint, RotateEndpointSecret
from ..domain.errors import EndpointNotFound, UnknownOrganisation
from ..domain.model import check_endpoint_url
from .deps import Deps

log = logging.getLogger(__name__)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def own_endpoint(conn: asyncpg.Connection | asyncpg.Pool, org_id: str, endpoint_id: uuid.UUID) -> asyncpg.Record:
    """The organisation's endpoint; another organisation's is reported as absent, not as forbidden."""
    row = await repo.get_endpoint(conn, endpoint_id)
    if row is None or row["org_id"] != org_id:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id} for {org_id}")
    return row


async def register_endpoint(cmd: RegisterEndpoint, deps: Deps) -> tuple[asyncpg.Record, str]:
    """Returns the endpoint and its secret, which is shown this once."""
    if not deps.directory.has(cmd.org_id):
        raise UnknownOrganisation(f"{cmd.org_id} is not a member of the network")
    url = check_endpoint_url(cmd.url, allow_http=deps.webhook_allow_http)
    secret = new_secret()
    async with deps.db.pool.acquire() as conn:
        row = await repo.create_endpoint(
            conn, org_id=cmd.org_id, url=url, description=cmd.description, event_types=cmd.event_types, secret=secret
        )
    log.info("webhook endpoint registered", extra={"endpoint_id": str(row["id"]), "org": cmd.org_id})
    return row, secret


async def rotate_endpoint_secret(cmd: RotateEndpointSecret, deps: Deps) -> tuple[asyncpg.Record, str]:
    """Until `previous_secret_expires_at` both secrets sign every request; returns the new one, shown this once."""
    secret = new_secret()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await own_endpoint(conn, cmd.org_id, cmd.endpoint_id)
        row = await repo.rotate_secret(conn, cmd.endpoint_id, secret, deps.secret_rotation_overlap_s, deps.clock.now())
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {cmd.endpoint_id} for {cmd.org_id}")
    log.info(
        "webhook secret rotated",
        extra={"endpoint_id": str(cmd.endpoint_id), "previous_valid_until": row["previous_secret_expires_at"].isoformat()},
    )
    return row, secret


async def enable_endpoint(cmd: EnableEndpoint, deps: Deps) -> asyncpg.Record:
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await own_endpoint(conn, cmd.org_id, cmd.endpoint_id)
        row = await repo.enable_endpoint(conn, cmd.endpoint_id)
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {cmd.endpoint_id} for {cmd.org_id}")
    return row


async def remove_endpoint(cmd: RemoveEndpoint, deps: Deps) -> None:
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await own_endpoint(conn, cmd.org_id, cmd.endpoint_id)
        await repo.delete_endpoint(conn, cmd.endpoint_id)
    log.info("webhook endpoint removed", extra={"endpoint_id": str(cmd.endpoint_id), "org": cmd.org_id})
