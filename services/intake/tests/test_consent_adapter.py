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
