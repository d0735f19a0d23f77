"""Bad input never breaks the auditor API (issue 11): numbers past PostgreSQL's bigint, control characters
and times past the supported range are refused with a 4xx problem, against the real database."""

from __future__ import annotations

import base64
from typing import Any

from services.audit.tests.conftest import AUDITOR

BIGINT_MAX = 2**63 - 1


def cursor_after(index: int) -> str:
    """A cursor as the API hands them out (base64url of "after:<index>"), here with any number in it."""
    return base64.urlsafe_b64encode(f"after:{index}".encode()).decode().rstrip("=")


def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    return body


async def test_numbers_past_postgresqls_bigint(audit):
    # An entry index past bigint names no entry: 404.
    p = problem(await audit.http.get(f"/v1/audit/entries/{BIGINT_MAX + 1}", headers=AUDITOR), 404)
    assert str(BIGINT_MAX + 1) in p["detail"]
    p = problem(await audit.http.get(f"/v1/audit/entries/{BIGINT_MAX}", headers=AUDITOR), 404)  # the largest index: no such entry
    assert p["type"] == "urn:lotse:problem:no-such-entry"
    problem(await audit.http.get(f"/v1/audit/entries/{2**64}/inclusion-proof", headers=AUDITOR), 404)

    # A cursor that decodes to a number past bigint (or below zero) is refused like any malformed cursor: 400.
    for cursor in (cursor_after(BIGINT_MAX + 1), cursor_after(-(2**70)), cursor_after(-1)):
        p = problem(await audit.http.get("/v1/audit/entries", params={"cursor": cursor}, headers=AUDITOR), 400)
        assert p["type"] == "urn:lotse:problem:invalid-cursor"
    resp = await audit.http.get("/v1/audit/entries", params={"cursor": cursor_after(BIGINT_MAX)}, headers=AUDITOR)
    assert resp.status_code == 200 and resp.json()["items"] == [], resp.text

    # A size or a limit past bigint is a bad request naming the parameter: 400.
    for path, params in [
        ("/v1/audit/entries", {"limit": BIGINT_MAX + 1}),
        ("/v1/audit/consistency-proof", {"first": 1, "second": BIGINT_MAX + 1}),
        ("/v1/audit/entries/0/inclusion-proof", {"tree_size": BIGINT_MAX + 1}),
        ("/v1/audit/export", {"tree_size": BIGINT_MAX + 1}),
    ]:
        p = problem(await audit.http.get(path, params=params, headers=AUDITOR), 400)
        assert p["type"] == "urn:lotse:problem:out-of-range"
        [name] = [k for k, v in params.items() if v == BIGINT_MAX + 1]
        assert p["errors"][0]["field"] == name, p


async def test_control_characters_and_times_past_the_supported_range_in_filters_are_refused(audit):
    for params, field in [
        ({"type": "lotse.client.registered\x00"}, "type"),
        ({"from": "9999-12-31T23:59:59-12:00"}, "from"),
        ({"to": "0001-01-01T00:00:00+14:00"}, "to"),
    ]:
        p = problem(await audit.http.get("/v1/audit/entries", params=params, headers=AUDITOR), 422)
        assert [e["field"] for e in p["errors"]] == [field], p
