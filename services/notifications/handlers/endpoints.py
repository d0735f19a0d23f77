"""Webhook endpoint commands: an organisation registers, rotates the secret of, re-enables or removes its endpoints.

A secret is returned once, by the command that made it; it is stored sealed under the service's KEK
(adapters/keys.py) and never read back except to sign. Nothing here logs a secret.
"""

from __future__ import annotations

import base64
import logging
import secrets
import uuid

import asyncpg

from ..adapters import repository as repo
from ..adapters.egress import RefusedDestination
from ..adapters.keys import seal_secret
from ..domain.commands import EnableEndpoint, RegisterEndpoint, RemoveEndpoint, RotateEndpointSecret
from ..domain.errors import EndpointHasNoSecret, EndpointNotFound, InvalidEndpointUrl, UnknownOrganisation
from ..domain.model import PUBLIC_ONLY, check_endpoint_url
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
    url = check_endpoint_url(cmd.url, allow_http=deps.webhook_allow_http, policy=deps.egress.policy)
    try:  # what the host name resolves to now; every delivery checks again before it connects
        await deps.egress.check_url(url)
    except RefusedDestination as exc:
        raise InvalidEndpointUrl(f"{exc}; {PUBLIC_ONLY}") from None
    except ValueError as exc:
        raise InvalidEndpointUrl(str(exc)) from None
    endpoint_id = uuid.uuid4()
    secret = new_secret()
    async with deps.db.pool.acquire() as conn:
        row = await repo.create_endpoint(
            conn,
            endpoint_id=endpoint_id,
            org_id=cmd.org_id,
            url=url,
            description=cmd.description,
            event_types=cmd.event_types,
            secret=seal_secret(deps.secrets, secret, endpoint_id),
        )
    log.info("webhook endpoint registered", extra={"endpoint_id": str(row["id"]), "org": cmd.org_id})
    return row, secret


async def rotate_endpoint_secret(cmd: RotateEndpointSecret, deps: Deps) -> tuple[asyncpg.Record, str]:
    """Until `previous_secret_expires_at` both secrets sign every request; returns the new one, shown this once."""
    secret = new_secret()
    sealed = seal_secret(deps.secrets, secret, cmd.endpoint_id)
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await own_endpoint(conn, cmd.org_id, cmd.endpoint_id)
        row = await repo.rotate_secret(conn, cmd.endpoint_id, sealed, deps.secret_rotation_overlap_s, deps.clock.now())
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {cmd.endpoint_id} for {cmd.org_id}")
    previous_until = row["previous_secret_expires_at"]
    log.info(
        "webhook secret rotated",
        extra={
            "endpoint_id": str(cmd.endpoint_id),
            "kek_id": sealed.kek_id,
            "previous_valid_until": previous_until.isoformat() if previous_until else None,
        },
    )
    return row, secret


async def enable_endpoint(cmd: EnableEndpoint, deps: Deps) -> asyncpg.Record:
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await own_endpoint(conn, cmd.org_id, cmd.endpoint_id)
        if not await repo.has_secret(conn, cmd.endpoint_id):
            raise EndpointHasNoSecret(f"webhook endpoint {cmd.endpoint_id} has no secret: rotate the secret first, then enable it")
        row = await repo.enable_endpoint(conn, cmd.endpoint_id)
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {cmd.endpoint_id} for {cmd.org_id}")
    return row


async def remove_endpoint(cmd: RemoveEndpoint, deps: Deps) -> None:
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await own_endpoint(conn, cmd.org_id, cmd.endpoint_id)
        await repo.delete_endpoint(conn, cmd.endpoint_id)
    log.info("webhook endpoint removed", extra={"endpoint_id": str(cmd.endpoint_id), "org": cmd.org_id})
