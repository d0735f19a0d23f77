"""The request line every acting request writes (`lotse_kit.context.log_request`, called by the access policy)."""

import json
import logging
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from lotse_kit import access, auth
from lotse_kit.context import log_request, request_path
from lotse_kit.logging import JsonFormatter, service_var


class _Members:
    def has(self, org_id: str) -> bool:
        return org_id == "caritas-paderborn"


def _app(signer: auth.LocalSigner) -> FastAPI:
    app = FastAPI()
    auth.install(app, signer.verifier())
    guard = access.Guard(_Members())

    @app.get("/v1/who/{name}")
    async def who(name: str, ctx: Annotated[access.RequestContext, guard(access.ORG_STAFF)]) -> dict[str, str]:
        return {"name": name, "org": ctx.acting_org}

    return app


async def test_the_request_line_names_who_acted_where_under_which_policy(caplog: pytest.LogCaptureFixture) -> None:
    signer = auth.LocalSigner()
    headers = {"Authorization": "Bearer " + signer.token(subject="m.mueller", org="caritas-paderborn", roles=["caseworker"])}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(signer)), base_url="http://t") as http:
        with caplog.at_level(logging.INFO, logger="lotse_kit.context"):
            r = await http.get("/v1/who/a%3Fb%23c%5Cd", headers=headers, params={"q": "not logged"})
    assert r.status_code == 200 and r.json() == {"name": "a?b#c\\d", "org": "caritas-paderborn"}
    [line] = [rec for rec in caplog.records if rec.getMessage() == "request"]
    # The path as `request.url.path` reads it (re-encoded where the decoded path would be ambiguous), no query string.
    assert line.__dict__["path"] == "/v1/who/a%3Fb%23c%5Cd"
    assert {k: line.__dict__[k] for k in ("method", "subject", "org", "caller_service", "policy")} == {
        "method": "GET",
        "subject": "m.mueller",
        "org": "caritas-paderborn",
        "caller_service": None,
        "policy": "org-staff",
    }


async def test_the_request_line_of_a_service_names_the_calling_service_next_to_the_writing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signer = auth.LocalSigner()
    headers = {
        "Authorization": "Bearer " + signer.token(subject="service-account-lotse-notifications", service="notifications"),
        "Lotse-On-Behalf-Of": "caritas-paderborn",
    }
    app = FastAPI()
    auth.install(app, signer.verifier())
    guard = access.Guard(_Members())

    @app.get("/internal/v1/contacts/{client_id}")
    async def contacts(client_id: str, ctx: Annotated[access.RequestContext, guard(access.CONTACT_LOOKUP)]) -> dict[str, str]:
        return {"org": ctx.acting_org}

    token = service_var.set("intake")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            with caplog.at_level(logging.INFO, logger="lotse_kit.context"):
                r = await http.get("/internal/v1/contacts/c-1", headers=headers)
        assert r.status_code == 200
        [record] = [rec for rec in caplog.records if rec.getMessage() == "request"]
        line = json.loads(JsonFormatter().format(record))
    finally:
        service_var.reset(token)
    assert line["service"] == "intake" and line["caller_service"] == "notifications"
    assert (
        line["subject"] == "service-account-lotse-notifications"
        and line["org"] == "caritas-paderborn"
        and line["policy"] == "contact-lookup"
    )


@pytest.mark.parametrize("path", ["/v1/a", "/v1/x?y#z\\w", "/", "//double", "/ä ö"])
def test_the_logged_path_is_what_request_url_path_says(path: str) -> None:
    request = Request({"type": "http", "method": "GET", "path": path, "headers": [(b"host", b"intake:8001")], "query_string": b"a=1"})
    assert request_path(request) == request.url.path


def test_below_info_the_request_line_is_not_even_built(caplog: pytest.LogCaptureFixture) -> None:
    # A scope without a path: building the line would fail; a service logging warnings only builds nothing.
    request = Request({"type": "http", "method": "GET", "headers": []})
    caller = auth.Principal(subject="s", org=None, roles=frozenset(), service="intake", district_wide=False, claims={})
    with caplog.at_level(logging.WARNING, logger="lotse_kit.context"):
        log_request(request, caller, None, policy="services")
    assert not caplog.records
    with caplog.at_level(logging.INFO, logger="lotse_kit.context"), pytest.raises(KeyError):
        log_request(request, caller, None, policy="services")
