"""Only the organisation's own partner system: for every route, another organisation, a caseworker of the same
organisation, a district role, a service token, a non-member and no token are refused (problem+json), and the
right caller gets its 2xx."""

from __future__ import annotations

import json

import pytest

from contracts.structured import STRUCTURED
from lotse_kit.access import PARTNER_SYSTEMS, route_policies
from tests.fixtures import as_district, as_org, service_token

from .conftest import AWO, CARITAS, INVIA, inbox_event, partner
from .test_outbox import accepted

ROUTES = [
    ("GET", "/v1/partners/{org}/inbox"),
    ("POST", "/v1/partners/{org}/inbox/acknowledgements"),
    ("POST", "/v1/partners/{org}/outbox"),
]

WRONG_CALLERS = {
    "no token": ({}, 401),
    "garbage token": ({"Authorization": "Bearer nonsense"}, 401),
    "another organisation's partner system": (partner(INVIA), 403),
    "a Kafka partner's partner system": (partner(CARITAS), 403),
    "a caseworker of the organisation": (as_org(AWO, "caseworker"), 403),
    "a district auditor": (as_district("auditor"), 403),
    "an operator": (as_district("operator"), 403),
    "a service token": (service_token("consent"), 403),
    "a non-member's partner system": (partner("evil-consulting"), 403),
}


async def _call(gw, method: str, path: str, headers: dict[str, str], cursor: str):
    url = path.format(org=AWO)
    if url.endswith("/inbox"):
        return await gw.http.get(url, headers=headers)
    if url.endswith("/acknowledgements"):
        return await gw.http.post(url, json={"cursor": cursor}, headers=headers)
    return await gw.http.post(url, content=json.dumps(accepted()).encode(), headers=headers | {"content-type": STRUCTURED})


def test_every_route_is_listed_here_with_its_policy(monkeypatch):
    from services.gateway.bootstrap import bootstrap

    monkeypatch.setenv("LOTSE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")  # building the app opens no connection
    policies = {key: ps for key, ps in route_policies(bootstrap()).items() if key[1].startswith("/v1/")}
    assert set(policies) == set(ROUTES)
    assert all(ps == [PARTNER_SYSTEMS] for ps in policies.values())


@pytest.mark.parametrize("method,path", ROUTES)
async def test_wrong_callers_are_refused_and_the_partner_is_served(start_gateway, method, path):
    async with start_gateway() as gw:
        await gw.put_on_inbox(AWO, inbox_event(AWO))
        page = (await gw.http.get(f"/v1/partners/{AWO}/inbox", headers=partner(AWO))).json()
        cursor = page["next_cursor"]
        for name, (headers, status) in WRONG_CALLERS.items():
            r = await _call(gw, method, path, headers, cursor)
            assert r.status_code == status, (name, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json", name
        # Nothing was acknowledged or posted by a refused caller.
        assert len((await gw.http.get(f"/v1/partners/{AWO}/inbox", headers=partner(AWO))).json()["records"]) == 1
        r = await _call(gw, method, path, partner(AWO), cursor)
        assert r.status_code in (200, 202, 204), r.text
