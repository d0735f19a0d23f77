"""The HTTP consent adapter speaks the agreed decision API (against a stand-in consent app, no mocks)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI, Query

from contracts.vocab import DataCategory, Purpose
from services.intake.adapters.consent import ConsentUnavailable, HttpConsentDecisions


def consent_app(seen: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/decisions")
    async def decisions(client_id: uuid.UUID, recipient: str, purpose: str, category: list[str] = Query()) -> dict:
        seen.append({"client_id": client_id, "recipient": recipient, "purpose": purpose, "category": category})
        if recipient == "broken":
            return {"unexpected": True}
        allowed = set(category) <= {"identity", "contact"}
        return {
            "allowed": allowed,
            "consent_id": str(uuid.UUID(int=7)) if allowed else None,
            "reason": "ok" if allowed else "missing",
            "missing_categories": [c for c in category if c not in {"identity", "contact"}],
        }

    return app


async def test_decision_request_and_answer():
    seen: list[dict] = []
    adapter = HttpConsentDecisions("http://consent", transport=httpx.ASGITransport(app=consent_app(seen)))
    cid = uuid.uuid4()
    d = await adapter.decide(cid, "ki-kreis-paderborn", Purpose.REFERRAL, [DataCategory.IDENTITY, DataCategory.CONTACT])
    assert d.allowed and d.consent_id == uuid.UUID(int=7)
    assert seen[-1] == {"client_id": cid, "recipient": "ki-kreis-paderborn", "purpose": "referral", "category": ["identity", "contact"]}
    d = await adapter.decide(cid, "ki-kreis-paderborn", Purpose.CONTACT_FOR_NOTIFICATIONS, [DataCategory.IDENTITY, DataCategory.HEALTH])
    assert not d.allowed and d.missing_categories == [DataCategory.HEALTH] and d.consent_id is None
    assert seen[-1]["purpose"] == "contact_for_notifications"
    with pytest.raises(ConsentUnavailable, match="unexpected body"):
        await adapter.decide(cid, "broken", Purpose.REFERRAL, [DataCategory.IDENTITY])
    await adapter.aclose()


async def test_unreachable_or_failing_consent_service_fails_closed():
    adapter = HttpConsentDecisions("http://127.0.0.1:9", timeout_s=0.5)
    with pytest.raises(ConsentUnavailable, match="not reachable"):
        await adapter.decide(uuid.uuid4(), "ki-kreis-paderborn", Purpose.REFERRAL, [DataCategory.IDENTITY])
    await adapter.aclose()
    failing = HttpConsentDecisions("http://consent", transport=httpx.MockTransport(lambda req: httpx.Response(500)))
    with pytest.raises(ConsentUnavailable, match="500"):
        await failing.decide(uuid.uuid4(), "ki-kreis-paderborn", Purpose.REFERRAL, [DataCategory.IDENTITY])
    await failing.aclose()


def token_issuer(issued: list[str]) -> httpx.MockTransport:
    """A stand-in token endpoint (client credentials): each token it issues is new ("t1", "t2", ...)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"token_endpoint": "http://issuer.test/token"})
        assert request.url.path == "/token" and b"grant_type=client_credentials" in request.content
        issued.append(f"t{len(issued) + 1}")
        return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 300})

    return httpx.MockTransport(handle)


async def test_the_decision_api_is_asked_with_intakes_own_token_and_a_refused_token_is_renewed_once():
    from lotse_kit.auth import AuthSettings, ServiceTokens

    issued: list[str] = []
    tokens = ServiceTokens(
        AuthSettings(issuer="http://issuer.test", client_id="lotse-intake", client_secret="s"), transport=token_issuer(issued)
    )
    accepted = {"t2"}  # the consent service refuses the first token (e.g. signed with a key the provider rotated out)
    presented: list[str | None] = []

    def consent(request: httpx.Request) -> httpx.Response:
        presented.append(request.headers.get("authorization"))
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in accepted:
            return httpx.Response(401, json={"type": "urn:lotse:problem:invalid-token"})
        return httpx.Response(
            200, json={"allowed": True, "consent_id": str(uuid.UUID(int=1)), "reason": "granted", "missing_categories": []}
        )

    adapter = HttpConsentDecisions("http://consent", transport=httpx.MockTransport(consent), tokens=tokens)
    d = await adapter.decide(uuid.uuid4(), "ki-kreis-paderborn", Purpose.REFERRAL, [DataCategory.IDENTITY])
    assert d.allowed and presented == ["Bearer t1", "Bearer t2"] and issued == ["t1", "t2"]
    # The renewed token is kept: the next decision needs no new one.
    await adapter.decide(uuid.uuid4(), "ki-kreis-paderborn", Purpose.REFERRAL, [DataCategory.IDENTITY])
    assert presented[-1] == "Bearer t2" and issued == ["t1", "t2"]
    # Refused again after the renewal: one retry only, then intake fails closed (503 for its caller).
    accepted.clear()
    presented.clear()
    with pytest.raises(ConsentUnavailable, match="401"):
        await adapter.decide(uuid.uuid4(), "ki-kreis-paderborn", Purpose.REFERRAL, [DataCategory.IDENTITY])
    assert presented == ["Bearer t2", "Bearer t3"] and issued == ["t1", "t2", "t3"]
    await adapter.aclose()


async def test_without_credentials_intake_fails_closed():
    from lotse_kit.auth import AuthSettings, ServiceTokens

    adapter = HttpConsentDecisions(
        "http://consent",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"allowed": True})),
        tokens=ServiceTokens(AuthSettings(issuer="http://issuer.test", client_id=None, client_secret=None)),
    )
    with pytest.raises(ConsentUnavailable, match="no access token"):
        await adapter.decide(uuid.uuid4(), "ki-kreis-paderborn", Purpose.REFERRAL, [DataCategory.IDENTITY])
    await adapter.aclose()
