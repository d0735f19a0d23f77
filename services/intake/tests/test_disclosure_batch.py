"""The consent gate's batch on intake's internal API (`POST /internal/v1/disclosures`): per item exactly what the
single `GET .../disclosure` answers, in order; `erased` and `not-found` where the single one says 410 and 404; bad
bodies 422 problem+json, never a 5xx; nobody but the consent service. Real broker and database."""

from __future__ import annotations

import uuid
from typing import Any

from contracts.vocab import DataCategory
from services.intake.domain.commands import DISCLOSURE_BATCH_MAX
from tests.fixtures import service_token
from tests.security.test_http_attacks import Probe, attack

from .conftest import JOBCENTER, KI, h, metric
from .test_personal_data import consent_gate, fetch, problem, refer, register

PATH = "/internal/v1/disclosures"


def item(client_id: Any, *categories: str, referral_id: Any = None) -> dict[str, Any]:
    return {"client_id": str(client_id), "categories": list(categories), "referral_id": str(referral_id) if referral_id else None}


async def post(http: Any, body: Any, headers: dict[str, str] | None = None) -> Any:
    return await http.post(PATH, json=body, headers=consent_gate() if headers is None else headers)


async def test_a_batch_answers_per_item_what_the_single_route_answers_in_order(make_intake, consent):
    async with make_intake() as (app, http):
        olena = await register(http)
        xenia = await register(http, given_name="Xenia", health=None)
        rid = await refer(http, olena, consent)
        erased = await register(http, given_name="Erika")
        assert (await http.delete(f"/v1/clients/{erased}", headers=h(JOBCENTER))).status_code == 200
        items = [
            item(olena, "identity", "health", referral_id=rid),
            item(xenia, "contact", "needs"),
            item(erased, "identity"),
            item(uuid.uuid4(), "identity"),  # unknown client
            item(xenia, "identity", referral_id=rid),  # a referral of another client
            item(olena, "identity", "identity"),  # the same twice: once
            item(olena, "education_qualifications", referral_id=uuid.uuid4()),  # an unknown referral
        ]
        served = await metric(http, "lotse_intake_disclosure_fetches_total", outcome="served")
        resp = await post(http, {"items": items})
        assert resp.status_code == 200, resp.text
        answers = resp.json()["items"]
        assert [a["status"] for a in answers] == ["ok", "ok", "erased", "not-found", "not-found", "ok", "not-found"]
        assert await metric(http, "lotse_intake_disclosure_fetches_total", outcome="served") == served + 3
        # Exactly what the single route answers for the same item, and its 410 / 404 where the batch says so.
        for i, answer in zip(items, answers, strict=True):
            single = await fetch(http, i["client_id"], *i["categories"], referral_id=i["referral_id"])
            if answer["status"] == "ok":
                assert single.status_code == 200, single.text
                assert answer == {"status": "ok", "content": single.json()}
            else:
                assert single.status_code == (410 if answer["status"] == "erased" else 404), single.text
        first = answers[0]["content"]
        assert first["personal_data"]["identity"]["given_name"] == "Olena" and first["personal_data"]["health"] == "Diabetes Typ 1"
        assert first["personal_data"]["contact"] is None and first["notes"]["reason"] == "Termin beim Jobcenter"
        assert answers[1]["content"]["notes"] is None and answers[1]["content"]["personal_data"]["identity"] is None
        assert "Erika" not in resp.text
        # A client whose data does not open (here: a ciphertext moved from another client) fails alone.
        pool = app.state.runtime.db.pool
        moved = await pool.fetchval("SELECT given_name_enc FROM client_personal_data WHERE client_id = $1", uuid.UUID(xenia))
        await pool.execute("UPDATE client_personal_data SET given_name_enc = $2 WHERE client_id = $1", uuid.UUID(olena), moved)
        resp = await post(http, {"items": [item(olena, "identity"), item(xenia, "identity")]})
        assert resp.status_code == 200, resp.text
        unavailable, ok = resp.json()["items"]
        assert unavailable == {"status": "unavailable"} and ok["content"]["personal_data"]["identity"]["given_name"] == "Xenia"
        # The largest batch intake takes: all served.
        resp = await post(http, {"items": [item(xenia, "identity")] * DISCLOSURE_BATCH_MAX})
        assert resp.status_code == 200 and len(resp.json()["items"]) == DISCLOSURE_BATCH_MAX


async def test_bad_bodies_are_422_problems_never_5xx(make_intake, consent):
    async with make_intake() as (_app, http):
        olena = await register(http)
        good = item(olena, "identity")
        bad_bodies: list[Any] = [
            {},
            {"items": []},
            {"items": [good] * (DISCLOSURE_BATCH_MAX + 1)},  # over-long
            {"items": [good], "extra": 1},
            {"items": [good | {"extra": 1}]},
            {"items": [item(olena)]},  # no category
            {"items": [item(olena, "shoe-size")]},
            {"items": [item("not-a-uuid", "identity")]},
            {"items": [good | {"referral_id": "nope"}]},
            {"items": [{"categories": ["identity"]}]},
            {"items": [item(olena, *(["identity"] * (len(DataCategory) + 1)))]},
            {"items": "all"},
            {"items": [None]},
            [good],
            None,
        ]
        for body in bad_bodies:
            problem(await post(http, body), 422, "urn:lotse:problem:validation")
        for raw in (b"", b"{", b"\xff\xfe", b'{"items": [' * 100):
            resp = await http.post(PATH, content=raw, headers=consent_gate() | {"Content-Type": "application/json"})
            problem(resp, 422, "urn:lotse:problem:validation")


async def test_only_the_consent_service_may_ask(make_intake, consent):
    """The attack suite's attacks (outsiders 401, every wrong role of the consent-gate policy 403, problem+json) and its
    positive control, on this route: the same probe belongs in tests/security/test_http_attacks.py's intake table."""
    async with make_intake() as (app, http):
        olena = await register(http)
        rid = await refer(http, olena, consent)
        probe = Probe(
            "POST",
            PATH,
            PATH,
            service_token("consent"),
            body={"items": [item(olena, "identity", "health", referral_id=rid)]},
            owner=JOBCENTER,
        )
        await attack(http, app, [probe])
        for who in (h(JOBCENTER), h(KI), service_token("intake"), service_token("notifications")):
            body = problem(await post(http, probe.body, headers=who), 403, "urn:lotse:problem:role-required")
            assert "Olena" not in str(body)
