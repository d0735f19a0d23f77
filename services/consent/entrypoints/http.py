"""HTTP API: consents, withdrawals, receipts and the decision API. Thin: parse, call handlers or views, return.

Refusals are domain errors (domain/errors.py); the kit turns them into problem+json. Access
(`lotse_kit.access`, docs/security.md): consents are recorded, read and withdrawn by organisations'
caseworkers and partner systems within the scope rules; the decision API answers services only.
"""

# No `from __future__ import annotations`: route parameters are typed with access policies bound inside
# the router builder (local names), and FastAPI resolves postponed annotations in module globals only.

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.dates import SupportedDateTime
from contracts.events import LanguageTag, OrgId
from contracts.text import ShortText
from contracts.vocab import DataCategory, Purpose
from lotse_kit import access
from lotse_kit.context import CallerContext, RequestContext

from .. import views
from ..domain.commands import RecordConsent, WithdrawConsent
from ..domain.model import Consent, ConsentForm, InformationGiven
from ..handlers import Deps, handle


class InformationIn(BaseModel):
    """What the client was told before consenting. §67b(2) SGB X requires all three to be true."""

    model_config = ConfigDict(extra="forbid")
    purpose: bool = Field(description="The client was told the purpose of the processing.")
    consequences_of_refusal: bool = Field(description="The client was told what refusing means for them.")
    right_to_withdraw: bool = Field(description="The client was told they can withdraw at any time (GDPR Art. 7(3)).")


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: UUID
    collecting_org: OrgId | None = Field(None, description="Defaults to the acting organisation (from the access token); must equal it.")
    recipients: list[OrgId] = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1)
    categories: list[DataCategory] = Field(min_length=1)
    form: ConsentForm
    form_reason: ShortText | None = Field(None, description="Required for an oral consent: the special circumstances (§67b(2) SGB X).")
    information: InformationIn
    information_language: LanguageTag = Field(description="The language the client was informed in.")
    interpreter_used: bool = False
    valid_until: SupportedDateTime | None = Field(None, description="Default and maximum come from the configuration.")


class ConsentOut(BaseModel):
    consent_id: UUID
    client_id: UUID
    status: str
    collecting_org: str
    recipients: list[str]
    purposes: list[Purpose]
    categories: list[DataCategory]
    legal_basis: list[str]
    form: ConsentForm
    form_reason: str | None
    information: InformationIn
    information_language: str
    interpreter_used: bool
    notice_version: str
    granted_at: datetime
    valid_until: datetime
    withdrawn_at: datetime | None
    withdrawal_recorded_by_org: str | None
    expired_at: datetime | None
    disclosed_to: list[str]
    recorded_by: str | None


class DecisionOut(BaseModel):
    allowed: bool
    consent_id: UUID | None
    reason: str
    missing_categories: list[DataCategory]


def _out(c: Consent, now: datetime) -> ConsentOut:
    status = c.status(now)
    return ConsentOut(
        consent_id=c.consent_id,
        client_id=c.client_id,
        status=status.value,
        collecting_org=c.collecting_org,
        recipients=list(c.recipients),
        purposes=list(c.purposes),
        categories=list(c.categories),
        legal_basis=list(c.legal_basis),
        form=c.form,
        form_reason=c.form_reason,
        information=InformationIn(
            purpose=c.information.purpose,
            consequences_of_refusal=c.information.consequences_of_refusal,
            right_to_withdraw=c.information.right_to_withdraw,
        ),
        information_language=c.information_language,
        interpreter_used=c.interpreter_used,
        notice_version=c.notice_version,
        granted_at=c.granted_at,
        valid_until=c.valid_until,
        withdrawn_at=c.withdrawn_at,
        withdrawal_recorded_by_org=c.withdrawal_recorded_by_org,
        expired_at=c.expired_at or (c.valid_until if status.value == "expired" else None),
        disclosed_to=list(c.disclosed_to),
        recorded_by=c.recorded_by,
    )


def router(deps: Deps) -> APIRouter:
    r = APIRouter(tags=["consents"])
    guard = access.Guard(deps.directory)
    Ctx = Annotated[RequestContext, guard(access.ORG_STAFF)]
    Service = Annotated[CallerContext, guard(access.SERVICES)]

    @r.post("/v1/consents", status_code=201, response_model=ConsentOut)
    async def record_consent(body: ConsentIn, ctx: Ctx) -> ConsentOut:
        """Records a consent (ISO/IEC TS 27560 fields, §67b SGB X) and emits lotse.consent.granted."""
        consent = await handle(
            RecordConsent(
                client_id=body.client_id,
                acting_org=ctx.acting_org,
                collecting_org=body.collecting_org,
                recipients=body.recipients,
                purposes=body.purposes,
                categories=body.categories,
                form=body.form,
                form_reason=body.form_reason,
                information=InformationGiven(
                    body.information.purpose, body.information.consequences_of_refusal, body.information.right_to_withdraw
                ),
                information_language=body.information_language,
                interpreter_used=body.interpreter_used,
                valid_until=body.valid_until,
                recorded_by=ctx.actor,
            ),
            deps,
        )
        return _out(consent, deps.clock.now())

    @r.get("/v1/consents/{consent_id}", response_model=ConsentOut)
    async def read_consent(consent_id: UUID, ctx: Ctx) -> ConsentOut:
        """For the collecting organisation and the client's responsible organisations; 404 for anyone else."""
        return _out(await views.get_consent(deps, consent_id, ctx.acting_org), deps.clock.now())

    @r.post("/v1/consents/{consent_id}/withdraw", response_model=ConsentOut)
    async def withdraw(consent_id: UUID, ctx: Ctx) -> ConsentOut:
        """The client's withdrawal (GDPR Art. 7(3)), effective at once; recorded by the collecting organisation,
        a recipient or a responsible organisation of the client (404 for any other)."""
        consent = await handle(WithdrawConsent(consent_id, by_org=ctx.acting_org), deps)
        return _out(consent, deps.clock.now())

    @r.get("/v1/clients/{client_id}/consents", response_model=list[ConsentOut])
    async def client_consents(client_id: UUID, ctx: Ctx) -> list[ConsentOut]:
        """The client's consents, newest first, with their status now: all for the client's responsible
        organisations, the ones it collected for any other organisation."""
        now = deps.clock.now()
        return [_out(c, now) for c in await views.list_client_consents(deps, client_id, ctx.acting_org)]

    @r.get("/v1/consents/{consent_id}/receipt")
    async def consent_receipt(
        consent_id: UUID,
        ctx: Ctx,
        lang: Annotated[
            str | None, Query(description="de, en, uk, ar, ru, tr or fa; default: the language the client was informed in.")
        ] = None,
    ) -> dict[str, Any]:
        return await views.consent_receipt(deps, consent_id, lang, ctx.acting_org)

    @r.get("/v1/decisions", response_model=DecisionOut, tags=["decisions"])
    async def decision(
        _: Service,
        client_id: UUID,
        recipient: Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")],
        purpose: Purpose,
        category: Annotated[list[DataCategory], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    ) -> JSONResponse:
        """May `recipient` receive these categories of the client's data for `purpose`, right now? For services' own tokens only."""
        d = await views.check_decision(deps, client_id=client_id, recipient=recipient, purpose=purpose, categories=category)
        return JSONResponse(d.as_dict())

    return r
