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

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.dates import SupportedDateTime
from contracts.events import LanguageTag, OrgId
from contracts.text import ShortText
from contracts.vocab import DataCategory, Purpose
from lotse_kit import access
from lotse_kit.context import CallerContext, RequestContext

from .. import views
from ..domain.commands import RecordConsent, RegisterKey, RetireKey, WithdrawConsent
from ..domain.keys import OrgKey
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


DECISION_BATCH_MAX = 200  # questions per POST /v1/decisions (a consumer batch of intake's asks at most this many)


class DecisionQuestionIn(BaseModel):
    """One question, with exactly the parameters of GET /v1/decisions."""

    model_config = ConfigDict(extra="forbid")
    client_id: UUID
    recipient: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    purpose: Purpose
    categories: list[DataCategory] = Field(default_factory=list, max_length=64)


class DecisionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[DecisionQuestionIn] = Field(min_length=1, max_length=DECISION_BATCH_MAX)


class DecisionsOut(BaseModel):
    items: list[DecisionOut] = Field(description="One answer per question, in order; each what GET /v1/decisions answers for it.")


KID = r"^[A-Za-z0-9._-]{1,64}$"
ORG = r"^[a-z0-9][a-z0-9-]{1,62}$"


class KeyIn(BaseModel):
    """A public key (JWK, EC P-256) of the calling organisation: `enc` to seal personal data to it, `sig` to
    verify its acknowledgements. Never a private key: one with `d` is refused (422) and not stored."""

    model_config = ConfigDict(extra="forbid")
    kid: str = Field(pattern=KID, description="The key id; the JWE header names it.")
    use: str = Field(pattern=r"^(enc|sig)$")
    jwk: dict[str, Any] = Field(description="kty EC, crv P-256, x, y.")


class KeyOut(BaseModel):
    org: str
    kid: str
    use: str
    jwk: dict[str, Any]
    source: str = Field(description="`api` (registered here) or `network-file`.")
    active: bool
    registered_at: datetime | None
    retired_at: datetime | None


class DisclosureRecordOut(BaseModel):
    request_id: UUID
    kind: str = Field(description="`referral` (the gate) or `correction` (GDPR Art. 19).")
    client_id: UUID
    referral_id: UUID | None
    from_org: str
    recipient: str
    purpose: str
    categories: list[str]
    consent_id: UUID
    collecting_org: str
    consent_status: str = Field(description="The consent's status now.")
    payload_sha256: str
    disclosed_at: datetime


class AcknowledgementOut(BaseModel):
    event_id: UUID = Field(description="The inbox record to acknowledge (a forwarded withdrawal or erasure).")
    kind: str
    client_id: UUID
    org: str = Field(description="The recipient that owes the acknowledgement.")
    consent_id: UUID | None
    collecting_org: str | None
    forwarded_at: datetime
    due_at: datetime
    status: str = Field(description="`acknowledged`, `pending` or `overdue`.")
    acknowledged_at: datetime | None
    received_at: datetime | None
    overdue_raised_at: datetime | None


class ClientDisclosuresOut(BaseModel):
    client_id: UUID
    disclosures: list[DisclosureRecordOut]
    acknowledgements: list[AcknowledgementOut]


class OrgDisclosuresOut(BaseModel):
    org: str
    disclosures: list[DisclosureRecordOut]
    acknowledgements: list[AcknowledgementOut]


def _key_out(k: OrgKey) -> KeyOut:
    return KeyOut(
        org=k.org,
        kid=k.kid,
        use=k.use,
        jwk=k.jwk,
        source=k.source,
        active=k.active,
        registered_at=k.registered_at,
        retired_at=k.retired_at,
    )


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
    Records = Annotated[CallerContext, guard(access.DISCLOSURE_RECORDS)]
    OrgPath = Annotated[str, Path(pattern=ORG)]

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

    @r.post("/v1/decisions", response_model=DecisionsOut, tags=["decisions"])
    async def decisions(body: DecisionsIn, _: Service) -> JSONResponse:
        """GET /v1/decisions for up to DECISION_BATCH_MAX questions at once (e.g. all of a batch of intake's contact
        lookups): per question, in order, exactly its answer. For services' own tokens only."""
        questions = [views.DecisionQuestion(q.client_id, q.recipient, q.purpose, q.categories) for q in body.items]
        return JSONResponse({"items": [d.as_dict() for d in await views.check_decisions(deps, questions)]})

    @r.post("/v1/organisations/{org}/keys", status_code=201, response_model=KeyOut, tags=["keys"])
    async def register_key(org: OrgPath, body: KeyIn, ctx: Ctx, response: Response) -> KeyOut:
        """Registers one of the calling organisation's public keys (201; the same key again 200). Several may be
        active: the newest `enc` key seals new records, every active `sig` key verifies acknowledgements."""
        key, created = await handle(
            RegisterKey(org=org, acting_org=ctx.acting_org, kid=body.kid, use=body.use, jwk=body.jwk, registered_by=ctx.actor), deps
        )
        response.status_code = 201 if created else 200
        return _key_out(key)

    @r.get("/v1/organisations/{org}/keys", response_model=list[KeyOut], tags=["keys"])
    async def list_keys(org: OrgPath, ctx: Ctx) -> list[KeyOut]:
        """The calling organisation's keys, from the network file and the API, retired ones included, newest first."""
        return [_key_out(k) for k in await views.list_keys(deps, org, ctx.acting_org)]

    @r.delete("/v1/organisations/{org}/keys/{kid}", response_model=KeyOut, tags=["keys"])
    async def retire_key(org: OrgPath, kid: Annotated[str, Path(pattern=KID)], ctx: Ctx) -> KeyOut:
        """Retires a key (also one from the network file): it seals and verifies nothing from now on."""
        return _key_out(await handle(RetireKey(org=org, acting_org=ctx.acting_org, kid=kid, retired_by=ctx.actor), deps))

    @r.get("/v1/clients/{client_id}/disclosures", response_model=ClientDisclosuresOut, tags=["disclosures"])
    async def client_disclosures(client_id: UUID, ctx: Records) -> dict[str, Any]:
        """What was disclosed about the client, to whom, when, under which consent and which categories, and
        which forwarded withdrawals and erasures are acknowledged, pending or overdue. Filtered like the
        consents: all for a responsible organisation, auditors and the district's dpo; what was disclosed
        under its own consents for a collecting organisation; nothing for anyone else."""
        return await views.client_disclosures(deps, client_id, access.disclosure_scope(ctx))

    @r.get("/v1/organisations/{org}/disclosures", response_model=OrgDisclosuresOut, tags=["disclosures"])
    async def org_disclosures(org: OrgPath, ctx: Records) -> dict[str, Any]:
        """What the organisation received or had disclosed, and the acknowledgements it owes or is owed; for the
        organisation itself (staff, its dpo), auditors and the district's dpo (403 for another organisation)."""
        return await views.org_disclosures(deps, org, access.disclosure_scope(ctx))

    return r
