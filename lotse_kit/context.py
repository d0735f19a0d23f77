"""The request context: who acts. The acting organisation comes from the caller's verified OIDC token.

A caseworker's or partner system's token carries its organisation (`org` claim). A service's own
token (client credentials, `service` claim) carries none: when a service asks another on behalf of an
organisation (notifications asking intake for a client's contact channels), it names that
organisation in the `Lotse-On-Behalf-Of` header, which is honoured only for service tokens. Every
request that acts is logged with the token's subject and organisation.

The services' routes get their context through an access policy (`lotse_kit.access`), which builds
these contexts after checking roles and membership; `Ctx` and `CallerCtx` here resolve the acting
organisation without any policy and are refused on a service's routes (`access.check_routes`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from contracts.topics import ORG_ID_PATTERN

from .auth import Principal, principal
from .errors import Forbidden

log = logging.getLogger(__name__)

ON_BEHALF_OF = "Lotse-On-Behalf-Of"
_ORG = re.compile(ORG_ID_PATTERN)


class NoActingOrganisation(Forbidden):
    title = "No acting organisation"
    type = "urn:lotse:problem:no-acting-org"


@dataclass(frozen=True)
class RequestContext:
    acting_org: str
    actor: str  # the token's subject: the caseworker, partner system or service
    principal: Principal


@dataclass(frozen=True)
class CallerContext:
    """Any authenticated caller, also one acting for no organisation (a district auditor or
    data-protection officer, an operator, a service)."""

    acting_org: str | None
    actor: str
    principal: Principal


def request_path(request: Request) -> str:
    """`request.url.path` without building the URL (its host, query and parse cost some µs per request)."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def log_request(request: Request, caller: Principal, org: str | None, *, policy: str | None = None) -> None:
    """Every request that acts: who (the token's subject, its service) for which organisation, under which policy."""
    if not log.isEnabledFor(logging.INFO):
        return  # a service logging warnings only: nothing to build
    # `caller_service`: a line's own `service` is the service writing it (lotse_kit.logging), which a field of that name
    # would not replace.
    extra = {
        "method": request.method,
        "path": request_path(request),
        "subject": caller.subject,
        "org": org,
        "caller_service": caller.service,
    }
    if policy is not None:
        extra["policy"] = policy
    log.info("request", extra=extra)


def org_id_or_none(value: str | None) -> str | None:
    """`value` if it is a well-formed organisation id; a malformed `Lotse-On-Behalf-Of` is refused."""
    if value is None:
        return None
    if not _ORG.fullmatch(value):
        raise NoActingOrganisation(f"{ON_BEHALF_OF} {value[:80]!r} is not an organisation id.")
    return value


async def caller_context(request: Request, caller: Annotated[Principal, Depends(principal)]) -> CallerContext:
    log_request(request, caller, caller.org)
    return CallerContext(acting_org=caller.org, actor=caller.subject, principal=caller)


async def request_context(request: Request, caller: Annotated[Principal, Depends(principal)]) -> RequestContext:
    org = caller.org
    if caller.service is not None:
        org = org_id_or_none(request.headers.get(ON_BEHALF_OF)) or org
    if org is None:
        raise NoActingOrganisation("The access token names no organisation to act for.")
    log_request(request, caller, org)
    return RequestContext(acting_org=org, actor=caller.subject, principal=caller)


# An organisation acts (caseworkers, partner systems, a service on an organisation's behalf).
Ctx = Annotated[RequestContext, Depends(request_context)]
# Any authenticated caller (the audit API: auditors and data-protection officers, also district-wide).
CallerCtx = Annotated[CallerContext, Depends(caller_context)]
