"""Who may call what: Lotse's roles, every route's access policy and the scope rules, in one place.

Two layers, both here:

1. **Route policies** (`Policy`): which kind of caller may call a route at all: an organisation's
   `caseworker` or `partner_system` (acting for the organisation in the token's `org` claim, which
   must be a member of the network), a district role (`auditor`, `dpo`, `operator`), a service's own
   token (`service` claim), nobody in particular (`Open`, no token) or callers from allowed networks
   (`FromNetworks`, `/metrics`). A route declares its policy with `Guard(...)(POLICY)` as the type of
   a parameter; the dependency verifies the token (401), applies the policy (403) and hands the route
   a `RequestContext` or `CallerContext`. **Deny by default:** `check_routes(app)` (run by
   `lotse_kit.http.create_app`) refuses to build an app with a route that declares no policy, or more
   than one.

2. **Scope rules** (the functions below the policies): which records an allowed caller may see or
   change, decided from facts the service looks up (who registered a client, who received a referral,
   who collected a consent, ...). The service supplies the facts; the rule and its answer are here.

Refusals (see docs/security.md): no or an invalid token 401; a caller whose role, service or network
the policy does not allow 403 (`urn:lotse:problem:role-required`, `...:not-a-member`,
`...:no-acting-org`, `...:address-not-allowed`); a record outside the caller's scope reads exactly
like a record that does not exist (404 with the service's own not-found problem), so that nobody
learns what exists at another organisation. Where a caller may see a record but not do this to it
(a referral's receiver trying to revoke it), 403.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.routing import BaseRoute, Route

from .auth import ROLES, Principal, principal
from .context import ON_BEHALF_OF, CallerContext, NoActingOrganisation, RequestContext, log_request, org_id_or_none
from .errors import Forbidden

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ roles
CASEWORKER = "caseworker"
PARTNER_SYSTEM = "partner_system"
AUDITOR = "auditor"
DPO = "dpo"
OPERATOR = "operator"
# Roles that act for one organisation, the one in the token's `org` claim.
ORG_ROLES: frozenset[str] = frozenset({CASEWORKER, PARTNER_SYSTEM})
assert ORG_ROLES | {AUDITOR, DPO, OPERATOR} == ROLES


class RoleRequired(Forbidden):
    title = "Not allowed for this caller"
    type = "urn:lotse:problem:role-required"


class NotAMember(Forbidden):
    title = "Not a member of the network"
    type = "urn:lotse:problem:not-a-member"


class AddressNotAllowed(Forbidden):
    title = "Not allowed from this address"
    type = "urn:lotse:problem:address-not-allowed"


class UndeclaredAccess(RuntimeError):
    """An app has a route without an access policy (deny by default: it must not be served)."""


class Members(Protocol):
    """The network's organisations (`lotse_kit.network.OrgDirectory`)."""

    def has(self, org_id: str) -> bool: ...


# ------------------------------------------------------------------ settings
class AccessSettings(BaseSettings):
    """`LOTSE_METRICS_*`: who may read `/metrics`."""

    model_config = SettingsConfigDict(env_prefix="LOTSE_METRICS_", extra="ignore")

    # Client networks (CIDR) allowed to scrape /metrics; the default is loopback only. Behind a reverse
    # proxy the address is the proxy's unless uvicorn is told to trust its X-Forwarded-For.
    allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for n in v:
            ipaddress.ip_network(n, strict=False)  # ValueError names the bad entry
        return v


# ------------------------------------------------------------------ policies
class Policy:
    """A route's access rule. Subclasses: `Open`, `FromNetworks`, `Rule`."""

    name: str

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Open(Policy):
    """No token needed (health, the webhook public key, the OpenAPI documents). `why` is required on purpose."""

    name: str
    why: str

    def describe(self) -> str:
        return f"open: {self.why}"


@dataclass(frozen=True)
class FromNetworks(Policy):
    """No token, but only from client addresses in `networks` (e.g. /metrics: loopback unless configured)."""

    name: str
    networks: tuple[str, ...]

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in ipaddress.ip_network(n, strict=False) for n in self.networks)

    def describe(self) -> str:
        return f"from {', '.join(self.networks)}"


ANY_SERVICE = "*"


@dataclass(frozen=True)
class Rule(Policy):
    """Who may call, by token:

    - `org_roles`: person or partner-system roles acting for the organisation in the token (a member);
    - `roles`: district roles (no organisation needed; an org-bound dpo keeps its organisation);
      a role also in `district_only` counts only for a district-level caller (no `org` claim, and for
      `dpo` `district_wide: true`);
    - `services`: the services whose own tokens may call (`ANY_SERVICE` for any); with `on_behalf_of`
      the service must name the organisation it asks for in `Lotse-On-Behalf-Of`, which then acts.

    A service token is judged as a service only, never by roles it might also carry.
    """

    name: str
    org_roles: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    district_only: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    on_behalf_of: bool = False
    any_caller: bool = False  # any valid token (non-personal data only)

    def __post_init__(self) -> None:
        unknown = (self.org_roles | self.roles) - ROLES
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}")
        if not self.district_only <= self.roles:
            raise ValueError("district_only must name roles of `roles`")
        if self.org_roles & self.roles:
            raise ValueError("a role is either org-scoped or district-level in one rule")

    @property
    def always_acts_for_org(self) -> bool:
        """Every caller it lets through acts for an organisation (the route gets a `RequestContext`)."""
        return not self.roles and not self.any_caller and (not self.services or self.on_behalf_of)

    def describe(self) -> str:
        who = [*sorted(self.org_roles)]
        who += [f"{r} (district-level)" if r in self.district_only else r for r in sorted(self.roles)]
        if self.services:
            svc = "any service" if ANY_SERVICE in self.services else "service " + "/".join(sorted(self.services))
            who.append(svc + (f" on behalf of an organisation ({ON_BEHALF_OF})" if self.on_behalf_of else ""))
        if self.any_caller:
            who.append("any authenticated caller")
        return ", ".join(who)

    def service_allowed(self, service: str) -> bool:
        return ANY_SERVICE in self.services or service in self.services

    def admit(self, request: Request, p: Principal, members: Members | None) -> RequestContext | CallerContext:
        """The caller's context if this rule lets `p` call; else a 403 problem."""
        if self.any_caller:
            return CallerContext(acting_org=p.org if p.service is None else None, actor=p.subject, principal=p)
        if p.service is not None:
            if not self.service_allowed(p.service):
                raise RoleRequired(f"The service {p.service!r} may not call this ({self.describe()}).")
            if self.on_behalf_of:
                org = org_id_or_none(request.headers.get(ON_BEHALF_OF))
                if org is None:
                    raise NoActingOrganisation(f"A service asks on behalf of an organisation: name it in {ON_BEHALF_OF}.")
                _require_member(org, members)
                return RequestContext(acting_org=org, actor=p.subject, principal=p)
            return CallerContext(acting_org=None, actor=p.subject, principal=p)
        if p.has_role(*self.org_roles):
            if p.org is None:
                raise NoActingOrganisation("The access token names no organisation to act for.")
            _require_member(p.org, members)
            return RequestContext(acting_org=p.org, actor=p.subject, principal=p)
        for role in sorted(self.roles & p.roles):
            if role not in self.district_only or is_district_level(p):
                return CallerContext(acting_org=p.org, actor=p.subject, principal=p)
        raise RoleRequired(f"This needs: {self.describe()}.")


def is_district_level(p: Principal) -> bool:
    """A caller for the whole district: no organisation; a dpo must also be marked district-wide."""
    if p.org is not None:
        return False
    return p.district_wide if p.has_role(DPO) else True


def _require_member(org: str, members: Members | None) -> None:
    if members is None or not members.has(org):
        raise NotAMember(f"{org} is not a member of this network.")


# The policy table. Services refer to these by name; docs/security.md lists them.
HEALTH = Open("health", "liveness and readiness carry no data; orchestrators probe them without a token")
API_DOCS = Open("api-docs", "the OpenAPI documents describe the API, not data")
ORG_STAFF = Rule("org-staff", org_roles=ORG_ROLES)
AUTHENTICATED = Rule("authenticated", any_caller=True)
SERVICES = Rule("services", services=frozenset({ANY_SERVICE}))
CONTACT_LOOKUP = Rule("contact-lookup", services=frozenset({"notifications"}), on_behalf_of=True)
NOTIFICATION_STATUS = Rule("notification-status", org_roles=ORG_ROLES, roles=frozenset({OPERATOR}))
# A partner organisation's own system (the HTTPS gateway's inbox and outbox), never its caseworkers: the route
# still checks that the path names the token's organisation.
PARTNER_SYSTEMS = Rule("partner-system", org_roles=frozenset({PARTNER_SYSTEM}))
AUDIT_READ = Rule("audit-read", roles=frozenset({AUDITOR, DPO}))
AUDIT_EXPORT = Rule("audit-export", roles=frozenset({AUDITOR, DPO}), district_only=frozenset({DPO}))
SUBJECT_REPORT = Rule("subject-report", roles=frozenset({DPO}))
TREE_HEAD_SIGNING = Rule("tree-head-signing", roles=frozenset({OPERATOR}), services=frozenset({"audit"}))


def metrics_policy(settings: AccessSettings | None = None) -> FromNetworks:
    s = settings or AccessSettings()
    return FromNetworks("metrics", tuple(s.allowed_networks))


# ------------------------------------------------------------------ FastAPI wiring
class Enforce:
    """The FastAPI dependency that applies one policy to one route; `check_routes` looks for it."""

    def __init__(self, policy: Policy, members: Members | None = None) -> None:
        self.policy = policy
        self.members = members

    async def __call__(self, request: Request) -> RequestContext | CallerContext | None:
        p = self.policy
        if isinstance(p, Open):
            return None
        if isinstance(p, FromNetworks):
            host = request.client.host if request.client else None
            if not p.allows(host):
                raise AddressNotAllowed(f"{request.url.path} is served only to {p.describe()}.")
            return None
        assert isinstance(p, Rule)
        caller = await principal(request)
        ctx = p.admit(request, caller, self.members)
        log_request(request, caller, ctx.acting_org, policy=p.name)
        return ctx


class Guard:
    """Binds the policy table to one service's network: `guard(POLICY)` is a route parameter's `Depends`.

    ```python
    guard = Guard(deps.directory)
    async def get_client(client_id: UUID, ctx: Annotated[RequestContext, guard(ORG_STAFF)]): ...
    ```
    """

    def __init__(self, members: Members) -> None:
        self.members = members

    def __call__(self, policy: Policy) -> Any:
        return Depends(Enforce(policy, self.members))


def declared(policy: Open | FromNetworks) -> Any:
    """`Depends` for a policy that needs no network (open routes, /metrics)."""
    return Depends(Enforce(policy))


def _policies(dependant: Dependant) -> Iterator[Policy]:
    call = dependant.call
    if isinstance(call, Enforce):
        yield call.policy
    for sub in dependant.dependencies:
        yield from _policies(sub)


def _routes(app: FastAPI) -> Iterator[tuple[BaseRoute, str | None, set[str], Dependant | None]]:
    """(original route, path, methods, dependant as served) of every route, also those of included routers
    (with the dependencies their inclusion adds)."""
    for rc in iter_route_contexts(app.routes):
        original = rc.original_route
        dependant = rc.dependant if isinstance(original, APIRoute) else None
        yield original, rc.path, set(rc.methods or ()), dependant


def route_policies(app: FastAPI) -> dict[tuple[str, str], list[Policy]]:
    """Every API route's (method, path) and the policies it declares (an empty list: none)."""
    out: dict[tuple[str, str], list[Policy]] = {}
    for _route, path, methods, dependant in _routes(app):
        if dependant is not None and path is not None:
            found = list(_policies(dependant))
            for method in sorted(methods):
                out[(method, path)] = found
    return out


def _docs_paths(app: FastAPI) -> set[str]:
    paths = {app.openapi_url, app.docs_url, app.redoc_url}
    if app.docs_url and app.swagger_ui_oauth2_redirect_url:
        paths.add(app.swagger_ui_oauth2_redirect_url)
    return {p for p in paths if p}


def check_routes(app: FastAPI) -> None:
    """Deny by default: every route declares exactly one policy; plain routes only for FastAPI's own documents."""
    problems: list[str] = []
    docs = _docs_paths(app)
    for route, path, methods, dependant in _routes(app):
        if dependant is not None:
            n = len(list(_policies(dependant)))
            if n != 1:
                what = "no access policy" if n == 0 else f"{n} access policies"
                problems.append(f"{','.join(sorted(methods))} {path}: {what}")
        elif isinstance(route, Route) and path in docs:
            continue  # FastAPI's OpenAPI document and its viewers (API_DOCS)
        else:
            problems.append(f"{path or type(route).__name__}: a route outside the kit's access control")
    if problems:
        raise UndeclaredAccess("routes without exactly one access policy (lotse_kit.access): " + "; ".join(problems))


# ------------------------------------------------------------------ scope rules
class ClientView(Enum):
    """How much of a client's case an organisation sees in intake."""

    ALL = "all"  # it registered the client or is responsible for the case: all it recorded
    CONSENTED = "consented"  # it received a referral: only the categories a valid consent allows
    NONE = "none"  # anything else: the client does not exist for it (404)


def client_view(org: str, *, registering_org: str, responsible_org: str, referred_to: bool) -> ClientView:
    """A caseworker sees clients their organisation registered or that were handed over to it (all data),
    or that were referred to it (consented categories only); nothing else."""
    if org in (registering_org, responsible_org):
        return ClientView.ALL
    return ClientView.CONSENTED if referred_to else ClientView.NONE


def sees_consent(org: str, *, collecting_org: str, responsible_orgs: Collection[str]) -> bool:
    """A consent record and its receipt: the collecting organisation and the client's responsible organisations."""
    return org == collecting_org or org in responsible_orgs


def may_withdraw(org: str, *, collecting_org: str, recipients: Collection[str], responsible_orgs: Collection[str]) -> bool:
    """A withdrawal is recorded by the collecting organisation, a recipient of the consent or a responsible
    organisation of the client (the client may tell any of them); never by an unrelated organisation."""
    return org == collecting_org or org in recipients or org in responsible_orgs


def audit_scope(ctx: CallerContext) -> str | None:
    """The organisation whose entries an audit reader is limited to; None: the whole log.

    Auditors and a district-wide dpo read the whole log; an organisation's dpo only entries that
    concern their organisation (the entry's `orgs`: it acted, was named in the event, or the record
    is on its partner topics)."""
    p = ctx.principal
    if p.has_role(AUDITOR) or is_district_level(p):
        return None
    if p.org is None:  # a dpo that is neither district-wide nor bound to an organisation reads nothing
        raise RoleRequired("A data-protection officer's token names neither an organisation nor district_wide.")
    return p.org


def may_read_subject_report(ctx: CallerContext, holders: Collection[str]) -> bool:
    """GDPR Art. 15 report: a district-wide dpo for any client, an organisation's dpo only for a client
    their organisation holds data on (it registered the client, was handed the case or received data)."""
    p = ctx.principal
    if not p.has_role(DPO):
        return False
    if is_district_level(p):
        return True
    if p.org is None:  # neither district-wide nor an organisation's: a misconfigured account, refused as such
        raise RoleRequired("A data-protection officer's token names neither an organisation nor district_wide.")
    return p.org in holders


def notification_scope(ctx: CallerContext | RequestContext, operator_orgs: Collection[str] = ()) -> str | None:
    """The organisation whose notifications a caller sees; None: all (operators, and the organisations
    configured as operating the platform)."""
    if ctx.principal.service is None and ctx.principal.has_role(OPERATOR):
        return None
    if ctx.acting_org is None:
        raise RoleRequired("Only operators see every organisation's notifications.")
    return None if ctx.acting_org in operator_orgs else ctx.acting_org


__all__ = [
    "API_DOCS",
    "AUDIT_EXPORT",
    "AUDIT_READ",
    "AUTHENTICATED",
    "CONTACT_LOOKUP",
    "HEALTH",
    "NOTIFICATION_STATUS",
    "ORG_ROLES",
    "ORG_STAFF",
    "PARTNER_SYSTEMS",
    "SERVICES",
    "SUBJECT_REPORT",
    "TREE_HEAD_SIGNING",
    "AccessSettings",
    "AddressNotAllowed",
    "ClientView",
    "Enforce",
    "FromNetworks",
    "Guard",
    "NotAMember",
    "Open",
    "Policy",
    "RoleRequired",
    "Rule",
    "UndeclaredAccess",
    "audit_scope",
    "check_routes",
    "client_view",
    "declared",
    "is_district_level",
    "may_read_subject_report",
    "may_withdraw",
    "metrics_policy",
    "notification_scope",
    "route_policies",
    "sees_consent",
]


# ------------------------------------------------------------------ consent: the disclosure records (issue 13)
# What was disclosed to whom, under which consent, and which withdrawals and erasures recipients acknowledged:
# an organisation's staff (its own records; a client's records as its collecting or responsible organisation),
# its dpo (the same), and district-wide readers: auditors and the district's dpo (everything).
DISCLOSURE_RECORDS = Rule("disclosure-records", org_roles=ORG_ROLES, roles=frozenset({AUDITOR, DPO}))


def disclosure_scope(ctx: CallerContext | RequestContext) -> str | None:
    """The organisation whose view a reader of disclosure records gets; None: the whole district (auditors and
    the district's dpo). An organisation's dpo reads as its organisation."""
    p = ctx.principal
    if p.service is None and (p.has_role(AUDITOR) or (p.has_role(DPO) and is_district_level(p))):
        return None
    if ctx.acting_org is None:
        raise RoleRequired("A data-protection officer's token names neither an organisation nor district_wide.")
    return ctx.acting_org


__all__ += ["DISCLOSURE_RECORDS", "disclosure_scope"]


# ------------------------------------------------------------------ intake: the consent gate's data fetch (issue 13)
# One named service and nobody else: intake's internal disclosure API answers only the consent service's own
# token (client credentials, `service: consent`), which fetches personal data after its own consent check.
# No person, no organisation role and no other service (notifications, audit, intake itself) may call it.
CONSENT_GATE = Rule("consent-gate", services=frozenset({"consent"}))

__all__ += ["CONSENT_GATE"]


# ------------------------------------------------------------------ intake: contact lookups for a batch (issue 14)
# The notifications service's own token and nobody else, like CONTACT_LOOKUP, but without one `Lotse-On-Behalf-Of`
# for the request: each item names its organisation, checked per item as CONTACT_LOOKUP checks the header (a
# non-member is that item's 403 not-a-member), and each item is consent-gated for its organisation.
CONTACT_LOOKUP_BATCH = Rule("contact-lookup-batch", services=frozenset({"notifications"}))

__all__ += ["CONTACT_LOOKUP_BATCH"]
