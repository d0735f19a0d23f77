"""Bad input never breaks intake (issue 11): control characters in free text and dates past the supported
range are refused with 422 naming the field, against the real broker and database, where they used to
reach PostgreSQL or the date arithmetic and fail there with 500."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from contracts.vocab import DataCategory, Purpose

from .conftest import JOBCENTER, KI, client_body, h

NUL = "Olena\x00"


def assert_refused(resp: Any, field: str, *, words: str = "control characters") -> None:
    """422 problem+json whose errors name `field`, with `words` in its message."""
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    named = [e for e in problem["errors"] if e["field"] == field]
    assert named, f"no error names {field}: {problem}"
    assert any(words in e["message"] for e in named), problem


async def register(http: Any, **over: Any) -> str:
    resp = await http.post("/v1/clients", json=client_body(**over), headers=h(JOBCENTER))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["client_id"])


async def refer(http: Any, consent: Any, client_id: str) -> str:
    """The jobcenter refers the client to the KI's interpreter pool (consent granted)."""
    consent.grant(client_id, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
    resp = await http.post(
        f"/v1/clients/{client_id}/referrals", json={"need": "interpreter", "categories": ["identity"]}, headers=h(JOBCENTER)
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["referral_id"])


async def test_nul_in_any_free_text_field_of_a_client_is_refused_naming_the_field(make_intake):
    async with make_intake() as (_app, http):
        for field in ("given_name", "family_name", "education_qualifications", "health"):
            resp = await http.post("/v1/clients", json=client_body(**{field: NUL}), headers=h(JOBCENTER))
            assert_refused(resp, field)
        # Other control characters and an unpaired surrogate (which JSON can spell) alike; tab and line breaks are text.
        for bad in ("a\x07b", "a\x1bb", "a\x7fb", "a\x85b", "a\ud800b"):
            raw = json.dumps(client_body(education_qualifications=bad))  # ASCII with escapes, as a browser may send "\ud800"
            resp = await http.post("/v1/clients", content=raw, headers={**h(JOBCENTER), "Content-Type": "application/json"})
            # (The length check meets the surrogate first: "unable to parse raw data as a unicode string".)
            assert_refused(resp, "education_qualifications", words="" if "\ud800" in bad else "control characters")
        client_id = await register(http, education_qualifications="Diplom\tKyjiw\r\nB2 Deutsch")
        resp = await http.post(f"/v1/clients/{client_id}/handover", json={"to_org": KI, "reason": NUL}, headers=h(JOBCENTER))
        assert_refused(resp, "reason")


async def test_nul_in_the_free_text_of_a_referral_and_its_answers_is_refused(make_intake, consent):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        consent.grant(client_id, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        for field in ("reason", "free_text"):
            body = {"need": "interpreter", "categories": ["identity"], field: NUL}
            assert_refused(await http.post(f"/v1/clients/{client_id}/referrals", json=body, headers=h(JOBCENTER)), field)

        referral_id = await refer(http, consent, client_id)
        resp = await http.post(f"/v1/referrals/{referral_id}/decline", json={"reason": "other", "reason_text": NUL}, headers=h(KI))
        assert_refused(resp, "reason_text")
        resp = await http.post(f"/v1/referrals/{referral_id}/complete", json={"outcome": NUL}, headers=h(KI))
        assert_refused(resp, "outcome")
        resp = await http.post(f"/v1/referrals/{referral_id}/revoke", json={"reason": NUL}, headers=h(JOBCENTER))
        assert_refused(resp, "reason")
        # Nothing of it was written: the referral is still open and can be revoked with a readable reason.
        resp = await http.post(f"/v1/referrals/{referral_id}/revoke", json={"reason": "Termin\nentfällt"}, headers=h(JOBCENTER))
        assert resp.status_code == 200, resp.text


async def test_nul_in_a_deadline_resolution_is_refused(make_intake):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        resp = await http.post(
            f"/v1/clients/{client_id}/deadlines",
            json={"kind": "integration_course_eligibility", "due_date": "2026-09-30"},
            headers=h(JOBCENTER),
        )
        assert resp.status_code == 201, resp.text
        deadline_id = resp.json()["deadline_id"]
        assert_refused(
            await http.post(f"/v1/deadlines/{deadline_id}/resolve", json={"resolution": NUL}, headers=h(JOBCENTER)), "resolution"
        )
        resp = await http.post(f"/v1/deadlines/{deadline_id}/resolve", json={"resolution": "Kurs begonnen"}, headers=h(JOBCENTER))
        assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("valid_from", "words"),
    [
        ("9999-06-01", "must lie between 1900-01-01 and 9000-12-31"),  # Python's end of dates: "year 10000 is out of range"
        ("9000-06-01", "ends after 9000-12-31"),  # a supported first day whose 18 months end past the range
    ],
)
async def test_a_104c_title_whose_end_lies_past_the_supported_dates_is_refused_on_every_route(make_intake, valid_from, words):
    chancen = {"residence_title": "aufenthg_104c", "residence_valid_until": None}
    async with make_intake() as (_app, http):
        resp = await http.post("/v1/clients", json=client_body(**chancen, residence_valid_from=valid_from), headers=h(JOBCENTER))
        assert_refused(resp, "residence_valid_from", words=words)

        client_id = await register(http)
        resp = await http.patch(
            f"/v1/clients/{client_id}", json={"residence_title": "aufenthg_104c", "residence_valid_from": valid_from}, headers=h(JOBCENTER)
        )
        assert_refused(resp, "residence_valid_from", words=words)

        resp = await http.post(
            f"/v1/clients/{client_id}/deadlines", json={"kind": "chancen_aufenthalt_end", "valid_from": valid_from}, headers=h(JOBCENTER)
        )
        assert_refused(resp, "valid_from", words=words)

        # The last first day whose 18 months still end inside the range is accepted.
        resp = await http.post(
            f"/v1/clients/{client_id}/deadlines", json={"kind": "chancen_aufenthalt_end", "valid_from": "8999-07-01"}, headers=h(JOBCENTER)
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["due_at"].startswith("9000-12-31")


async def test_dates_and_times_outside_the_supported_range_are_refused(make_intake):
    async with make_intake() as (_app, http):
        client_id = await register(http)
        for body, field in [
            ({"kind": "appointment", "due_at": "9999-12-31T23:59:59-12:00"}, "due_at"),  # past datetime.max in UTC
            ({"kind": "residence_title_expiry", "due_date": "9999-12-31"}, "due_date"),
        ]:
            resp = await http.post(f"/v1/clients/{client_id}/deadlines", json=body, headers=h(JOBCENTER))
            assert_refused(resp, field, words="must lie between")
        resp = await http.post("/v1/clients", json=client_body(date_of_birth="0001-01-01"), headers=h(JOBCENTER))
        assert_refused(resp, "date_of_birth", words="must lie between")
        resp = await http.post(f"/v1/referrals/{uuid.uuid4()}/accept", json={"appointment_at": "0001-01-01T00:00:00+14:00"}, headers=h(KI))
        assert_refused(resp, "appointment_at", words="must lie between")
