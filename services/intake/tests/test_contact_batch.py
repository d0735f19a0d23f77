"""The notifications service's batch of contact lookups on intake's internal API (`POST /internal/v1/contacts`): per
item exactly what the single `GET /v1/clients/{id}/contact` answers for that client and organisation (the contact, or
its status and problem), with ONE consent decision request for the whole list; bad bodies 422 problem+json, never a
5xx; nobody but the notifications service. Real broker and database; the consent service is intake's fake here
(services/consent/tests/test_with_intake.py runs it against the real one)."""

from __future__ import annotations

import uuid
from typing import Any

from contracts.vocab import DataCategory, Purpose
from lotse_kit.context import ON_BEHALF_OF
from services.intake.domain.commands import CONTACT_BATCH_MAX
from services.intake.domain.errors import ConsentUnavailable
from tests.fixtures import service_token
from tests.security.test_http_attacks import Probe, attack

from .conftest import CARITAS, JOBCENTER, KI, FakeConsent, h
from .test_personal_data import problem, register

PATH = "/internal/v1/contacts"
CONTACT = [DataCategory.CONTACT]


def notifications(org: str | None = None) -> dict[str, str]:
    return service_token("notifications") | ({ON_BEHALF_OF: org} if org else {})


def item(client_id: Any, org: str) -> dict[str, str]:
    return {"client_id": str(client_id), "on_behalf_of": org}


async def post(http: Any, body: Any, headers: dict[str, str] | None = None) -> Any:
    return await http.post(PATH, json=body, headers=notifications() if headers is None else headers)


async def single(http: Any, client_id: Any, org: str) -> dict[str, Any]:
    """The single route's answer as a batch item: {"status", "contact"} or {"status", "problem"} (without `instance`)."""
    r = await http.get(f"/v1/clients/{client_id}/contact", headers=notifications(org))
    if r.status_code == 200:
        return {"status": 200, "contact": r.json()}
    assert r.headers["content-type"] == "application/problem+json", r.text
    body = r.json()
    body.pop("instance", None)
    return {"status": r.status_code, "problem": body}


async def test_a_batch_answers_per_item_what_the_single_route_answers_with_one_consent_request(make_intake, consent):
    async with make_intake() as (app, http):
        olena = await register(http)
        deniz = await register(http, given_name="Deniz", email="deniz@mail.example", preferred_language="tr", languages=["tr"])
        quiet = await register(http, given_name="Quentin")
        erased = await register(http, given_name="Erika")
        for c in (olena, deniz, quiet, erased):
            consent.grant(c, JOBCENTER, Purpose.CONTACT_FOR_NOTIFICATIONS, CONTACT)
        consent.grant(olena, KI, Purpose.CONTACT_FOR_NOTIFICATIONS, CONTACT)
        consent.grant(deniz, KI, Purpose.REFERRAL, CONTACT)  # another purpose: no contact for KI
        assert (await http.patch(f"/v1/clients/{quiet}", headers=h(JOBCENTER), json={"do_not_contact": True})).status_code == 200
        assert (await http.delete(f"/v1/clients/{erased}", headers=h(JOBCENTER))).status_code == 200
        items = [
            item(olena, JOBCENTER),
            item(olena, KI),
            item(deniz, JOBCENTER),
            item(deniz, KI),  # consent-required
            item(olena, CARITAS),  # no consent at all
            item(quiet, JOBCENTER),  # do-not-contact
            item(erased, JOBCENTER),  # client-erased
            item(uuid.uuid4(), JOBCENTER),  # not-found
            item(olena, "not-a-member-org"),  # not-a-member
            item(olena, JOBCENTER),  # the same again: answered again, asked once
        ]
        consent.calls.clear()
        resp = await post(http, {"items": items})
        assert resp.status_code == 200, resp.text
        answers = resp.json()["items"]
        assert consent.batches == [5]  # one request to the consent service, for the five distinct lookups it must decide
        assert [a["status"] for a in answers] == [200, 200, 200, 409, 409, 409, 410, 404, 403, 200]
        assert [a.get("problem", {}).get("type") for a in answers[3:9]] == [
            "urn:lotse:problem:consent-required",
            "urn:lotse:problem:consent-required",
            "urn:lotse:problem:do-not-contact",
            "urn:lotse:problem:client-erased",
            "urn:lotse:problem:not-found",
            "urn:lotse:problem:not-a-member",
        ]
        assert answers[0]["contact"]["email"] == "olena.kovalenko@mail.example" and answers[2]["contact"]["preferred_language"] == "tr"
        assert "Erika" not in resp.text and "Quentin" not in resp.text
        # Exactly the single route's answer for each item.
        for i, answer in zip(items, answers, strict=True):
            assert answer == await single(http, i["client_id"], i["on_behalf_of"]), i

        # Consent withdrawn (the consent service says no now): no contact, in the batch as in the single route.
        del consent.grants[(uuid.UUID(olena), JOBCENTER, Purpose.CONTACT_FOR_NOTIFICATIONS)]
        resp = await post(http, {"items": [item(olena, JOBCENTER), item(olena, KI)]})
        withdrawn, still = resp.json()["items"]
        assert withdrawn["status"] == 409 and withdrawn["problem"]["type"] == "urn:lotse:problem:consent-required"
        assert "contact" not in withdrawn and "olena" not in str(withdrawn).lower()
        assert still["status"] == 200
        assert withdrawn == await single(http, olena, JOBCENTER)

        # A client whose data does not open (a ciphertext moved from another client) fails alone, naming nothing.
        pool = app.state.runtime.db.pool
        moved = await pool.fetchval("SELECT email_enc FROM client_personal_data WHERE client_id = $1", uuid.UUID(deniz))
        await pool.execute("UPDATE client_personal_data SET email_enc = $2 WHERE client_id = $1", uuid.UUID(olena), moved)
        resp = await post(http, {"items": [item(olena, KI), item(deniz, JOBCENTER)]})
        broken, ok = resp.json()["items"]
        assert broken["status"] == 503 and "contact" not in broken and ok["contact"]["email"] == "deniz@mail.example"
        assert "deniz@" not in str(broken)

        # The largest batch intake takes: one consent request still.
        consent.batches.clear()
        resp = await post(http, {"items": [item(deniz, JOBCENTER)] * CONTACT_BATCH_MAX})
        assert resp.status_code == 200 and len(resp.json()["items"]) == CONTACT_BATCH_MAX and consent.batches == [1]


class DownConsent(FakeConsent):
    async def decide_many(self, questions: Any) -> Any:
        self.batches.append(len(questions))
        raise ConsentUnavailable("consent service not reachable: ConnectError")


async def test_without_the_consent_service_the_batch_fails_closed_with_503(make_intake):
    down = DownConsent()
    async with make_intake(consent=down) as (_app, http):
        olena = await register(http)
        problem(await post(http, {"items": [item(olena, JOBCENTER)]}), 503, "urn:lotse:problem:consent-unavailable")
        # Nothing to ask (do-not-contact, unknown): answered without the consent service.
        resp = await post(http, {"items": [item(uuid.uuid4(), JOBCENTER)]})
        assert resp.status_code == 200 and resp.json()["items"][0]["status"] == 404
        assert down.batches == [1]


async def test_bad_bodies_are_422_problems_never_5xx(make_intake, consent):
    async with make_intake() as (_app, http):
        olena = await register(http)
        good = item(olena, JOBCENTER)
        bad_bodies: list[Any] = [
            {},
            {"items": []},
            {"items": [good] * (CONTACT_BATCH_MAX + 1)},  # over-long
            {"items": [good], "extra": 1},
            {"items": [good | {"extra": 1}]},
            {"items": [{"client_id": olena}]},  # no organisation
            {"items": [good | {"on_behalf_of": "Not An Org!"}]},
            {"items": [good | {"on_behalf_of": None}]},
            {"items": [item("not-a-uuid", JOBCENTER)]},
            {"items": "all"},
            {"items": [None]},
            [good],
            None,
        ]
        for body in bad_bodies:
            problem(await post(http, body), 422, "urn:lotse:problem:validation")
        for raw in (b"", b"{", b"\xff\xfe", b'{"items": [' * 100):
            resp = await http.post(PATH, content=raw, headers=notifications() | {"Content-Type": "application/json"})
            problem(resp, 422, "urn:lotse:problem:validation")


async def test_only_the_notifications_service_may_ask(make_intake, consent):
    """The attack suite's attacks (outsiders 401, every wrong role of the policy 403, problem+json) and its positive
    control, on this route: the same probe is in tests/security/test_http_attacks.py's intake table."""
    async with make_intake() as (app, http):
        olena = await register(http)
        consent.grant(olena, JOBCENTER, Purpose.CONTACT_FOR_NOTIFICATIONS, CONTACT)
        probe = Probe("POST", PATH, PATH, notifications(), body={"items": [item(olena, JOBCENTER)]}, owner=JOBCENTER)
        await attack(http, app, [probe])
        for who in (h(JOBCENTER), h(KI), service_token("intake"), service_token("consent"), service_token("audit")):
            body = problem(await post(http, probe.body, headers=who), 403, "urn:lotse:problem:role-required")
            assert "Olena" not in str(body) and "olena" not in str(body)
