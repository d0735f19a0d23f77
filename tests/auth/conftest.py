"""Fixtures for the token tests: a tiny FastAPI app guarded by `lotse_kit.auth.principal`, and the real Keycloak."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from lotse_cli.dev import dev_secrets, env_key, run_dir
from lotse_kit import auth, problems
from lotse_kit.auth import Principal, TokenVerifier, principal
from tests.infra import Infra

REALM = "lotse"


def guarded_app(verifier: TokenVerifier) -> FastAPI:
    """One route that needs a verified caller and echoes what the token said."""
    app = FastAPI()
    problems.install(app)
    auth.install(app, verifier)

    @app.get("/whoami")
    async def whoami(p: Principal = Depends(principal)) -> dict[str, Any]:
        return {"subject": p.subject, "org": p.org, "roles": sorted(p.roles), "service": p.service, "district_wide": p.district_wide}

    return app


@asynccontextmanager
async def client_for(verifier: TokenVerifier) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=guarded_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def call(verifier: TokenVerifier, token: str | None) -> httpx.Response:
    async with client_for(verifier) as c:
        return await c.get("/whoami", headers={"Authorization": f"Bearer {token}"} if token is not None else {})


def assert_invalid_token(r: httpx.Response, detail_part: str = "") -> None:
    """A 401 problem+json with the RFC 6750 challenge for a refused token."""
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    body = r.json()
    assert body["status"] == 401
    assert body["type"] == "urn:lotse:problem:invalid-token"
    assert detail_part.lower() in body["detail"].lower(), body["detail"]


# ------------------------------------------------------------- forging JWTs
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return json.loads(unb64url(h)), json.loads(unb64url(p)), s


def assemble(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}.{signature}"


# ---------------------------------------------------------------- Keycloak
@dataclass
class Keycloak:
    url: str
    secrets: dict[str, str] = field(repr=False)  # dev-only, still never in a test report

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{REALM}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    async def token(self, **form: str) -> str:
        async with httpx.AsyncClient(timeout=15) as c:
            r = await c.post(self.token_url, data=form)
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    async def user_token(self, username: str, client_id: str = "lotse-cli") -> str:
        password = self.secrets[env_key("USER_PASSWORD", username)]
        return await self.token(grant_type="password", client_id=client_id, username=username, password=password)

    async def service_token(self, client_id: str) -> str:
        secret = self.secrets[env_key("CLIENT_SECRET", client_id)]
        return await self.token(grant_type="client_credentials", client_id=client_id, client_secret=secret)

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[httpx.AsyncClient]:
        """The admin REST API of realm lotse, as the stack's bootstrap admin."""
        creds = dev_secrets(run_dir() / "keycloak" / "admin.env")
        async with httpx.AsyncClient(timeout=15) as c:
            r = await c.post(
                f"{self.url}/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": creds["KC_BOOTSTRAP_ADMIN_USERNAME"],
                    "password": creds["KC_BOOTSTRAP_ADMIN_PASSWORD"],
                },
            )
            assert r.status_code == 200, r.text
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            c.base_url = httpx.URL(f"{self.url}/admin/realms/{REALM}")
            yield c

    @asynccontextmanager
    async def temporary_client(self, *, attributes: dict[str, str] | None = None, scopes: list[str] | None = None) -> AsyncIterator[str]:
        """A public password-grant client that exists for one test (its own lifespan or scopes)."""
        client_id = f"lotse-test-{uuid.uuid4().hex[:8]}"
        rep = {
            "clientId": client_id,
            "publicClient": True,
            "directAccessGrantsEnabled": True,
            "standardFlowEnabled": False,
            "attributes": attributes or {},
            "defaultClientScopes": scopes if scopes is not None else ["basic", "roles", "profile", "lotse-api"],
            "optionalClientScopes": [],
        }
        async with self.admin() as api:
            r = await api.post("/clients", json=rep)
            assert r.status_code == 201, r.text
            internal_id = r.headers["location"].rsplit("/", 1)[1]
            try:
                yield client_id
            finally:
                await api.delete(f"/clients/{internal_id}")


@pytest.fixture(scope="session")
def keycloak(infra: Infra) -> Iterator[Keycloak]:
    url = infra.keycloak()
    yield Keycloak(url, dev_secrets(run_dir() / "keycloak" / "secrets.env"))
