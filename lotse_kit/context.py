"""The request context: who acts. Every mutating request names the acting organisation.

Today it comes from the `X-Lotse-Org` header; with JWT roles it will come from
the token's claims, and handlers will not change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header

from contracts.text import FreeText
from contracts.topics import ORG_ID_PATTERN

from .errors import problem

_ORG = re.compile(ORG_ID_PATTERN)


@dataclass(frozen=True)
class RequestContext:
    acting_org: str
    actor: str | None = None  # the caseworker or system user, when known


def request_context(
    x_lotse_org: Annotated[str | None, Header(description="The acting organisation's id.")] = None,
    x_lotse_actor: Annotated[FreeText | None, Header(description="The acting caseworker or system.")] = None,
) -> RequestContext:
    if not x_lotse_org:
        raise problem(400, "Acting organisation missing", "Send the X-Lotse-Org header.", type_="urn:lotse:problem:no-acting-org")
    if not _ORG.fullmatch(x_lotse_org):
        raise problem(
            400,
            "Invalid acting organisation",
            f"X-Lotse-Org {x_lotse_org!r} is not an organisation id.",
            type_="urn:lotse:problem:no-acting-org",
        )
    return RequestContext(acting_org=x_lotse_org, actor=x_lotse_actor)


Ctx = Annotated[RequestContext, Depends(request_context)]
