"""Who is calling: OIDC access tokens (JWT) verified against the issuer's published keys.

A caller sends `Authorization: Bearer <access token>` issued by the district's OIDC provider
(Keycloak in the local stack, realm `lotse`; see docs/security.md). `TokenVerifier` checks, with
PyJWT and `cryptography` (no hand-written JWT parsing):

1. the header's `alg` is in the allowlist (`LOTSE_OIDC_ALGORITHMS`, asymmetric only) BEFORE a key is
   chosen, so `alg=none` and an HS256 token "signed" with the public key are refused;
2. the key: the JWKS entry with the token's `kid` (a signing key of a matching type; its own `alg`,
   if it names one, must be the token's). Keys are cached; an unknown `kid` re-fetches the JWKS, at
   most once per `LOTSE_OIDC_JWKS_MIN_REFRESH_S`, so a rotated key is picked up at once and garbage
   tokens cannot make us hammer the provider; the cache is also renewed after `LOTSE_OIDC_JWKS_MAX_AGE_S`;
3. the signature, `iss` (exactly `LOTSE_OIDC_ISSUER`), `aud` (contains `LOTSE_OIDC_AUDIENCE`),
   `exp`, `nbf`, `iat` (with `LOTSE_OIDC_LEEWAY_S`), and a `sub`; a token whose `typ` claim says it
   is not an access token (Keycloak marks ID and refresh tokens) is refused.

A token that passed is remembered (at most 10,000) until its `exp`: services call each other with the same
token for minutes, and the signature check costs about 65 µs of CPU per request. A remembered token is
checked again in full once it expired, when the JWKS is due for renewal, or when its key is no longer
published; a fetched key set that differs from the last one forgets every remembered token.

The result is a `Principal`: subject, acting organisation (`org` claim), Lotse roles, the calling
service (`service` claim, service accounts only) and `district_wide`. Every refusal is an
`InvalidToken` (401 problem+json with `WWW-Authenticate: Bearer error="invalid_token"`); a request
without a bearer token gets `MissingToken` (401, `WWW-Authenticate: Bearer realm="lotse"`).

`principal` is the FastAPI dependency. `LocalSigner` signs tokens with a key generated in the
process and serves its JWKS, so unit tests need no Keycloak.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import tracing
from .errors import Unauthorized, Unavailable

log = logging.getLogger(__name__)

# The roles Lotse knows (realm roles in Keycloak). Other roles in a token (Keycloak's
# `offline_access`, `default-roles-lotse`, ...) are not Lotse's business and are left out of `Principal.roles`.
ROLES: frozenset[str] = frozenset({"caseworker", "partner_system", "auditor", "dpo", "operator"})

# Asymmetric algorithms only: a symmetric (HS*) key would be a shared secret every verifier holds,
# and "none" is no signature at all. The allowlist is a subset of these.
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class AuthSettings(BaseSettings):
    """`LOTSE_OIDC_*`: where tokens come from and how strictly they are read."""

    model_config = SettingsConfigDict(env_prefix="LOTSE_OIDC_", extra="ignore")

    issuer: str = "http://127.0.0.1:8180/realms/lotse"
    audience: str = "lotse-api"
    # Empty: taken from the issuer's discovery document (<issuer>/.well-known/openid-configuration).
    jwks_url: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"])
    leeway_s: float = Field(10.0, ge=0, le=300, description="Clock skew tolerated for exp, nbf and iat.")
    jwks_min_refresh_s: float = Field(30.0, ge=0, description="An unknown kid re-fetches the JWKS at most this often.")
    jwks_max_age_s: float = Field(3600.0, gt=0, description="Cached keys are re-fetched when they are older than this.")
    http_timeout_s: float = Field(5.0, gt=0)
    # This service's own credentials (client-credentials grant), for calls to another service.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # Where the acting organisation and the roles are in the token (a district's provider may differ from Keycloak).
    org_claim: str = "org"
    roles_claim: str = "realm_access.roles"

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(f"not allowed as token algorithms: {bad} (only {sorted(ASYMMETRIC_ALGORITHMS)})")
        if not v:
            raise ValueError("at least one algorithm")
        return v

    @field_validator("issuer")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")


class InvalidToken(Unauthorized):
    """The bearer token is not one we accept (RFC 6750 `invalid_token`)."""

    title = "Invalid token"
    type = "urn:lotse:problem:invalid-token"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class MissingToken(Unauthorized):
    """No bearer token at all (RFC 6750 §3.1: then the challenge carries no error code)."""

    title = "Not authenticated"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="lotse"'}


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    subject: str
    org: str | None
    roles: frozenset[str]
    service: str | None
    district_wide: bool
    claims: Mapping[str, Any] = field(repr=False, compare=False)

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class _Borrowed(httpx.AsyncBaseTransport):
    """Lends a caller's transport to a short-lived client without letting the client close it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)


class TokenVerifier:
    """Verifies access tokens against one issuer; one instance per process (it holds the key cache)."""

    def __init__(
        self,
        settings: AuthSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or AuthSettings()
        self._transport = transport
        self._monotonic = monotonic
        self._jwks_url = self.settings.jwks_url
        self._keys: dict[str | None, dict[str, Any]] = {}  # kid -> JWK (signing keys only)
        self._built: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last fetch attempt, successful or not
        self._kid_refresh_at: float | None = None  # the last fetch an unknown kid caused
        self._loaded = False  # keys were fetched successfully at least once
        self._lock = asyncio.Lock()
        self.fetches = 0  # JWKS requests made (for metrics and tests)
        # Tokens already verified: a service calls many times with the same token, and checking an RS256
        # signature costs ~65 µs of CPU per request. A hit still checks the expiry, and that the key it was
        # signed with is still published (a key withdrawn from the JWKS invalidates its tokens at the next fetch).
        self._verified: dict[str, tuple[Principal, float, str | None]] = {}
        self.cache_hits = 0

    # ------------------------------------------------------------------ keys
    async def _get_json(self, client: httpx.AsyncClient, url: str) -> Any:
        r = await client.get(url, headers={"Accept": "application/json"})
        r.raise_for_status()
        return r.json()

    async def _fetch(self) -> None:
        self._fetched_at = self._monotonic()
        self.fetches += 1
        transport = _Borrowed(self._transport) if self._transport is not None else None
        async with httpx.AsyncClient(transport=transport, timeout=self.settings.http_timeout_s) as client:
            if not self._jwks_url:
                meta = await self._get_json(client, self.settings.issuer + "/.well-known/openid-configuration")
                if not isinstance(meta, dict) or str(meta.get("issuer", "")).rstrip("/") != self.settings.issuer:
                    raise ValueError("the discovery document names another issuer")
                jwks_uri = meta.get("jwks_uri")
                if not isinstance(jwks_uri, str):
                    raise ValueError("the discovery document has no jwks_uri")
                self._jwks_url = jwks_uri
            doc = await self._get_json(client, self._jwks_url)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("the JWKS document has no keys")
        keys: dict[str | None, dict[str, Any]] = {}
        for k in doc["keys"]:
            if isinstance(k, dict) and k.get("kty") in ("RSA", "EC", "OKP") and k.get("use", "sig") == "sig":
                keys[k.get("kid")] = k
        if keys != self._keys:
            self._verified.clear()  # a key may have been withdrawn
        self._keys, self._built, self._loaded = keys, {}, True
        log.info("fetched the issuer's signing keys", extra={"jwks_url": self._jwks_url, "keys": len(keys)})

    def _refresh_due(self, kid: str | None) -> bool:
        last = self._fetched_at
        if not self._loaded or last is None or self._monotonic() - last >= self.settings.jwks_max_age_s:
            return True
        return kid is not None and kid not in self._keys

    async def _refresh(self, kid: str | None) -> None:
        """Re-fetches the JWKS when keys were never loaded, are too old, or `kid` is unknown (rate-limited)."""
        async with self._lock:
            if not self._refresh_due(kid):
                return  # another request fetched the keys meanwhile
            now, last = self._monotonic(), self._fetched_at
            if not self._loaded:
                # The provider did not answer yet: one attempt per second at most, 503 in between.
                if last is not None and now - last < min(self.settings.jwks_min_refresh_s, 1.0):
                    raise Unavailable("The identity provider's signing keys cannot be fetched; try again later.")
            elif last is not None and now - last < self.settings.jwks_max_age_s:
                # Fresh keys, unknown kid: at most one such refresh per interval, whatever the tokens say.
                if self._kid_refresh_at is not None and now - self._kid_refresh_at < self.settings.jwks_min_refresh_s:
                    return
                self._kid_refresh_at = now
            try:
                await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("could not fetch the issuer's signing keys", extra={"error": f"{type(exc).__name__}: {exc}"})
                if not self._loaded:
                    raise Unavailable("The identity provider's signing keys cannot be fetched; try again later.") from exc

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        if self._refresh_due(kid):
            await self._refresh(kid)
        jwk = self._pick(kid, alg)
        if jwk is None:
            raise InvalidToken("The token was signed with a key the issuer does not publish.")
        kid = jwk.get("kid")
        built = self._built.get((kid, alg))
        if built is None:
            if jwk.get("alg") not in (None, alg) or _KEY_TYPES[alg[:2]] != jwk.get("kty"):
                raise InvalidToken("The token's algorithm does not match its key.")
            try:
                built = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError as exc:
                raise InvalidToken("The token's algorithm does not match its key.") from exc
            self._built[(kid, alg)] = built
        return built

    def _pick(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        # No kid: acceptable only when exactly one published key fits the algorithm.
        fitting = [k for k in self._keys.values() if k.get("kty") == _KEY_TYPES[alg[:2]] and k.get("alg") in (None, alg)]
        return fitting[0] if len(fitting) == 1 else None

    # ---------------------------------------------------------------- tokens
    VERIFIED_CACHE_MAX: ClassVar[int] = 10_000

    async def verify(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            principal, exp, kid = hit
            if time.time() < exp + self.settings.leeway_s and kid in self._keys and not self._refresh_due(kid):
                self.cache_hits += 1
                return principal
            del self._verified[token]  # expired or its key is gone: verify in full, which says why
        principal = await self._verify(token)
        if len(self._verified) >= self.VERIFIED_CACHE_MAX:
            self._verified.clear()  # bounded; rebuilt by the next requests
        expires = principal.claims.get("exp")
        if isinstance(expires, (int, float)):
            self._verified[token] = (principal, float(expires), jwt.get_unverified_header(token).get("kid"))
        return principal

    async def _verify(self, token: str) -> Principal:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is not a well-formed JWT.") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in s.algorithms:
            raise InvalidToken(f"Tokens signed with {str(alg)[:16]!r} are not accepted.")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("The token's key id is malformed.")
        key = await self._key(kid, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "strict_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("The token is not valid yet.") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("The token was issued by another issuer.") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("The token is not meant for this API (audience).") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("The token's signature does not verify.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"The token lacks the {exc.claim!r} claim.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is not valid.") from exc
        typ = claims.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() != "bearer"):
            raise InvalidToken("The token is not an access token.")
        return self.principal_from(claims)

    def principal_from(self, claims: Mapping[str, Any]) -> Principal:
        sub = claims.get("sub")
        # The subject is logged and stored (who recorded a consent): no control characters.
        if not isinstance(sub, str) or not sub or sub != sub.strip() or _CONTROL.search(sub):
            raise InvalidToken("The token's subject is malformed.")
        org = _claim(claims, self.settings.org_claim)
        roles = _claim(claims, self.settings.roles_claim)
        service = claims.get("service")
        return Principal(
            subject=sub,
            org=org if isinstance(org, str) and org else None,
            roles=frozenset(r for r in roles if isinstance(r, str) and r in ROLES) if isinstance(roles, list) else frozenset(),
            service=service if isinstance(service, str) and service else None,
            district_wide=claims.get("district_wide") is True,
            claims=MappingProxyType(dict(claims)),
        )


# ------------------------------------------------------------ FastAPI wiring
_default: list[TokenVerifier] = []


def install(app: FastAPI, verifier: TokenVerifier | None = None) -> TokenVerifier:
    """Gives an app its verifier (one key cache per app); `principal` uses it."""
    v = verifier or TokenVerifier()
    app.state.token_verifier = v
    return v


def _verifier_for(request: Request) -> TokenVerifier:
    v = getattr(request.app.state, "token_verifier", None)
    if isinstance(v, TokenVerifier):
        return v
    if not _default:
        _default.append(TokenVerifier())
    return _default[0]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise MissingToken("This API needs an OIDC access token: Authorization: Bearer <token>.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise MissingToken("Only bearer tokens are accepted: Authorization: Bearer <token>.")
    token = token.strip()
    if not token:
        raise InvalidToken("The bearer token is empty.")
    return token


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller, or a 401 problem."""
    p = await _verifier_for(request).verify(bearer_token(request))
    request.state.principal = p
    return p


class ServiceTokens:
    """This service's access token for calls to other services (OAuth 2.0 client-credentials grant),
    fetched from the issuer's token endpoint and reused until shortly before it expires."""

    def __init__(self, settings: AuthSettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings or AuthSettings()
        self._transport = transport
        self._token: str | None = None
        self._valid_until = 0.0
        self._lock = asyncio.Lock()

    async def __call__(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._valid_until:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (the other service refused it, e.g. after the provider rotated its keys)."""
        self._token = None

    async def _fetch(self) -> None:
        s = self.settings
        if not s.client_id or s.client_secret is None:
            raise Unavailable("This service has no client credentials (LOTSE_OIDC_CLIENT_ID and LOTSE_OIDC_CLIENT_SECRET).")
        transport = _Borrowed(self._transport) if self._transport is not None else None
        async with httpx.AsyncClient(transport=transport, timeout=s.http_timeout_s) as client:
            meta = (await client.get(s.issuer + "/.well-known/openid-configuration")).raise_for_status().json()
            r = await client.post(
                meta["token_endpoint"],
                data={"grant_type": "client_credentials"},
                auth=(s.client_id, s.client_secret.get_secret_value()),
            )
            r.raise_for_status()
            body = r.json()
        self._token = str(body["access_token"])
        # Renew a little early, so a token never expires on its way to the other service.
        self._valid_until = time.monotonic() + max(5.0, float(body.get("expires_in", 60)) - 30.0)


# The absolute URL of a path another service is called on repeatedly: httpx parses a relative path and joins it with
# the client's base URL on every call (2 URL parses, ~30 µs of CPU on these cores); a ready `httpx.URL` skips that.
# A path is remembered from its second call on, so paths with ids (one call each) cost nothing extra.
_URLS_MAX = 256
_urls: dict[tuple[int, str], tuple[httpx.URL, httpx.URL]] = {}  # (id(base_url), path) -> (base_url, absolute URL)
_paths_seen: set[tuple[int, str]] = set()


def _target(client: httpx.AsyncClient, path: str) -> httpx.URL | str:
    """`path` on `client`: the absolute URL httpx would build for it, once it was asked for twice; else `path`."""
    base = client.base_url
    key = (id(base), path)
    hit = _urls.get(key)
    if hit is not None and hit[0] is base:
        return hit[1]
    if key not in _paths_seen:
        if len(_paths_seen) >= _URLS_MAX:
            _paths_seen.clear()
        _paths_seen.add(key)
        return path
    if len(_urls) >= _URLS_MAX:
        _urls.clear()
    url = client.build_request("GET", path).url  # httpx's own join of base URL and path, as on every call before
    _urls[key] = (base, url)  # the base URL is kept alive with it, so its id is not reused meanwhile
    return url


async def request_with_service_token(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    tokens: Callable[[], Awaitable[str]],
    token: Callable[[], Awaitable[str]] | None = None,
    params: Any = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """`method` `path` with this service's own token (`tokens`, usually a `ServiceTokens`; `token` fetches it if the
    caller wraps fetch errors), and the current trace context (`traceparent`). A 401 means the other service no
    longer accepts the cached token (the provider rotated its keys, the token was revoked): forget it, fetch a new
    one and try once more. A path called again goes to the URL httpx built for it before (`_target`); `client` keeps
    its timeouts, TLS verification, limits and transport."""
    fetch = token or tokens
    for attempt in (1, 2):
        # A client span per attempt, its trace context in the headers (lotse_kit/tracing.py).
        bearer = f"Bearer {await fetch()}"
        with tracing.client(method, client.base_url.host or None, client.base_url.port, path) as span:
            auth = tracing.inject({**(headers or {}), "Authorization": bearer})
            resp = await client.request(method, _target(client, path), params=params, json=json, headers=auth)
            if span is not None:
                span.set_attribute("http.response.status_code", resp.status_code)
                if resp.status_code >= 500:
                    tracing.failed(span, str(resp.status_code))
        invalidate = getattr(tokens, "invalidate", None)
        if resp.status_code != 401 or attempt == 2 or invalidate is None:
            return resp
        log.info("a service refused our token; fetching a new one", extra={"path": path.split("?", 1)[0]})
        invalidate()
    raise AssertionError("unreachable")


async def get_with_service_token(
    client: httpx.AsyncClient,
    path: str,
    *,
    tokens: Callable[[], Awaitable[str]],
    token: Callable[[], Awaitable[str]] | None = None,
    params: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """GET with `request_with_service_token`."""
    return await request_with_service_token(client, "GET", path, tokens=tokens, token=token, params=params, headers=headers)


async def post_with_service_token(
    client: httpx.AsyncClient,
    path: str,
    *,
    tokens: Callable[[], Awaitable[str]],
    token: Callable[[], Awaitable[str]] | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST `json` with `request_with_service_token`."""
    return await request_with_service_token(client, "POST", path, tokens=tokens, token=token, json=json, headers=headers)


# ------------------------------------------------------------------- tests
class LocalSigner:
    """An issuer in the process: an RSA key generated here, its JWKS, and tokens signed with it.

    `transport()` answers the discovery and JWKS requests of a `TokenVerifier` (counting them in
    `requests`), so unit tests need no network and no Keycloak.
    """

    def __init__(self, issuer: str = "http://issuer.test/realms/lotse", audience: str = "lotse-api", *, kid: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.kid = kid or uuid.uuid4().hex
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.requests: list[str] = []

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/protocol/openid-connect/certs"

    def jwk(self) -> dict[str, Any]:
        k: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return k | {"kid": self.kid, "use": "sig", "alg": "RS256"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk()]}

    def settings(self, **overrides: Any) -> AuthSettings:
        return AuthSettings(issuer=self.issuer, audience=self.audience, **overrides)

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            url = str(request.url)
            self.requests.append(url)
            if url == self.issuer + "/.well-known/openid-configuration":
                return httpx.Response(200, json={"issuer": self.issuer, "jwks_uri": self.jwks_url})
            if url == self.jwks_url:
                return httpx.Response(200, json=self.jwks())
            return httpx.Response(404)

        return httpx.MockTransport(handle)

    def verifier(self, **overrides: Any) -> TokenVerifier:
        return TokenVerifier(self.settings(**overrides), transport=self.transport())

    def claims(
        self,
        *,
        subject: str = "user-1",
        org: str | None = None,
        roles: Iterable[str] = (),
        service: str | None = None,
        district_wide: bool = False,
        lifetime_s: int = 300,
        issued_at: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        iat = int(issued_at if issued_at is not None else time.time())
        c: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": iat,
            "exp": iat + lifetime_s,
            "jti": uuid.uuid4().hex,
            "typ": "Bearer",
            "realm_access": {"roles": list(roles)},
        }
        if org is not None:
            c["org"] = org
        if service is not None:
            c["service"] = service
        if district_wide:
            c["district_wide"] = True
        return c | extra

    def sign(self, claims: Mapping[str, Any], *, alg: str = "RS256", headers: Mapping[str, Any] | None = None) -> str:
        h = {"kid": self.kid} | dict(headers or {})
        return jwt.encode(dict(claims), self.private_key, algorithm=alg, headers=h)

    def token(self, **claims: Any) -> str:
        return self.sign(self.claims(**claims))
