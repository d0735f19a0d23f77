"""HTTP API: a partner's inbox (pull and acknowledge) and outbox over HTTPS. Thin: parse, call views or handlers.

Access (`lotse_kit.access`, docs/security.md): only a partner system's token (role `partner_system`) acting for
the organisation in the path. Another organisation, a caseworker, a district role or a service token is refused
(403), no token 401. Refusals are domain errors (domain/errors.py) that the kit turns into problem+json.
"""

# No `from __future__ import annotations`: route parameters are typed with access policies bound inside
# the router builder (local names), and FastAPI resolves postponed annotations in module globals only.

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from contracts.structured import BATCH, STRUCTURED
from lotse_kit import access
from lotse_kit.context import RequestContext

from .. import views
from ..domain.commands import AcknowledgeRecords, SubmitEvents
from ..domain.cursors import MAX_LENGTH
from ..domain.errors import InboxUnavailable, InvalidEvent, NotYourInbox, TooLarge, UnsupportedMediaType
from ..handlers import Deps, handle

ORG = r"^[a-z0-9][a-z0-9-]{1,62}$"


class RecordOut(BaseModel):
    cursor: str = Field(description="Opaque; acknowledging it acknowledges this record and every record before it in the page.")
    event: dict[str, Any] | None = Field(description="The record as a structured CloudEvent (sealed content stays sealed).")
    problem: str | None = Field(None, description="Only for a record that is no CloudEvent (event is null).")


class PageOut(BaseModel):
    records: list[RecordOut]
    next_cursor: str = Field(description="The last record's cursor, or the given one (or the acknowledged position) when there are none.")


class AcknowledgementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cursor: str = Field(min_length=1, max_length=MAX_LENGTH)


class AcceptedOut(BaseModel):
    accepted: list[str] = Field(description="The ids of the events, in order (also those posted before: the POST is idempotent by id).")


def _own(ctx: RequestContext, org: str) -> None:
    if ctx.acting_org != org:
        raise NotYourInbox(f"A partner system acts for {ctx.acting_org} only.")


@contextmanager
def _reading_kafka() -> Iterator[None]:
    """A reader that cannot reach Kafka is a 503 the partner retries, not an internal error (adapters/inbox.py)."""
    try:
        yield
    except (KafkaError, OSError, TimeoutError) as exc:
        raise InboxUnavailable(f"The inbox cannot be read now ({type(exc).__name__}); ask again later.") from exc


def router(deps: Deps, *, body_max_bytes: int = 1_000_000) -> APIRouter:
    r = APIRouter(prefix="/v1/partners/{org}", tags=["partner inbox and outbox"])
    guard = access.Guard(deps.directory)
    Partner = Annotated[RequestContext, guard(access.PARTNER_SYSTEMS)]
    OrgPath = Annotated[str, Path(pattern=ORG, description="The organisation id (network file).")]

    @r.get("/inbox", response_model=PageOut, response_model_exclude_none=True)
    async def get_inbox(
        org: OrgPath,
        ctx: Partner,
        after: Annotated[
            str | None, Query(max_length=MAX_LENGTH, description="A cursor; default: after the last acknowledged record.")
        ] = None,
        limit: Annotated[int | None, Query(ge=1, le=5000, description="At most this many records (capped by the gateway).")] = None,
        wait: Annotated[float, Query(ge=0, le=300, description="Seconds to wait for a record when none is there (long poll).")] = 0,
    ) -> dict[str, Any]:
        _own(ctx, org)
        with _reading_kafka():
            return await views.inbox_page(org, after, limit, wait, deps)

    @r.post("/inbox/acknowledgements", status_code=204, response_class=Response)
    async def acknowledge(org: OrgPath, body: AcknowledgementIn, ctx: Partner) -> Response:
        _own(ctx, org)
        with _reading_kafka():
            await handle(AcknowledgeRecords(org=org, cursor=body.cursor), deps)
        return Response(status_code=204)

    @r.post(
        "/outbox",
        status_code=202,
        response_model=AcceptedOut,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {STRUCTURED: {"schema": {"type": "object"}}, BATCH: {"schema": {"type": "array", "items": {"type": "object"}}}},
            }
        },
    )
    async def post_outbox(org: OrgPath, request: Request, ctx: Partner) -> dict[str, Any]:
        _own(ctx, org)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in (STRUCTURED, BATCH):
            raise UnsupportedMediaType(f"Post one event as {STRUCTURED} or a list as {BATCH}.")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > body_max_bytes:
                raise TooLarge(f"At most {body_max_bytes} bytes per request.")
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidEvent("The body is not JSON.") from None
        if ctype == STRUCTURED:
            if not isinstance(parsed, dict):
                raise InvalidEvent(f"{STRUCTURED} is one event (a JSON object); post a list as {BATCH}.")
            events = [parsed]
        else:
            if not isinstance(parsed, list):
                raise InvalidEvent(f"{BATCH} is a JSON list of events.")
            events = parsed
        ids = await handle(SubmitEvents(org=org, events=events), deps)
        return {"accepted": ids}

    return r
