"""HTTP API (JSON; errors as application/problem+json, mapped by the kit from `domain.errors`).

Thin: each route turns the request into a command (body + acting organisation + path) or a query,
and hands it to `handlers.handle` or `views`. Each route declares its access policy
(`lotse_kit.access`, see docs/security.md): an organisation's caseworkers and partner systems work
cases; the contact API answers only the notifications service on behalf of an organisation; the internal
disclosure API (`/internal/v1/disclosures`, `/internal/v1/clients/...`) answers only the consent service's own token, the
internal batch contact API (`/internal/v1/contacts`) only the notifications service's.
"""

# No `from __future__ import annotations`: route parameters are typed with access policies bound inside
# the router builder (local names), and FastAPI resolves postponed annotations in module globals only.

import uuid
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel

from contracts.topics import ORG_ID_PATTERN
from contracts.vocab import DataCategory
from lotse_kit import access
from lotse_kit.context import CallerContext, RequestContext

from .. import views
from ..domain import commands as cmds
from ..domain.referrals import ReferralStatus
from ..handlers import handle
from ..handlers.deps import Deps

C = TypeVar("C", bound=cmds.Command)


def command(cls: type[C], body: BaseModel | None, **context: Any) -> C:
    """The command from what the caller sent (only the fields it sent count as given) and who acts on what."""
    given = body.model_dump(exclude_unset=True) if body is not None else {}
    return cls.model_validate({**given, **context})


def build_router(deps: Deps) -> APIRouter:
    """The public API under /v1 and the internal one (for the consent gate) under /internal/v1."""
    r = APIRouter(prefix="/v1")
    internal = APIRouter(prefix="/internal/v1")
    guard = access.Guard(deps.directory)
    Ctx = Annotated[RequestContext, guard(access.ORG_STAFF)]
    Contact = Annotated[RequestContext, guard(access.CONTACT_LOOKUP)]
    Anyone = Annotated[CallerContext, guard(access.AUTHENTICATED)]
    ConsentGate = Annotated[CallerContext, guard(access.CONSENT_GATE)]
    ContactsBatch = Annotated[CallerContext, guard(access.CONTACT_LOOKUP_BATCH)]

    # ------------------------------------------------------------ clients
    @r.post("/clients", status_code=201, tags=["clients"], summary="Register a client")
    async def register_client(body: cmds.RegisterClientBody, ctx: Ctx, response: Response) -> dict[str, Any]:
        client_id = await handle(command(cmds.RegisterClient, body, acting_org=ctx.acting_org), deps)
        response.headers["Location"] = f"/v1/clients/{client_id}"
        return {"client_id": client_id}

    @r.get(
        "/clients/{client_id}",
        tags=["clients"],
        summary="A client's case: all of it for the registering and responsible organisation, consented categories for a receiver",
    )
    async def get_client(client_id: uuid.UUID, ctx: Ctx) -> dict[str, Any]:
        return await views.get_client(deps, client_id, ctx.acting_org)

    @r.patch("/clients/{client_id}", tags=["clients"], summary="Update needs, languages, residence title, contact")
    async def update_client(client_id: uuid.UUID, body: cmds.UpdateClientBody, ctx: Ctx) -> dict[str, Any]:
        changed = await handle(command(cmds.UpdateClient, body, acting_org=ctx.acting_org, client_id=client_id), deps)
        return {"client_id": client_id, "changed": changed}

    @r.delete(
        "/clients/{client_id}",
        tags=["clients"],
        summary="Erase the client's personal data (GDPR Art. 17); 409 while a retention period runs; idempotent",
    )
    async def erase_client(client_id: uuid.UUID, ctx: Ctx) -> dict[str, Any]:
        return await handle(command(cmds.EraseClient, None, acting_org=ctx.acting_org, client_id=client_id), deps)

    @r.post("/clients/{client_id}/handover", tags=["clients"], summary="Hand the case over to another organisation (Rechtskreiswechsel)")
    async def hand_over(client_id: uuid.UUID, body: cmds.HandOverCaseBody, ctx: Ctx) -> dict[str, Any]:
        return await handle(command(cmds.HandOverCase, body, acting_org=ctx.acting_org, client_id=client_id), deps)

    @r.get(
        "/clients/{client_id}/contact",
        tags=["clients"],
        summary="Contact data, if the client consented to notifications by this organisation",
    )
    async def contact(client_id: uuid.UUID, ctx: Contact) -> dict[str, Any]:
        return await views.get_contact(deps, client_id, ctx.acting_org)

    # ------------------------------------------------------------ referrals
    @r.post("/clients/{client_id}/referrals", status_code=201, tags=["referrals"], summary="Refer the client (consent-gated)")
    async def send_referral(client_id: uuid.UUID, body: cmds.SendReferralBody, ctx: Ctx, response: Response) -> dict[str, Any]:
        out = await handle(command(cmds.SendReferral, body, acting_org=ctx.acting_org, client_id=client_id), deps)
        response.headers["Location"] = f"/v1/referrals/{out['referral_id']}"
        return out

    @r.get("/referrals", tags=["referrals"], summary="Worklist: sent by us, sent to us, overdue")
    async def list_referrals(
        ctx: Ctx,
        org: Annotated[str | None, Query(pattern=ORG_ID_PATTERN, description="Defaults to the acting organisation.")] = None,
        status: ReferralStatus | None = None,
        view: Literal["all", "sent", "received", "overdue"] = "all",
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        items = await views.list_referrals(
            deps, org=org or ctx.acting_org, view=view, status=status.value if status else None, acting_org=ctx.acting_org, limit=limit
        )
        return {"org": org or ctx.acting_org, "view": view, "items": items}

    @r.get("/referrals/{referral_id}", tags=["referrals"])
    async def get_referral(referral_id: uuid.UUID, ctx: Ctx) -> dict[str, Any]:
        return await views.get_referral(deps, referral_id, ctx.acting_org)

    @r.post("/referrals/{referral_id}/accept", tags=["referrals"], summary="The receiver accepts")
    async def accept(referral_id: uuid.UUID, ctx: Ctx, body: Annotated[cmds.AcceptReferralBody | None, Body()] = None) -> dict[str, Any]:
        return await handle(command(cmds.AcceptReferral, body, acting_org=ctx.acting_org, referral_id=referral_id), deps)

    @r.post("/referrals/{referral_id}/decline", tags=["referrals"], summary="The receiver declines, with a reason")
    async def decline(referral_id: uuid.UUID, body: cmds.DeclineReferralBody, ctx: Ctx) -> dict[str, Any]:
        return await handle(command(cmds.DeclineReferral, body, acting_org=ctx.acting_org, referral_id=referral_id), deps)

    @r.post("/referrals/{referral_id}/complete", tags=["referrals"], summary="The receiver completes")
    async def complete(
        referral_id: uuid.UUID, ctx: Ctx, body: Annotated[cmds.CompleteReferralBody | None, Body()] = None
    ) -> dict[str, Any]:
        return await handle(command(cmds.CompleteReferral, body, acting_org=ctx.acting_org, referral_id=referral_id), deps)

    @r.post("/referrals/{referral_id}/revoke", tags=["referrals"], summary="The sender revokes")
    async def revoke(referral_id: uuid.UUID, ctx: Ctx, body: Annotated[cmds.RevokeReferralBody | None, Body()] = None) -> dict[str, Any]:
        return await handle(command(cmds.RevokeReferral, body, acting_org=ctx.acting_org, referral_id=referral_id), deps)

    # ------------------------------------------------------------ deadlines
    @r.post("/clients/{client_id}/deadlines", status_code=201, tags=["deadlines"], summary="Register a deadline")
    async def register_deadline(client_id: uuid.UUID, body: cmds.RegisterDeadlineBody, ctx: Ctx) -> dict[str, Any]:
        return await handle(command(cmds.RegisterDeadline, body, acting_org=ctx.acting_org, client_id=client_id), deps)

    @r.post("/deadlines/{deadline_id}/resolve", tags=["deadlines"], summary="Resolve a deadline")
    async def resolve_deadline(
        deadline_id: uuid.UUID, ctx: Ctx, body: Annotated[cmds.ResolveDeadlineBody | None, Body()] = None
    ) -> dict[str, Any]:
        return await handle(command(cmds.ResolveDeadline, body, acting_org=ctx.acting_org, deadline_id=deadline_id), deps)

    # ------------------------------------------------------------ network
    @r.get("/network", tags=["network"], summary="The network configuration: organisations, services, process plans")
    async def network(_: Anyone) -> dict[str, Any]:
        return views.network(deps)

    # ------------------------------------------------------------ internal: the consent gate fetches what it forwards
    @internal.get(
        "/clients/{client_id}/disclosure",
        tags=["internal"],
        summary="For the consent service only: the client's personal data of exactly these categories, the referral's notes, "
        "do_not_contact (contracts.events.SealedContent)",
    )
    async def disclosure(
        client_id: uuid.UUID,
        _: ConsentGate,
        category: Annotated[list[DataCategory], Query(min_length=1, description="The categories to hand out; repeat the parameter.")],
        referral_id: Annotated[uuid.UUID | None, Query(description="A referral of this client: its notes are included.")] = None,
    ) -> dict[str, Any]:
        return await views.get_disclosure(deps, client_id, list(dict.fromkeys(category)), referral_id)

    @internal.post(
        "/disclosures",
        tags=["internal"],
        summary=f"For the consent service only: the disclosure above for each of up to {cmds.DISCLOSURE_BATCH_MAX} requests, "
        "in order; per item the content, `erased` (the single route's 410), `not-found` (its 404) or `unavailable`",
    )
    async def disclosures(body: cmds.DisclosuresBody, _: ConsentGate) -> dict[str, Any]:
        return {"items": await views.get_disclosures(deps, body.items)}

    # ------------------------------------------------------------ internal: the notifications service's batch of lookups
    @internal.post(
        "/contacts",
        tags=["internal"],
        summary=f"For the notifications service only: GET /v1/clients/{{client_id}}/contact for each of up to {cmds.CONTACT_BATCH_MAX} "
        "lookups (each naming the organisation it asks for), in order; per item the contact, or the status and problem the single "
        "route would answer; one consent decision request for the whole list",
    )
    async def contacts(body: cmds.ContactsBody, _: ContactsBatch) -> dict[str, Any]:
        return {"items": await views.get_contacts(deps, body.items)}

    root = APIRouter()
    root.include_router(r)
    root.include_router(internal)
    return root
