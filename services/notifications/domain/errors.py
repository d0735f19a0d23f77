"""What the notifications service refuses, as domain errors: the kit maps them to problem+json once."""

from __future__ import annotations

from lotse_kit.errors import Conflict, Forbidden, Invalid, NotFound


class InvalidEndpointUrl(Invalid):
    title = "Invalid endpoint URL"
    type = "urn:lotse:problem:invalid-endpoint-url"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="url")


class UnknownOrganisation(Forbidden):
    title = "Unknown organisation"
    type = "urn:lotse:problem:unknown-org"


class EndpointNotFound(NotFound):
    """Also for another organisation's endpoint: reported as absent, not as forbidden."""

    title = "Endpoint not found"


class NotificationNotFound(NotFound):
    title = "Notification not found"


class EndpointHasNoSecret(Conflict):
    """An endpoint whose secret was discarded (migration 002) signs nothing until the organisation rotates it."""

    title = "Endpoint has no secret"
    type = "urn:lotse:problem:endpoint-without-secret"
