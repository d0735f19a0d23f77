"""POST /v1/decisions: many questions in one request, each answered exactly as GET /v1/decisions answers it
(the same domain rule, the same cache), for services' own tokens only; bad bodies are 422 problem+json."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.fixtures import as_org, service_token

from .conftest import CARITAS, DIAKONIE, JOBCENTER, KI, StartService

PROBLEM = "application/problem+json"


async def _batch(svc: Any, questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = await svc.http.post("/v1/decisions", json={"items": questions}, headers=service_token("intake"))
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    assert len(items) == len(questions)
    return items


async def _singles(svc: Any, questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [await svc.decision(q["client_id"], q["recipient"], q["purpose"], q["categories"]) for q in questions]


@pytest.mark.parametrize("cache_size", [0, 1000], ids=["cache off", "cache on"])
async def test_each_answer_is_the_single_routes_answer_and_a_withdrawal_counts_at_once(
    start_consent: StartService, cache_size: int
) -> None:
    async with start_consent(decision_cache_size=cache_size) as svc:
        olena, deniz, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        granted = await svc.grant(olena, purposes=["contact_for_notifications", "referral"], categories=["contact", "identity"])
        await svc.grant(deniz, recipients=[KI], purposes=["contact_for_notifications"], categories=["contact"])
        questions = [
            {"client_id": str(olena), "recipient": CARITAS, "purpose": "contact_for_notifications", "categories": ["contact"]},
            {"client_id": str(olena), "recipient": KI, "purpose": "referral", "categories": ["identity", "health"]},  # health missing
            {"client_id": str(olena), "recipient": DIAKONIE, "purpose": "referral", "categories": ["identity"]},  # not a recipient
            {"client_id": str(deniz), "recipient": KI, "purpose": "contact_for_notifications", "categories": ["contact"]},
            {"client_id": str(deniz), "recipient": KI, "purpose": "contact_for_notifications", "categories": []},
            {"client_id": str(unknown), "recipient": KI, "purpose": "contact_for_notifications", "categories": ["contact"]},
            {"client_id": str(olena), "recipient": CARITAS, "purpose": "contact_for_notifications", "categories": ["contact"]},  # again
        ]
        answers = await _batch(svc, questions)
        assert answers == await _singles(svc, questions)
        assert [a["allowed"] for a in answers] == [True, False, False, True, True, False, True]
        assert answers[1]["missing_categories"] == ["health"]

        # Withdrawn: the next batch says no at once, also where the answer was cached a moment ago.
        r = await svc.http.post(f"/v1/consents/{granted['consent_id']}/withdraw", headers=as_org(JOBCENTER))
        assert r.status_code == 200, r.text
        answers = await _batch(svc, questions)
        assert answers == await _singles(svc, questions)
        assert [a["allowed"] for a in answers] == [False, False, False, True, True, False, False]


async def test_a_withdrawal_on_another_replica_counts_at_once_for_a_cached_client(start_consent: StartService) -> None:
    """The cache is checked against each client's version, as for the single route: a replica that did not see the
    withdrawal itself (its cache not invalidated) still answers no."""
    async with start_consent(decision_cache_size=1000) as a, start_consent(decision_cache_size=1000) as b:
        olena = uuid.uuid4()
        granted = await a.grant(olena, purposes=["contact_for_notifications"], categories=["contact"])
        q = {"client_id": str(olena), "recipient": CARITAS, "purpose": "contact_for_notifications", "categories": ["contact"]}
        assert [x["allowed"] for x in await _batch(a, [q, q])] == [True, True]  # now cached in a
        r = await b.http.post(f"/v1/consents/{granted['consent_id']}/withdraw", headers=as_org(JOBCENTER))
        assert r.status_code == 200, r.text
        assert [x["allowed"] for x in await _batch(a, [q])] == [False]
        assert await _batch(a, [q]) == await _singles(a, [q])


async def test_bad_bodies_are_422_problems_never_5xx(service: Any) -> None:
    q = {"client_id": str(uuid.uuid4()), "recipient": KI, "purpose": "referral", "categories": ["identity"]}
    bad: list[Any] = [
        {},
        {"items": []},
        {"items": [q] * 201},  # more than DECISION_BATCH_MAX
        {"items": [q | {"extra": 1}]},
        {"items": [q | {"client_id": "not-a-uuid"}]},
        {"items": [q | {"recipient": "Not An Org!"}]},
        {"items": [q | {"purpose": "marketing"}]},
        {"items": [q | {"categories": ["shoe_size"]}]},
        {"items": [q | {"categories": ["identity"] * 65}]},
        {"items": "all"},
        [q],
        "null",
    ]
    for body in bad:
        r = await service.http.post("/v1/decisions", json=body, headers=service_token("intake"))
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.headers["content-type"].startswith(PROBLEM) and r.json()["type"] == "urn:lotse:problem:validation"
    r = await service.http.post(
        "/v1/decisions", content=b"{not json", headers=service_token("intake") | {"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)


async def test_only_services_may_ask(service: Any) -> None:
    body = {"items": [{"client_id": str(uuid.uuid4()), "recipient": KI, "purpose": "referral", "categories": []}]}
    assert (await service.http.post("/v1/decisions", json=body)).status_code == 401
    r = await service.http.post("/v1/decisions", json=body, headers=as_org(JOBCENTER))
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    assert (await service.http.post("/v1/decisions", json=body, headers=service_token("notifications"))).status_code == 200
