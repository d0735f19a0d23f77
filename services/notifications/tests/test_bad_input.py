"""Bad input never breaks the notifications service (issue 11), against the real broker and database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.notifications.domain.model import parse_retry_after
from tests.fixtures import as_org

from .conftest import JOBCENTER

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

AS_JOBCENTER = as_org(JOBCENTER)


def assert_refused(resp: Any, field: str, words: str) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert any(e["field"] == field and words in e["message"] for e in problem.get("errors", [])) or (
        problem.get("field") == field and words in problem["detail"]
    ), problem


async def test_nul_in_a_webhook_endpoint_is_refused_naming_the_field(start_service):
    async with start_service() as svc:
        for body, field in [
            ({"url": "https://partner.example/hooks", "description": "Fallakte\x00"}, "description"),
            ({"url": "https://partner.example/ho\x00oks"}, "url"),
        ]:
            assert_refused(await svc.http.post("/v1/webhook-endpoints", json=body, headers=AS_JOBCENTER), field, "control characters")
        body = {"url": "https://partner.example/hooks", "description": "Fallakte\n(Test)"}
        resp = await svc.http.post("/v1/webhook-endpoints", json=body, headers=AS_JOBCENTER)
        assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("url", ["https://[::1/hooks", "http://[zz]/hooks"])
async def test_an_endpoint_url_python_cannot_split_is_refused(start_service, url):
    async with start_service() as svc:
        resp = await svc.http.post("/v1/webhook-endpoints", json={"url": url}, headers=AS_JOBCENTER)
        assert_refused(resp, "url", "must be absolute")


async def test_a_notifications_page_before_a_time_past_the_supported_range_is_refused(start_service):
    async with start_service() as svc:
        for before in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"):
            resp = await svc.http.get("/v1/notifications", params={"before": before}, headers=AS_JOBCENTER)
            assert_refused(resp, "before", "must lie between")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("²", None),  # a digit to str.isdigit(), not to float(): a webhook receiver's answer stopped the delivery worker
        ("٣", None),
        ("9" * 400, float("inf")),  # capped by retry_after_max_s where it is used
        ("Fri, 31 Dec 9999 23:59:59 -1200", (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - NOW).total_seconds() + 12 * 3600),
        ("Mon, 01 Jan 0001 00:00:00 +1400", 0.0),
    ],
)
def test_a_retry_after_header_never_raises(header, seconds):
    assert parse_retry_after(header, NOW) == seconds
