"""HTTP API (JSON; errors as application/problem+json)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from contracts.topics import ORG_ID_PATTERN
from lotse_kit.context import Ctx
from lotse_kit.problems import problem_response
from lotse_kit.runtime import Runtime

from .. import commands as cmds
from .. import handlers as h
from ..adapters.consent import ConsentUnavailable
from ..domain.referrals import Action, ReferralStatus


def build_router(runtime: Runtime, deps: h.Deps) -> APIRouter:
    r = APIRouter(prefix="/v1")

    def pool():  # noqa: ANN202
        return runtime.pool

    # ------------------------------------------------------------ clients
    @r.post("/clients", status_code=201, tags=["clients"], summary="Register a client")
    async def register_client(cmd: cmds.RegisterClient, ctx: Ctx, response: Response) -> dict[str, Any]:
        client_id = await h.register_client(pool(), deps, cmd, ctx.acting_org)
        response.headers["Location"] = f"/v1/clients/{client_id}"
        return {"client_id": client_id}

    @r.get("/clients/{client_id}", tags=["clients"], summary="A client's case, for the responsible organisation")
    async def get_client(client_id: uuid.UUID, ctx: Ctx) -> dict[str, Any]:
        return await h.get_client(pool(), deps, client_id, ctx.acting_org)

    @r.patch("/clients/{client_id}", tags=["clients"], summary="Update needs, languages, residence title, contact")
    async def update_client(client_id: uuid.UUID, cmd: cmds.UpdateClient, ctx: Ctx) -> dict[str, Any]:
        changed = await h.update_client(pool(), deps, client_id, cmd, ctx.acting_org)
        return {"client_id": client_id, "changed": changed}

    @r.post("/clients/{client_id}/handover", tags=["clients"], summary="Hand the case over to another organisation (Rechtskreiswechsel)")
    async def hand_over(client_id: uuid.UUID, cmd: cmds.HandOverCase, ctx: Ctx) -> dict[str, Any]:
        return await h.hand_over_case(pool(), deps, client_id, cmd, ctx.acting_org)

    @r.get("/clients/{client_id}/contact", tags=["clients"], summary="Contact data, if the client consented to notifications by this organisation")
    async def contact(client_id: uuid.UUID, ctx: Ctx) -> dict[str, Any]:
        return await h.get_contact(pool(), deps, client_id, ctx.acting_org)

    # ------------------------------------------------------------ referrals
    @r.post("/clients/{client_id}/referrals", status_code=201, tags=["referrals"], summary="Refer the client (consent-gated)")
    async def send_referral(client_id: uuid.UUID, cmd: cmds.SendReferral, ctx: Ctx, response: Response) -> dict[str, Any]:
        out = await h.send_referral(pool(), deps, client_id, cmd, ctx.acting_org)
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
        items = await h.list_referrals(pool(), deps, org=org or ctx.acting_org, view=view, status=status.value if status else None,
                                       acting_org=ctx.acting_org, limit=limit)
        return {"org": org or ctx.acting_org, "view": view, "items": items}

    @r.get("/referrals/{referral_id}", tags=["referrals"])
    async def get_referral(referral_id: uuid.UUID, ctx: Ctx) -> dict[str, Any]:
        return await h.get_referral(pool(), deps, referral_id, ctx.acting_org)

    @r.post("/referrals/{referral_id}/accept", tags=["referrals"], summary="The receiver accepts")
    async def accept(referral_id: uuid.UUID, ctx: Ctx, cmd: Annotated[cmds.AcceptReferral | None, Body()] = None) -> dict[str, Any]:
        return await h.act_on_referral(pool(), deps, referral_id, Action.ACCEPT, cmd or cmds.AcceptReferral(), ctx.acting_org)

    @r.post("/referrals/{referral_id}/decline", tags=["referrals"], summary="The receiver declines, with a reason")
    async def decline(referral_id: uuid.UUID, cmd: cmds.DeclineReferral, ctx: Ctx) -> dict[str, Any]:
        return await h.act_on_referral(pool(), deps, referral_id, Action.DECLINE, cmd, ctx.acting_org)

    @r.post("/referrals/{referral_id}/complete", tags=["referrals"], summary="The receiver completes")
    async def complete(referral_id: uuid.UUID, ctx: Ctx, cmd: Annotated[cmds.CompleteReferral | None, Body()] = None) -> dict[str, Any]:
        return await h.act_on_referral(pool(), deps, referral_id, Action.COMPLETE, cmd or cmds.CompleteReferral(), ctx.acting_org)

    @r.post("/referrals/{referral_id}/revoke", tags=["referrals"], summary="The sender revokes")
    async def revoke(referral_id: uuid.UUID, ctx: Ctx, cmd: Annotated[cmds.RevokeReferral | None, Body()] = None) -> dict[str, Any]:
        return await h.act_on_referral(pool(), deps, referral_id, Action.REVOKE, cmd or cmds.RevokeReferral(), ctx.acting_org)

    # ------------------------------------------------------------ deadlines
    @r.post("/clients/{client_id}/deadlines", status_code=201, tags=["deadlines"], summary="Register a deadline")
    async def register_deadline(client_id: uuid.UUID, cmd: cmds.RegisterDeadline, ctx: Ctx) -> dict[str, Any]:
        return await h.register_deadline(pool(), deps, client_id, cmd, ctx.acting_org)

    @r.post("/deadlines/{deadline_id}/resolve", tags=["deadlines"], summary="Resolve a deadline")
    async def resolve_deadline(deadline_id: uuid.UUID, ctx: Ctx, cmd: Annotated[cmds.ResolveDeadline | None, Body()] = None) -> dict[str, Any]:
        return await h.resolve_deadline(pool(), deps, deadline_id, cmd or cmds.ResolveDeadline(), ctx.acting_org)

    # ------------------------------------------------------------ network
    @r.get("/network", tags=["network"], summary="The network configuration: organisations, services, process plans")
    async def network() -> dict[str, Any]:
        return deps.network.model_dump(mode="json")

    return r


def install_error_mapping(app: FastAPI) -> None:
    """Maps intake's domain errors to problem+json responses."""

    @app.exception_handler(h.NotFound)
    async def _not_found(request: Request, exc: h.NotFound) -> JSONResponse:
        return problem_response(404, "Not found", str(exc), type_="urn:lotse:problem:not-found", instance=request.url.path)

    @app.exception_handler(h.Forbidden)
    async def _forbidden(request: Request, exc: h.Forbidden) -> JSONResponse:
        return problem_response(403, "Not allowed", str(exc), type_="urn:lotse:problem:forbidden", instance=request.url.path)

    @app.exception_handler(h.Conflict)
    async def _conflict(request: Request, exc: h.Conflict) -> JSONResponse:
        return problem_response(409, "Illegal state transition", str(exc), type_="urn:lotse:problem:illegal-transition", instance=request.url.path)

    @app.exception_handler(h.Invalid)
    async def _invalid(request: Request, exc: h.Invalid) -> JSONResponse:
        return problem_response(422, "Invalid request", f"{exc.field}: {exc.message}", type_="urn:lotse:problem:validation",
                                instance=request.url.path, errors=[{"field": exc.field, "message": exc.message, "type": "value_error"}])

    @app.exception_handler(h.ConsentRequired)
    async def _consent(request: Request, exc: h.ConsentRequired) -> JSONResponse:
        missing = [c.value for c in exc.decision.missing_categories]
        detail = (f"No valid consent for recipient {exc.recipient}, purpose {exc.purpose.value}"
                  + (f", categories {', '.join(missing)}" if missing else "") + (f": {exc.decision.reason}" if exc.decision.reason else ""))
        return problem_response(409, "Consent required", detail, type_="urn:lotse:problem:consent-required", instance=request.url.path,
                                recipient=exc.recipient, purpose=exc.purpose.value, requested_categories=[c.value for c in exc.categories],
                                missing_categories=missing, reason=exc.decision.reason)

    @app.exception_handler(ConsentUnavailable)
    async def _consent_down(request: Request, exc: ConsentUnavailable) -> JSONResponse:
        resp = problem_response(503, "Consent service unavailable", f"{exc}. Nothing was sent; try again.",
                                type_="urn:lotse:problem:consent-unavailable", instance=request.url.path)
        resp.headers["Retry-After"] = "5"
        return resp
