"""Domain errors: what a command refuses, and how that reads over HTTP.

Services raise these (or their own subclasses) from `handlers/` and `domain/`; the kit maps
every one of them to an RFC 9457 problem+json response in one place (`problems.install`), so no
route catches and translates errors itself. An infrastructure failure that heals by itself (one of
`lotse_kit.retry.TRANSIENT_ERRORS`: the database restarting, a connection lost, Kafka away) is answered
as `InfrastructureUnavailable` by the kit's problem handlers (`lotse_kit.problems.install`), never as a 500.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A refusal with an HTTP status, a stable problem type and a human-readable detail.

    Subclasses set `status`, `title` and `type`; `extensions` become extra members of the problem body
    (e.g. `missing_categories`). A service subclasses the closest of the classes below.
    """

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    type: ClassVar[str] = "urn:lotse:problem:bad-request"
    # Response headers, e.g. Retry-After on a 503 whose cause heals by itself.
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str | None = None, *, title: str | None = None, type_: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or title or self.title)
        self.detail = detail
        self.instance_title = title or self.title
        self.instance_type = type_ or self.type
        self.extensions = extensions


class BadRequest(DomainError):
    status = 400


class Unauthorized(DomainError):
    status = 401
    title = "Not authenticated"
    type = "urn:lotse:problem:unauthenticated"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    type = "urn:lotse:problem:forbidden"


class NotFound(DomainError):
    status = 404
    title = "Not found"
    type = "urn:lotse:problem:not-found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
    type = "urn:lotse:problem:conflict"


class Gone(DomainError):
    status = 410
    title = "Gone"
    type = "urn:lotse:problem:gone"


class Invalid(DomainError):
    status = 422
    title = "Invalid request"
    type = "urn:lotse:problem:validation"


class Unavailable(DomainError):
    """A dependency (another service) cannot answer now; the caller may retry."""

    status = 503
    title = "Service unavailable"
    type = "urn:lotse:problem:unavailable"


class InfrastructureUnavailable(Unavailable):
    """The service's own infrastructure (database, broker, network) failed in a way that heals by itself."""

    title = "Temporarily unavailable"
    type = "urn:lotse:problem:infrastructure-unavailable"
    # A PostgreSQL restart or failover takes seconds; the caller's own backoff decides beyond that.
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


def problem(status: int, title: str, detail: str | None = None, *, type_: str | None = None, **extensions: Any) -> DomainError:
    """A one-off refusal from an entrypoint where no domain class fits (e.g. a malformed cursor)."""
    cls = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 422: Invalid, 503: Unavailable}.get(
        status
    )
    if cls is None:
        raise ValueError(f"no domain error for status {status}")
    return cls(detail, title=title, type_=type_, **extensions)
