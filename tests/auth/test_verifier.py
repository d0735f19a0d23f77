"""`lotse_kit.auth` with a locally generated signing key (`LocalSigner`): no Keycloak, no network."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from lotse_kit.auth import AuthSettings, InvalidToken, LocalSigner, TokenVerifier
from lotse_kit.errors import Unavailable
from tests.auth.conftest import assemble, assert_invalid_token, b64url, call, client_for, parts

ISSUER = "http://issuer.test/realms/lotse"


@pytest.fixture(scope="module")
def signer() -> LocalSigner:
    return LocalSigner(ISSUER)


async def test_a_good_token_gives_the_principal(signer: LocalSigner) -> None:
    v = signer.verifier()
    p = await v.verify(signer.token(subject="u1", org="caritas-paderborn", roles=["caseworker", "offline_access"]))
    assert (p.subject, p.org, p.roles, p.service, p.district_wide) == ("u1", "caritas-paderborn", {"caseworker"}, None, False)
    svc = await v.verify(signer.token(subject="sa", service="audit"))
    assert (svc.service, svc.org, svc.roles) == ("audit", None, frozenset())
    dpo = await v.verify(signer.token(roles=["dpo"], district_wide=True))
    assert dpo.district_wide and dpo.has_role("dpo") and not dpo.has_role("auditor")
    # Only a JSON true makes a caller district-wide.
    assert not (await v.verify(signer.sign(signer.claims(roles=["dpo"]) | {"district_wide": "true"}))).district_wide
    r = await call(v, signer.token(org="awo-kreis-paderborn", roles=["partner_system"]))
    assert r.status_code == 200 and r.json()["roles"] == ["partner_system"]


async def test_discovery_then_jwks_then_cache(signer: LocalSigner) -> None:
    signer.requests.clear()
    v = signer.verifier()
    for _ in range(3):
        await v.verify(signer.token())
    assert signer.requests == [f"{ISSUER}/.well-known/openid-configuration", signer.jwks_url]
    direct = TokenVerifier(signer.settings(jwks_url=signer.jwks_url), transport=signer.transport())
    signer.requests.clear()
    await direct.verify(signer.token())
    assert signer.requests == [signer.jwks_url]


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"iss": ISSUER + "-evil"}, "issuer"),
        ({"iss": ISSUER[:-1]}, "issuer"),
        ({"aud": "another-api"}, "audience"),
        ({"aud": ["account", "another-api"]}, "audience"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"iat": int(time.time()) + 600}, "not valid yet"),
        ({"typ": "Refresh"}, "not an access token"),
        ({"typ": "ID"}, "not an access token"),
        ({"sub": ""}, "subject"),
    ],
)
async def test_bad_claims_are_refused(signer: LocalSigner, change: dict[str, object], detail: str) -> None:
    assert_invalid_token(await call(signer.verifier(), signer.sign(signer.claims() | change)), detail)


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
async def test_required_claims(signer: LocalSigner, claim: str) -> None:
    claims = signer.claims()
    del claims[claim]
    assert_invalid_token(await call(signer.verifier(), signer.sign(claims)))


async def test_leeway_tolerates_small_clock_skew(signer: LocalSigner) -> None:
    token = signer.sign(signer.claims() | {"exp": int(time.time()) - 5})
    assert await signer.verifier(leeway_s=30).verify(token)
    with pytest.raises(InvalidToken, match="expired"):
        await signer.verifier(leeway_s=0).verify(token)


async def test_audience_list_containing_ours_is_accepted(signer: LocalSigner) -> None:
    assert await signer.verifier().verify(signer.sign(signer.claims() | {"aud": ["account", "lotse-api"]}))


async def test_alg_none_and_hmac_with_the_public_key_are_refused_before_any_key_is_used(signer: LocalSigner) -> None:
    v = signer.verifier()
    claims = signer.claims(org="caritas-paderborn")
    none = assemble({"alg": "none", "kid": signer.kid, "typ": "JWT"}, claims)
    assert_invalid_token(await call(v, none), "not accepted")
    pem = signer.private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    h = b64url(b'{"alg":"HS256","kid":"' + signer.kid.encode() + b'"}')
    p = parts(signer.sign(claims))[1]
    signing_input = f"{h}.{b64url(json.dumps(p).encode())}"
    forged = f"{signing_input}.{b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    assert_invalid_token(await call(v, forged), "not accepted")
    signer.requests.clear()
    await call(signer.verifier(), forged)
    assert signer.requests == []  # refused on the header alone: no key was even fetched


async def test_an_allowed_alg_that_does_not_match_the_key_is_refused(signer: LocalSigner) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(signer.claims(), other, algorithm="ES256", headers={"kid": signer.kid})
    assert_invalid_token(await call(signer.verifier(), forged), "does not match")
    # PS256 with an RS256-only key: the key's own alg decides.
    ps = jwt.encode(signer.claims(), signer.private_key, algorithm="PS256", headers={"kid": signer.kid})
    assert_invalid_token(await call(signer.verifier(), ps), "does not match")


async def test_an_algorithm_outside_the_allowlist_is_refused(signer: LocalSigner) -> None:
    rs512 = jwt.encode(signer.claims(), signer.private_key, algorithm="RS512", headers={"kid": signer.kid})
    assert_invalid_token(await call(signer.verifier(), rs512), "not accepted")


@pytest.mark.parametrize("algs", [["HS256"], ["none"], ["RS256", "HS512"], []])
def test_settings_refuse_symmetric_and_none_algorithms(algs: list[str]) -> None:
    with pytest.raises(ValidationError):
        AuthSettings(algorithms=algs)


async def test_tampered_and_malformed_tokens(signer: LocalSigner) -> None:
    v = signer.verifier()
    h, c, s = parts(signer.token(org="caritas-paderborn"))
    assert_invalid_token(await call(v, assemble(h, c | {"org": "awo-kreis-paderborn"}, s)), "signature")
    for junk in ["abc", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9"]:
        assert_invalid_token(await call(v, junk))


async def test_kid_less_token_uses_the_only_fitting_key(signer: LocalSigner) -> None:
    claims = signer.claims()
    token = jwt.encode(claims, signer.private_key, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(token)
    assert await signer.verifier().verify(token)


async def test_unknown_kid_refreshes_once_per_interval() -> None:
    signer = LocalSigner(ISSUER, kid="old")
    clock = [0.0]
    v = TokenVerifier(signer.settings(jwks_url=signer.jwks_url), transport=signer.transport(), monotonic=lambda: clock[0])
    await v.verify(signer.token())
    assert len(signer.requests) == 1
    stranger = LocalSigner(ISSUER, kid="stranger")
    for _ in range(10):
        with pytest.raises(InvalidToken, match="does not publish"):
            await v.verify(stranger.token())
    assert len(signer.requests) == 2  # one refresh for the unknown kid, then rate-limited
    # The issuer rotates: the next unknown kid within the interval waits, after it the new key is fetched.
    signer.kid = "new"
    with pytest.raises(InvalidToken):
        await v.verify(signer.token())
    clock[0] += 30
    assert await v.verify(signer.token())
    assert len(signer.requests) == 3


async def test_keys_are_renewed_after_max_age() -> None:
    signer = LocalSigner(ISSUER)
    clock = [0.0]
    v = TokenVerifier(
        signer.settings(jwks_url=signer.jwks_url, jwks_max_age_s=600), transport=signer.transport(), monotonic=lambda: clock[0]
    )
    await v.verify(signer.token())
    clock[0] += 601
    await v.verify(signer.token())
    assert len(signer.requests) == 2


async def test_concurrent_requests_share_one_fetch() -> None:
    signer = LocalSigner(ISSUER)
    v = TokenVerifier(signer.settings(jwks_url=signer.jwks_url), transport=signer.transport())
    await asyncio.gather(*(v.verify(signer.token()) for _ in range(20)))
    assert len(signer.requests) == 1


async def test_unreachable_provider_is_503_not_401() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    signer = LocalSigner(ISSUER)
    v = TokenVerifier(signer.settings(), transport=httpx.MockTransport(down))
    with pytest.raises(Unavailable):
        await v.verify(signer.token())
    async with client_for(v) as c:
        r = await c.get("/whoami", headers={"Authorization": f"Bearer {signer.token()}"})
    assert r.status_code == 503


async def test_discovery_naming_another_issuer_is_not_trusted() -> None:
    signer = LocalSigner(ISSUER)

    def lying(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json={"issuer": "http://evil.test", "jwks_uri": signer.jwks_url})
        return httpx.Response(200, json=signer.jwks())

    with pytest.raises(Unavailable):
        await TokenVerifier(signer.settings(), transport=httpx.MockTransport(lying)).verify(signer.token())


@pytest.mark.parametrize(
    ("header", "challenge"),
    [
        (None, 'Bearer realm="lotse"'),
        ("Basic dXNlcjpwdw==", 'Bearer realm="lotse"'),
        ("Bearer ", 'Bearer error="invalid_token"'),
        ("Bearer not-a-jwt", 'Bearer error="invalid_token"'),
    ],
)
async def test_missing_or_malformed_authorization(signer: LocalSigner, header: str | None, challenge: str) -> None:
    async with client_for(signer.verifier()) as c:
        r = await c.get("/whoami", headers={"Authorization": header} if header is not None else {})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"] == challenge


async def test_a_verified_token_is_not_verified_again_until_it_expires() -> None:
    signer = LocalSigner(ISSUER)
    v = TokenVerifier(signer.settings(jwks_url=signer.jwks_url, leeway_s=0), transport=signer.transport())
    token = signer.sign(signer.claims(subject="svc") | {"exp": int(time.time()) + 2})
    first = await v.verify(token)
    assert (await v.verify(token)) is first and v.cache_hits == 1
    await asyncio.sleep(2.5)  # past exp: the cached principal must not outlive the token
    with pytest.raises(InvalidToken, match="expired"):
        await v.verify(token)


async def test_a_cached_token_whose_key_was_withdrawn_is_refused_at_the_next_fetch() -> None:
    signer = LocalSigner(ISSUER, kid="old")
    clock = [0.0]
    v = TokenVerifier(
        signer.settings(jwks_url=signer.jwks_url, jwks_max_age_s=600), transport=signer.transport(), monotonic=lambda: clock[0]
    )
    token = signer.token()
    await v.verify(token)
    await v.verify(token)
    assert v.cache_hits == 1
    signer.kid = "new"  # the issuer withdraws "old" (e.g. compromised) and publishes only "new"
    clock[0] += 601
    with pytest.raises(InvalidToken, match="does not publish"):
        await v.verify(token)
    with pytest.raises(InvalidToken):
        await v.verify(token)
