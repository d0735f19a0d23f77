"""Calls between services (`lotse_kit.auth.request_with_service_token`): a path called again goes to the URL httpx
built for it the first time (no URL parsing per call), and every call still reads exactly as httpx sends it."""

from __future__ import annotations

import json

import httpx
import pytest

from lotse_kit import auth
from lotse_kit.auth import get_with_service_token, post_with_service_token, request_with_service_token

PARAMS_CASES: list[object] = [
    None,
    [("client_id", "6f1c1e0e-5d0b-4c1e-9b1a-2f7f3f0d9a10"), ("category", "identity"), ("category", "contact")],
    {"q": "Müller & Söhne + Co/?#", "empty": ""},
    [("a b", "c=d"), ("ä", "%41")],
]


class Tokens:
    """A service's cached token, "old" until the kit invalidates it after a 401, then "new"."""

    def __init__(self) -> None:
        self.current = "old"

    async def __call__(self) -> str:
        return self.current

    def invalidate(self) -> None:
        self.current = "new"


def recorder() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    return seen, httpx.MockTransport(handle)


async def token() -> str:
    return "service-token"


@pytest.mark.parametrize("params", PARAMS_CASES)
@pytest.mark.parametrize("path", ["/v1/decisions", "internal/v1/contacts", "/v1/x?fixed=1", "/v1/clients/ä ö/disclosure"])
async def test_repeated_calls_send_what_httpx_sends_for_the_path(path: str, params: object) -> None:
    seen, transport = recorder()
    async with httpx.AsyncClient(base_url="http://intake.test:8001/api", transport=transport) as client:
        plain = await client.get(path, params=params, headers={"Authorization": "Bearer service-token"})  # httpx alone
        for _ in range(3):  # first call, second (remembered), third (from the cache)
            r = await get_with_service_token(client, path, tokens=token, params=params)
            assert r.status_code == 200
    want = plain.request
    for got in seen[1:]:
        assert got.url == want.url and str(got.url) == str(want.url)
        assert got.headers["authorization"] == "Bearer service-token" and got.method == "GET"


async def test_a_remembered_path_follows_a_changed_base_url_and_posts_its_body() -> None:
    seen, transport = recorder()
    async with httpx.AsyncClient(base_url="http://consent.test:8002", transport=transport) as client:
        for _ in range(3):
            await post_with_service_token(client, "/v1/decisions", tokens=token, json={"items": [1]})
        client.base_url = httpx.URL("http://consent-2.test:9002")
        for _ in range(3):
            await post_with_service_token(client, "/v1/decisions", tokens=token, json={"items": [2]})
    assert [str(r.url) for r in seen] == ["http://consent.test:8002/v1/decisions"] * 3 + ["http://consent-2.test:9002/v1/decisions"] * 3
    assert [json.loads(r.content) for r in seen] == [{"items": [1]}] * 3 + [{"items": [2]}] * 3


async def test_one_client_per_base_url_even_when_both_call_the_same_path() -> None:
    seen, transport = recorder()
    async with (
        httpx.AsyncClient(base_url="http://intake.test:8001", transport=transport) as a,
        httpx.AsyncClient(base_url="http://notifications.test:8003", transport=transport) as b,
    ):
        for _ in range(3):
            await get_with_service_token(a, "/v1/x", tokens=token)
            await get_with_service_token(b, "/v1/x", tokens=token)
    assert [r.url.host for r in seen] == ["intake.test", "notifications.test"] * 3


async def test_a_refused_token_is_renewed_once_with_the_remembered_url() -> None:
    """A 401 still fetches a new token and tries once more (also when the URL comes from the cache)."""
    attempts: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        attempts.append(request.headers["authorization"])
        return httpx.Response(401 if request.headers["authorization"] == "Bearer old" else 200)

    async with httpx.AsyncClient(base_url="http://consent.test:8002", transport=httpx.MockTransport(handle)) as client:
        for _ in range(2):
            tokens = Tokens()
            r = await request_with_service_token(client, "GET", "/v1/decisions", tokens=tokens, params={"a": "b"})
            assert r.status_code == 200
    assert attempts == ["Bearer old", "Bearer new"] * 2


async def test_paths_called_once_are_not_remembered_and_the_memory_is_bounded() -> None:
    seen, transport = recorder()
    async with httpx.AsyncClient(base_url="http://intake.test:8001", transport=transport) as client:
        for i in range(auth._URLS_MAX * 3):
            await get_with_service_token(client, f"/internal/v1/clients/{i}", tokens=token)
            await get_with_service_token(client, f"/internal/v1/clients/{i}", tokens=token)
            await get_with_service_token(client, f"/internal/v1/clients/{i}", tokens=token)
            assert len(auth._urls) <= auth._URLS_MAX and len(auth._paths_seen) <= auth._URLS_MAX
    assert [str(r.url) for r in seen[:3]] == ["http://intake.test:8001/internal/v1/clients/0"] * 3
    assert str(seen[-1].url) == f"http://intake.test:8001/internal/v1/clients/{auth._URLS_MAX * 3 - 1}"
