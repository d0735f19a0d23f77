"""Access tokens from the real Keycloak of the local stack (realm `lotse`), verified by `lotse_kit.auth`.

Good tokens (client credentials for each service, the password grant for every demo user) verify
and carry the right organisation, roles and service; expired, wrong-issuer, wrong-audience,
tampered, `alg=none` and HS256-with-the-public-key tokens are refused with 401 problem+json and
`WWW-Authenticate: Bearer error="invalid_token"` by a FastAPI app that uses the `principal`
dependency. An unknown `kid` makes the verifier fetch the JWKS once, and a key rotated in Keycloak
is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from lotse_cli.dev import demo_users
from lotse_kit.auth import AuthSettings, LocalSigner, TokenVerifier
from tests.auth.conftest import Keycloak, assemble, assert_invalid_token, b64url, call, parts

SERVICES = ["intake", "consent", "notifications", "audit"]


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real HTTP transport that remembers every URL it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return await super().handle_async_request(request)


def verifier_for(kc: Keycloak, **overrides: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(issuer=kc.issuer, **overrides))


# ------------------------------------------------------------------ good tokens
@pytest.mark.parametrize("service", SERVICES)
async def test_service_client_credentials_token_verifies(keycloak: Keycloak, service: str) -> None:
    token = await keycloak.service_token(f"lotse-{service}")
    r = await call(verifier_for(keycloak), token)
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": r.json()["subject"], "org": None, "roles": [], "service": service, "district_wide": False}


@pytest.mark.parametrize("user", demo_users(), ids=lambda u: u["username"])
async def test_demo_user_password_token_verifies_with_org_and_roles(keycloak: Keycloak, user: dict[str, Any]) -> None:
    token = await keycloak.user_token(str(user["username"]))
    v = verifier_for(keycloak)
    p = await v.verify(token)
    assert p.org == user["org"]
    assert p.roles == set(user["roles"])
    assert p.district_wide is user["district_wide"]
    assert p.service is None
    assert p.claims["preferred_username"] == user["username"]
    assert p.claims["azp"] == "lotse-cli"
    r = await call(v, token)
    assert r.status_code == 200, r.text
    assert r.json()["org"] == user["org"]


async def test_realm_settings_the_services_rely_on(keycloak: Keycloak) -> None:
    token = await keycloak.user_token("caseworker.caritas-paderborn")
    header, claims, _ = parts(token)
    assert header["alg"] == "RS256" and header["kid"]
    assert claims["iss"] == keycloak.issuer
    assert claims["aud"] == "lotse-api" or "lotse-api" in claims["aud"]
    assert claims["exp"] - claims["iat"] == 300  # access tokens live five minutes
    assert "email" not in claims  # tokens carry no more personal data than the services log


def test_lotse_dev_token_prints_only_a_token(keycloak: Keycloak) -> None:
    env = {"LOTSE_OIDC_ISSUER": keycloak.issuer}
    cmd = [sys.executable, "-m", "lotse_cli.main", "dev", "token"]
    cases = [
        (["--org", "caritas-paderborn", "--role", "caseworker"], ("caritas-paderborn", "caseworker", None)),
        (["--org", "ki-kreis-paderborn", "--role", "partner_system"], ("ki-kreis-paderborn", "partner_system", None)),
        (["--role", "dpo"], (None, "dpo", None)),
        (["--service", "intake"], (None, None, "intake")),
    ]
    for args, (org, role, service) in cases:
        out = subprocess.run(cmd + args, capture_output=True, text=True, env=os.environ | env, check=True)
        lines = out.stdout.splitlines()
        assert len(lines) == 1, out.stdout
        p = asyncio.run(verifier_for(keycloak).verify(lines[0]))
        assert (p.org, next(iter(p.roles), None), p.service) == (org, role, service)
    bad = subprocess.run([*cmd, "--org", "nowhere", "--role", "caseworker"], capture_output=True, text=True, env=os.environ | env)
    assert bad.returncode == 1 and bad.stdout == "" and "no demo user" in bad.stderr


# ------------------------------------------------------------------- refusals
async def test_missing_token_is_401_with_a_bearer_challenge(keycloak: Keycloak) -> None:
    r = await call(verifier_for(keycloak), None)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_expired_keycloak_token_is_refused(keycloak: Keycloak) -> None:
    # A client whose access tokens live one second: a real, expired Keycloak token.
    async with keycloak.temporary_client(attributes={"access.token.lifespan": "1"}) as client_id:
        token = await keycloak.user_token("caseworker.caritas-paderborn", client_id=client_id)
    _, claims, _ = parts(token)
    assert claims["exp"] - claims["iat"] == 1
    while time.time() < claims["exp"] + 1.5:
        await asyncio.sleep(0.25)
    assert_invalid_token(await call(verifier_for(keycloak, leeway_s=0), token), "expired")
    # Only the expiry is wrong with it: tolerate enough clock skew and it passes.
    assert (await verifier_for(keycloak, leeway_s=120).verify(token)).org == "caritas-paderborn"


@pytest.mark.parametrize(
    "issuer",
    [
        "http://127.0.0.1:{port}/realms/lots",  # a prefix of the real one
        "http://127.0.0.1:{port}/realms/lotse-other",
        "http://localhost:{port}/realms/lotse",  # same server, other name
    ],
)
async def test_wrong_issuer_is_refused(keycloak: Keycloak, issuer: str) -> None:
    token = await keycloak.user_token("caseworker.caritas-paderborn")
    port = httpx.URL(keycloak.url).port
    v = TokenVerifier(AuthSettings(issuer=issuer.format(port=port), jwks_url=keycloak.jwks_url))
    assert_invalid_token(await call(v, token), "issuer")


async def test_wrong_audience_is_refused(keycloak: Keycloak) -> None:
    token = await keycloak.user_token("caseworker.caritas-paderborn")
    assert_invalid_token(await call(verifier_for(keycloak, audience="lotse-admin-api"), token), "audience")
    # A real token from a client without the lotse-api scope has no audience for us at all.
    async with keycloak.temporary_client(scopes=["basic", "roles"]) as client_id:
        other = await keycloak.user_token("caseworker.caritas-paderborn", client_id=client_id)
    assert "lotse-api" not in json.dumps(parts(other)[1].get("aud"))
    assert_invalid_token(await call(verifier_for(keycloak), other), "aud")


async def test_tampered_payload_is_refused(keycloak: Keycloak) -> None:
    token = await keycloak.user_token("caseworker.caritas-paderborn")
    header, claims, signature = parts(token)
    claims["org"] = "jobcenter-kreis-paderborn"
    claims["realm_access"] = {"roles": ["caseworker", "dpo"]}
    assert_invalid_token(await call(verifier_for(keycloak), assemble(header, claims, signature)), "signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(keycloak: Keycloak, alg: str) -> None:
    token = await keycloak.user_token("caseworker.caritas-paderborn")
    header, claims, _ = parts(token)
    forged = assemble(header | {"alg": alg}, claims | {"org": "jobcenter-kreis-paderborn"})
    assert_invalid_token(await call(verifier_for(keycloak), forged), "not accepted")


@pytest.mark.parametrize("alg", ["HS256", "HS512"])
async def test_hmac_signed_with_the_public_key_is_refused(keycloak: Keycloak, alg: str) -> None:
    token = await keycloak.user_token("caseworker.caritas-paderborn")
    header, claims, _ = parts(token)
    async with httpx.AsyncClient() as c:
        jwks = (await c.get(keycloak.jwks_url)).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public_key = jwt.algorithms.RSAAlgorithm.from_jwk(jwk)
    public_pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    forged_header = header | {"alg": alg}
    signing_input = f"{b64url(json.dumps(forged_header).encode())}.{b64url(json.dumps(claims).encode())}"
    digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
    signature = b64url(hmac.new(public_pem, signing_input.encode(), digest).digest())
    assert_invalid_token(await call(verifier_for(keycloak), f"{signing_input}.{signature}"), "not accepted")


async def test_a_foreign_key_with_the_real_kid_is_refused(keycloak: Keycloak) -> None:
    token = await keycloak.user_token("caseworker.caritas-paderborn")
    header, claims, _ = parts(token)
    attacker = LocalSigner(keycloak.issuer, kid=header["kid"])
    forged = attacker.sign(claims | {"org": "jobcenter-kreis-paderborn"})
    assert_invalid_token(await call(verifier_for(keycloak), forged), "signature")


# ------------------------------------------------------------------ the keys
async def test_unknown_kid_fetches_the_jwks_once(keycloak: Keycloak) -> None:
    transport = CountingTransport()
    clock = [1000.0]
    v = TokenVerifier(AuthSettings(issuer=keycloak.issuer), transport=transport, monotonic=lambda: clock[0])
    try:
        good = await keycloak.user_token("caseworker.caritas-paderborn")
        await v.verify(good)
        assert transport.urls == [f"{keycloak.issuer}/.well-known/openid-configuration", keycloak.jwks_url]
        await v.verify(good)
        assert len(transport.urls) == 2  # keys are cached

        attacker = LocalSigner(keycloak.issuer)  # real issuer and claims, a key Keycloak never published
        forged = attacker.sign(parts(good)[1], headers={"jku": "http://127.0.0.1:9/attacker-jwks.json"})
        assert_invalid_token(await call(v, forged), "key the issuer does not publish")
        assert transport.urls[2:] == [keycloak.jwks_url]  # one refresh, and never the token's jku
        for _ in range(5):
            assert_invalid_token(await call(v, forged))
        assert len(transport.urls) == 3  # rate-limited: no more fetches within the interval
        clock[0] += 31
        assert_invalid_token(await call(v, forged))
        assert transport.urls[3:] == [keycloak.jwks_url]
        assert (await v.verify(good)).org == "caritas-paderborn"
    finally:
        await transport.aclose()


async def test_a_key_rotated_in_keycloak_is_picked_up(keycloak: Keycloak) -> None:
    """The rotation in docs/security.md: a new key with a higher priority signs; verifiers fetch it on its first kid."""
    v = verifier_for(keycloak)
    before = await keycloak.user_token("auditor")
    await v.verify(before)
    async with keycloak.admin() as api:
        realm_id = (await api.get("")).json()["id"]
        r = await api.post(
            f"{keycloak.url}/admin/realms/lotse/components",
            json={
                "name": "rsa-rotation-test",
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm_id,
                "config": {"priority": ["1000"], "keySize": ["2048"], "algorithm": ["RS256"], "active": ["true"], "enabled": ["true"]},
            },
        )
        assert r.status_code == 201, r.text
        component = r.headers["location"].rsplit("/", 1)[1]
        try:
            after = await keycloak.user_token("auditor")
            assert parts(after)[0]["kid"] != parts(before)[0]["kid"]
            fetches = v.fetches
            assert (await v.verify(after)).roles == {"auditor"}
            assert v.fetches == fetches + 1
            assert (await v.verify(before)).roles == {"auditor"}  # the old key still verifies until it is removed
        finally:
            await api.delete(f"{keycloak.url}/admin/realms/lotse/components/{component}")
