"""Commands an organisation gives about its webhook endpoints (see handlers.COMMAND_HANDLERS)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class RegisterEndpoint:
    org_id: str
    url: str
    description: str | None = None
    event_types: list[str] | None = None  # all webhook event types when None


@dataclass(frozen=True)
class RotateEndpointSecret:
    org_id: str
    endpoint_id: uuid.UUID


@dataclass(frozen=True)
class EnableEndpoint:
    org_id: str
    endpoint_id: uuid.UUID


@dataclass(frozen=True)
class RemoveEndpoint:
    org_id: str
    endpoint_id: uuid.UUID
