"""The HTTP attack suite (issue 12): per route of every service, what an outsider, another member
organisation and the wrong role can do, against the real broker and database.

For every route of every service's app (enumerated from the app, so a new route fails
`test_every_route_declares_one_policy_and_is_attacked_here` until it is listed below):
- outsiders (no token, a garbage token, the old `X-Lotse-Org` header alone, a token signed with a
  foreign key under the real key id, Basic auth) get 401;
- the wrong roles for the route's policy (a caseworker on the audit API, an auditor on intake, a
  service token where people act, ...) and organisations outside the network get 403;
- another member organisation gets 404 for a resource of another organisation (403 where it names
  another organisation's worklist or a foreign filter), never the resource;
- every refusal is `application/problem+json`;
- and the right caller gets its 2xx (positive controls), so nothing passes by refusing everyone.

The leaks listed in issue 12 each have a named test at the end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts import new_event, topics
from contracts.events import CaseHandedOver, ClientRegistered
from contracts.sealed import generate_key
from contracts.structured import BATCH, STRUCTURED
from contracts.vocab import DataCategory, Purpose
from lotse_kit import access
from lotse_kit.auth import LocalSigner
from lotse_kit.context import ON_BEHALF_OF, Ctx
from lotse_kit.settings import SERVICE_PORTS
from services.audit.tests.conftest import ORG as A_ORG
from services.audit.tests.conftest import PARTNER as A_PARTNER
from services.audit.tests.conftest import partner_referral
from services.consent.tests.conftest import CARITAS as C_CARITAS
from services.consent.tests.conftest import DIAKONIE as C_DIAKONIE
from services.consent.tests.conftest import JOBCENTER as C_JOBCENTER
from services.consent.tests.conftest import KI as C_KI
from services.consent.tests.conftest import consent_body
from services.gateway.tests import conftest as gateway_fixtures
from services.gateway.tests.conftest import AWO as G_AWO
from services.gateway.tests.conftest import CARITAS as G_CARITAS
from services.gateway.tests.conftest import INVIA as G_INVIA
from services.gateway.tests.conftest import inbox_event
from services.gateway.tests.test_outbox import accepted as gateway_answer
from services.intake.tests.conftest import CARITAS, JOBCENTER, KI, KIM, client_body
from services.notifications.tests.conftest import AWO as N_AWO
from services.notifications.tests.conftest import JOBCENTER as N_JOBCENTER
from tests.fixtures import as_district, as_org, local_issuer, service_token
from tests.kafka_helpers import eventually

PROBLEM = "application/problem+json"
# The gateway's fixtures (tests/security/conftest.py imports the other services'), used by name.
start_gateway = gateway_fixtures.start_gateway
receiver = gateway_fixtures.receiver
NOT_A_MEMBER = "evil-consulting"  # a well-formed organisation id that is no member of any test network


# ------------------------------------------------------------------ callers
def outsiders(org: str) -> dict[str, dict[str, str]]:
    """Callers without a token the services accept, each pretending to act for `org`."""
    issuer = local_issuer().signer
    foreign = LocalSigner(issuer=issuer.issuer, kid=issuer.kid)  # the real issuer and key id, another key
    forged = foreign.token(subject="mallory", org=org, roles=["caseworker", "auditor", "dpo", "operator"], district_wide=True)
    expired = issuer.token(subject="late", org=org, roles=["caseworker"], issued_at=datetime.now(UTC).timestamp() - 3600)
    return {
        "no token": {},
        "X-Lotse-Org header only": {"X-Lotse-Org": org},
        "garbage token": {"Authorization": "Bearer garbage.garbage.garbage"},
        "forged token (foreign key, real kid)": {"Authorization": f"Bearer {forged}", "X-Lotse-Org": org},
        "expired token": {"Authorization": f"Bearer {expired}"},
        "basic auth": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    }


def wrong_roles(policy: str, owner: str) -> dict[str, dict[str, str]]:
    """Authenticated callers the route's policy must refuse with 403 (`owner`: the organisation the data belongs to)."""
    staff = {
        "caseworker": as_org(owner),
        "partner system": as_org(owner, "partner_system"),
    }
    district = {
        "auditor": as_district("auditor"),
        "district dpo": as_district("dpo", district_wide=True),
        "owner's dpo": as_org(owner, "dpo"),
        "operator": as_district("operator"),
    }
    by_policy: dict[str, dict[str, dict[str, str]]] = {
        "org-staff": {
            **district,
            "intake service": service_token("intake"),
            "notifications service on behalf of the owner": service_token("notifications") | {ON_BEHALF_OF: owner},
            "non-member caseworker": as_org(NOT_A_MEMBER),
            "caseworker without an organisation": as_district("caseworker"),
            "token without roles": as_org(owner, "nobody"),
        },
        "contact-lookup": {
            **staff,
            **district,
            "audit service on behalf of the owner": service_token("audit") | {ON_BEHALF_OF: owner},
            "notifications service for no organisation": service_token("notifications"),
            "notifications service for a non-member": service_token("notifications") | {ON_BEHALF_OF: NOT_A_MEMBER},
        },
        "contact-lookup-batch": {
            **staff,
            **district,
            "intake service": service_token("intake"),
            "consent service": service_token("consent"),
            "audit service": service_token("audit"),
            "audit service on behalf of the owner": service_token("audit") | {ON_BEHALF_OF: owner},
        },
        "services": {**staff, **district},
        "consent-gate": {
            **staff,
            **district,
            "intake service": service_token("intake"),
            "notifications service": service_token("notifications"),
            "notifications service on behalf of the owner": service_token("notifications") | {ON_BEHALF_OF: owner},
            "audit service": service_token("audit"),
        },
        "notification-status": {
            "auditor": district["auditor"],
            "district dpo": district["district dpo"],
            "owner's dpo": district["owner's dpo"],
            "notifications service": service_token("notifications"),
            "non-member caseworker": as_org(NOT_A_MEMBER),
        },
        "audit-read": {**staff, "operator": district["operator"], "audit service": service_token("audit")},
        "audit-export": {
            **staff,
            "operator": district["operator"],
            "owner's dpo": district["owner's dpo"],
            "audit service": service_token("audit"),
        },
        "subject-report": {
            **staff,
            "auditor": district["auditor"],
            "operator": district["operator"],
            "audit service": service_token("audit"),
            "dpo that is neither district-wide nor an organisation's": as_district("dpo"),
        },
        "tree-head-signing": {
            **staff,
            "auditor": district["auditor"],
            "district dpo": district["district dpo"],
            "intake service": service_token("intake"),
        },
        "authenticated": {},
        "partner-system": {
            "caseworker of the organisation": staff["caseworker"],
            **district,
            "gateway service": service_token("gateway"),
            "consent service": service_token("consent"),
            "notifications service on behalf of the owner": service_token("notifications") | {ON_BEHALF_OF: owner},
            "non-member partner system": as_org(NOT_A_MEMBER, "partner_system"),
            "partner system without an organisation": as_district("partner_system"),
            "token without roles": as_org(owner, "nobody"),
        },
        "disclosure-records": {
            "operator": district["operator"],
            "intake service": service_token("intake"),
            "notifications service on behalf of the owner": service_token("notifications") | {ON_BEHALF_OF: owner},
            "non-member caseworker": as_org(NOT_A_MEMBER),
            "caseworker without an organisation": as_district("caseworker"),
            "token without roles": as_org(owner, "nobody"),
            "dpo that is neither district-wide nor an organisation's": as_district("dpo"),
        },
    }
    return by_policy[policy]


# ------------------------------------------------------------------ probes
@dataclass
class Probe:
    method: str
    path: str  # the concrete path
    route: str  # the route's template, as the app declares it
    ok: dict[str, str] | None  # the right caller (None: an open route)
    ok_status: int = 200
    body: Any = None
    other: list[tuple[str, dict[str, str], int]] = field(default_factory=list)  # (who, headers, status) of other members
    owner: str = ""
    content_type: str | None = None  # a body sent as this media type instead of application/json

    def policy(self, app: FastAPI) -> access.Policy:
        (p,) = access.route_policies(app)[(self.method, self.route)]
        return p


def problem(r: httpx.Response, status: int, what: str) -> dict[str, Any]:
    assert r.status_code == status, f"{what}: {r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith(PROBLEM), f"{what}: {r.headers['content-type']}"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["type"].startswith("urn:lotse:problem:") and body["title"], body
    return body


async def call(http: httpx.AsyncClient, p: Probe, headers: dict[str, str]) -> httpx.Response:
    if p.content_type is not None:
        return await http.request(p.method, p.path, headers=headers | {"content-type": p.content_type}, content=json.dumps(p.body))
    return await http.request(p.method, p.path, headers=headers, json=p.body)


async def attack(http: httpx.AsyncClient, app: FastAPI, probes: Iterable[Probe]) -> None:
    """Outsiders, wrong roles and other members against every probe; then the positive controls, in order."""
    probes = list(probes)
    for p in probes:
        policy = p.policy(app)
        if isinstance(policy, access.Open | access.FromNetworks):
            continue
        assert isinstance(policy, access.Rule)
        for who, headers in outsiders(p.owner).items():
            r = await call(http, p, headers)
            body = problem(r, 401, f"{who} on {p.method} {p.route}")
            assert r.headers["www-authenticate"].startswith("Bearer"), body
        for who, headers in wrong_roles(policy.name, p.owner).items():
            problem(await call(http, p, headers), 403, f"{who} on {p.method} {p.route} ({policy.name})")
        for who, headers, status in p.other:
            r = await call(http, p, headers)
            if status >= 400:
                problem(r, status, f"{who} on {p.method} {p.route}")
            else:
                assert r.status_code == status, f"{who} on {p.method} {p.route}: {r.status_code} {r.text[:300]}"
    for p in probes:
        r = await call(http, p, p.ok or {})
        assert r.status_code == p.ok_status, f"positive control {p.method} {p.path}: {r.status_code} {r.text[:300]}"


def covered(app: FastAPI, probes: Iterable[Probe]) -> None:
    """The probes attack every route of the app, and nothing the app does not have."""
    routes = set(access.route_policies(app))
    attacked = {(p.method, p.route) for p in probes}
    assert routes - attacked == set(), f"routes without an attack in this suite: {sorted(routes - attacked)}"
    assert attacked - routes == set(), f"attacks on routes the app does not have: {sorted(attacked - routes)}"


def ops(owner: str) -> list[Probe]:
    return [
        Probe("GET", "/health/live", "/health/live", None, owner=owner),
        Probe("GET", "/health/ready", "/health/ready", None, owner=owner),
        Probe("GET", "/metrics", "/metrics", None, owner=owner),
    ]


# ------------------------------------------------------------------ deny by default
def _app_with(route_deps: list[Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/thing", dependencies=route_deps)
    async def thing() -> dict[str, str]:
        return {}

    return app


def test_an_app_with_a_route_without_a_policy_is_refused():
    with pytest.raises(access.UndeclaredAccess, match="GET /v1/thing: no access policy"):
        access.check_routes(_app_with([]))
    # The token alone (`Ctx` resolves the acting organisation) is no policy.
    app = FastAPI()

    @app.get("/v1/who")
    async def who(ctx: Ctx) -> dict[str, str]:
        return {"org": ctx.acting_org}

    with pytest.raises(access.UndeclaredAccess, match="GET /v1/who: no access policy"):
        access.check_routes(app)
    # Two policies on one route are ambiguous: refused too.
    both = [access.declared(access.HEALTH), access.declared(access.API_DOCS)]
    with pytest.raises(access.UndeclaredAccess, match="2 access policies"):
        access.check_routes(_app_with(both))
    # A route outside FastAPI's routing (a raw Starlette route) cannot carry a policy: refused.
    raw = _app_with([access.declared(access.HEALTH)])
    raw.add_route("/v1/raw", lambda request: None)
    with pytest.raises(access.UndeclaredAccess, match="/v1/raw: a route outside"):
        access.check_routes(raw)
    access.check_routes(_app_with([access.declared(access.HEALTH)]))  # one policy: fine


def _service_apps(tmp_path: Any) -> dict[str, FastAPI]:
    """Every service's app as bootstrap builds it (nothing started: routes only)."""
    from lotse_kit.network import OrgDirectory, load_network, parse_network
    from services.audit.bootstrap import bootstrap as audit_app
    from services.audit.config import AuditSettings
    from services.audit.tests.conftest import DIRECTORY as AUDIT_DIRECTORY
    from services.consent.bootstrap import bootstrap as consent_app
    from services.consent.tests.conftest import DIRECTORY as CONSENT_DIRECTORY
    from services.consent.tests.conftest import fast_settings as consent_settings
    from services.gateway.bootstrap import bootstrap as gateway_app
    from services.gateway.tests.conftest import fast_settings as gateway_settings
    from services.gateway.tests.conftest import network_yaml as gateway_network
    from services.intake.bootstrap import bootstrap as intake_app
    from services.intake.tests.conftest import HERE as INTAKE_TESTS
    from services.intake.tests.conftest import FakeConsent
    from services.intake.tests.conftest import fast_settings as intake_settings
    from services.notifications.bootstrap import bootstrap as notifications_app
    from services.notifications.tests.conftest import fast_settings as notifications_settings

    intake_directory = OrgDirectory.of(load_network(INTAKE_TESTS / "network.yaml"))
    return {
        "intake": intake_app(intake_settings("t."), directory=intake_directory, consent=FakeConsent()),
        "consent": consent_app(consent_settings("t."), directory=CONSENT_DIRECTORY),
        "notifications": notifications_app(notifications_settings("t."), directory=intake_directory),
        "audit": audit_app(AuditSettings(signing_key_file=tmp_path / "k.pem"), directory=AUDIT_DIRECTORY),
        "gateway": gateway_app(
            gateway_settings("t."), directory=OrgDirectory.of(parse_network(gateway_network("http://127.0.0.1:9/hook")))
        ),
    }


def test_every_route_declares_one_policy_and_is_attacked_here(infra, tmp_path):  # infra: the Kafka settings the apps read
    apps = _service_apps(tmp_path)
    assert set(apps) == set(SERVICE_PORTS) == set(PROBES), "every service's app is enumerated and attacked here"
    for name, app in apps.items():
        policies = access.route_policies(app)
        assert policies, name
        for route, found in policies.items():
            assert len(found) == 1, (name, route, found)
        # Open routes are exactly the documented ones.
        open_routes = {r for r, (p,) in policies.items() if isinstance(p, access.Open)}
        expected_open = {("GET", "/health/live"), ("GET", "/health/ready")}
        if name == "notifications":
            expected_open.add(("GET", "/v1/webhooks/public-key"))
        assert open_routes == expected_open, (name, open_routes)
        assert [r for r, (p,) in policies.items() if isinstance(p, access.FromNetworks)] == [("GET", "/metrics")], name
        # The attack tables below cover exactly these routes.
        covered(app, PROBES[name](_ids()))


# ------------------------------------------------------------------ the attack tables
@dataclass
class Ids:
    """The resources the tests create; the tables are also built with made-up ids for the coverage test."""

    client: uuid.UUID = field(default_factory=uuid.uuid4)
    handover_client: uuid.UUID = field(default_factory=uuid.uuid4)
    erasable_client: uuid.UUID = field(default_factory=uuid.uuid4)  # intake: erased by the positive control
    referral: uuid.UUID = field(default_factory=uuid.uuid4)
    declined_referral: uuid.UUID = field(default_factory=uuid.uuid4)
    revoked_referral: uuid.UUID = field(default_factory=uuid.uuid4)
    deadline: uuid.UUID = field(default_factory=uuid.uuid4)
    consent: uuid.UUID = field(default_factory=uuid.uuid4)
    withdrawn_consent: uuid.UUID = field(default_factory=uuid.uuid4)
    endpoint: uuid.UUID = field(default_factory=uuid.uuid4)
    notification: uuid.UUID = field(default_factory=uuid.uuid4)
    entry: int = 0
    cursor: str = "c1.made-up"  # gateway: a cursor the owner was given


def _ids() -> Ids:
    return Ids()


def intake_probes(i: Ids) -> list[Probe]:
    jc, caritas = as_org(JOBCENTER), as_org(CARITAS)
    other_404 = [("another member (Caritas)", caritas, 404), ("another member's partner system", as_org(CARITAS, "partner_system"), 404)]
    c, r = i.client, i.referral
    return [
        *ops(JOBCENTER),
        Probe(
            "POST",
            "/v1/clients",
            "/v1/clients",
            jc,
            201,
            body=client_body(registering_org=JOBCENTER),
            owner=JOBCENTER,
            other=[("Caritas registering in the Jobcenter's name", caritas, 403)],
        ),
        Probe("GET", f"/v1/clients/{c}", "/v1/clients/{client_id}", jc, owner=JOBCENTER, other=other_404),
        Probe(
            "PATCH",
            f"/v1/clients/{c}",
            "/v1/clients/{client_id}",
            jc,
            body={"needs": ["job_placement"]},
            owner=JOBCENTER,
            other=[*other_404, ("the receiver of a referral", as_org(KI), 403)],
        ),
        Probe(
            "GET",
            f"/v1/clients/{c}/contact",
            "/v1/clients/{client_id}/contact",
            service_token("notifications") | {ON_BEHALF_OF: JOBCENTER},
            owner=JOBCENTER,
            other=[("notifications for Caritas (no consent)", service_token("notifications") | {ON_BEHALF_OF: CARITAS}, 409)],
        ),
        Probe(
            "POST",
            f"/v1/clients/{c}/referrals",
            "/v1/clients/{client_id}/referrals",
            jc,
            201,
            body={"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity"]},
            owner=JOBCENTER,
            other=other_404,
        ),
        Probe(
            "GET",
            "/v1/referrals?org=" + JOBCENTER,
            "/v1/referrals",
            jc,
            owner=JOBCENTER,
            other=[("Caritas naming the Jobcenter's worklist", caritas, 403)],
        ),
        Probe("GET", f"/v1/referrals/{r}", "/v1/referrals/{referral_id}", jc, owner=JOBCENTER, other=other_404),
        Probe(
            "POST",
            f"/v1/referrals/{r}/accept",
            "/v1/referrals/{referral_id}/accept",
            as_org(KI),
            body={},
            owner=KI,
            other=[*other_404, ("the sender", jc, 403)],
        ),
        Probe(
            "POST",
            f"/v1/referrals/{r}/complete",
            "/v1/referrals/{referral_id}/complete",
            as_org(KI),
            body={"outcome": "Kurs vermittelt"},
            owner=KI,
            other=[*other_404, ("the sender", jc, 403)],
        ),
        Probe(
            "POST",
            f"/v1/referrals/{i.declined_referral}/decline",
            "/v1/referrals/{referral_id}/decline",
            as_org(KI),
            body={"reason": "no_capacity"},
            owner=KI,
            other=[*other_404, ("the sender", jc, 403)],
        ),
        Probe(
            "POST",
            f"/v1/referrals/{i.revoked_referral}/revoke",
            "/v1/referrals/{referral_id}/revoke",
            jc,
            body={"reason": "nicht mehr nötig"},
            owner=JOBCENTER,
            other=[*other_404, ("the receiver", as_org(KI), 403)],
        ),
        Probe(
            "POST",
            f"/v1/clients/{c}/deadlines",
            "/v1/clients/{client_id}/deadlines",
            jc,
            201,
            body={"kind": "appointment", "due_at": "2026-03-10T10:30:00+01:00"},
            owner=JOBCENTER,
            other=other_404,
        ),
        Probe(
            "POST",
            f"/v1/deadlines/{i.deadline}/resolve",
            "/v1/deadlines/{deadline_id}/resolve",
            jc,
            body={"resolution": "erledigt"},
            owner=JOBCENTER,
            other=other_404,
        ),
        Probe(
            "POST",
            f"/v1/clients/{i.handover_client}/handover",
            "/v1/clients/{client_id}/handover",
            jc,
            body={"to_org": KIM},
            owner=JOBCENTER,
            other=other_404,
        ),
        Probe(
            "DELETE",
            f"/v1/clients/{i.erasable_client}",
            "/v1/clients/{client_id}",
            jc,
            owner=JOBCENTER,
            other=[*other_404, ("the receiver of a referral", as_org(KI), 403)],
        ),
        Probe(
            "GET",
            f"/internal/v1/clients/{c}/disclosure?category=identity&category=health&referral_id={r}",
            "/internal/v1/clients/{client_id}/disclosure",
            service_token("consent"),
            owner=JOBCENTER,
        ),
        Probe(
            "POST",
            "/internal/v1/disclosures",
            "/internal/v1/disclosures",
            service_token("consent"),
            body={"items": [{"client_id": str(c), "categories": ["identity", "health"], "referral_id": str(r)}]},
            owner=JOBCENTER,
        ),
        Probe(
            "POST",
            "/internal/v1/contacts",
            "/internal/v1/contacts",
            service_token("notifications"),
            body={"items": [{"client_id": str(c), "on_behalf_of": JOBCENTER}]},
            owner=JOBCENTER,
        ),
        Probe("GET", "/v1/network", "/v1/network", caritas, owner=JOBCENTER),
    ]


# A public key Diakonie registers (and then retires) in the consent probes.
_DIAKONIE_KEY = generate_key("diakonie-attack-1", "enc")[1]


def consent_probes(i: Ids) -> list[Probe]:
    jc, diakonie = as_org(C_JOBCENTER), as_org(C_DIAKONIE)
    unrelated = [("an unrelated member (Diakonie)", diakonie, 404), ("a recipient (Caritas)", as_org(C_CARITAS), 404)]
    decision = f"/v1/decisions?client_id={i.client}&recipient={C_CARITAS}&purpose=referral&category=identity"
    keys = f"/v1/organisations/{C_DIAKONIE}/keys"
    naming_diakonie = [("another member (Caritas) naming Diakonie", as_org(C_CARITAS, "partner_system"), 403)]
    return [
        *ops(C_JOBCENTER),
        Probe(
            "POST",
            "/v1/consents",
            "/v1/consents",
            jc,
            201,
            body=consent_body(i.client, collecting_org=C_JOBCENTER),
            owner=C_JOBCENTER,
            other=[("Caritas recording the Jobcenter's consent", as_org(C_CARITAS), 403)],
        ),
        Probe("GET", f"/v1/consents/{i.consent}", "/v1/consents/{consent_id}", jc, owner=C_JOBCENTER, other=unrelated),
        Probe("GET", f"/v1/consents/{i.consent}/receipt", "/v1/consents/{consent_id}/receipt", jc, owner=C_JOBCENTER, other=unrelated),
        # A list is filtered to what the caller may see: another member gets an empty list, nothing of the Jobcenter's.
        Probe(
            "GET",
            f"/v1/clients/{i.client}/consents",
            "/v1/clients/{client_id}/consents",
            jc,
            owner=C_JOBCENTER,
            other=[("an unrelated member (Diakonie)", diakonie, 200)],
        ),
        Probe(
            "POST",
            f"/v1/consents/{i.withdrawn_consent}/withdraw",
            "/v1/consents/{consent_id}/withdraw",
            as_org(C_KI),  # a recipient of the consent records the client's withdrawal
            owner=C_JOBCENTER,
            other=[("an unrelated member (Diakonie)", diakonie, 404)],
        ),
        Probe("GET", decision, "/v1/decisions", service_token("intake"), owner=C_JOBCENTER),
        Probe(
            "POST",
            "/v1/decisions",
            "/v1/decisions",
            service_token("intake"),
            body={"items": [{"client_id": str(i.client), "recipient": C_CARITAS, "purpose": "referral", "categories": ["identity"]}]},
            owner=C_JOBCENTER,
        ),
        # Keys: an organisation's own staff and partner systems manage its keys; another member naming it: 403.
        Probe(
            "POST",
            keys,
            "/v1/organisations/{org}/keys",
            as_org(C_DIAKONIE, "partner_system"),
            201,
            body=_DIAKONIE_KEY.model_dump(),
            owner=C_DIAKONIE,
            other=naming_diakonie,
        ),
        Probe("GET", keys, "/v1/organisations/{org}/keys", diakonie, owner=C_DIAKONIE, other=naming_diakonie),
        Probe(
            "DELETE",
            f"{keys}/{_DIAKONIE_KEY.kid}",
            "/v1/organisations/{org}/keys/{kid}",
            as_org(C_DIAKONIE, "partner_system"),
            owner=C_DIAKONIE,
            other=naming_diakonie,
        ),
        # Disclosure records: filtered per client (an unrelated member gets an empty record), per organisation
        # for itself, its dpo, auditors and the district's dpo (another member: 403).
        Probe(
            "GET",
            f"/v1/clients/{i.client}/disclosures",
            "/v1/clients/{client_id}/disclosures",
            jc,
            owner=C_JOBCENTER,
            other=[("an unrelated member (Diakonie)", diakonie, 200), ("an auditor", as_district("auditor"), 200)],
        ),
        Probe(
            "GET",
            f"/v1/organisations/{C_CARITAS}/disclosures",
            "/v1/organisations/{org}/disclosures",
            as_org(C_CARITAS, "dpo"),
            owner=C_CARITAS,
            other=[("another member (Diakonie)", diakonie, 403), ("another member's dpo", as_org(C_DIAKONIE, "dpo"), 403)],
        ),
    ]


def notifications_probes(i: Ids) -> list[Probe]:
    jc, awo = as_org(N_JOBCENTER), as_org(N_AWO)
    other_404 = [("another member (AWO)", awo, 404)]
    e = i.endpoint
    return [
        *ops(N_JOBCENTER),
        Probe("GET", "/v1/webhooks/public-key", "/v1/webhooks/public-key", None, owner=N_JOBCENTER),
        Probe(
            "POST",
            "/v1/webhook-endpoints",
            "/v1/webhook-endpoints",
            as_org(N_JOBCENTER, "partner_system"),
            201,
            body={"url": "http://127.0.0.1:9/hook", "description": "Fallakte"},
            owner=N_JOBCENTER,
        ),
        Probe("GET", "/v1/webhook-endpoints", "/v1/webhook-endpoints", jc, owner=N_JOBCENTER),
        Probe("GET", f"/v1/webhook-endpoints/{e}", "/v1/webhook-endpoints/{endpoint_id}", jc, owner=N_JOBCENTER, other=other_404),
        Probe(
            "POST",
            f"/v1/webhook-endpoints/{e}/rotate-secret",
            "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
            jc,
            owner=N_JOBCENTER,
            other=other_404,
        ),
        Probe(
            "POST",
            f"/v1/webhook-endpoints/{e}/enable",
            "/v1/webhook-endpoints/{endpoint_id}/enable",
            jc,
            owner=N_JOBCENTER,
            other=other_404,
        ),
        Probe("GET", "/v1/notifications", "/v1/notifications", as_district("operator"), owner=N_JOBCENTER),
        Probe(
            "GET",
            f"/v1/notifications/{i.notification}",
            "/v1/notifications/{notification_id}",
            jc,
            owner=N_JOBCENTER,
            other=other_404,
        ),
        Probe("DELETE", f"/v1/webhook-endpoints/{e}", "/v1/webhook-endpoints/{endpoint_id}", jc, 204, owner=N_JOBCENTER, other=other_404),
    ]


def audit_probes(i: Ids) -> list[Probe]:
    auditor = as_district("auditor")
    partner_dpo = as_org(A_PARTNER, "dpo")
    return [
        *ops(A_ORG),
        Probe("GET", "/v1/audit/entries", "/v1/audit/entries", auditor, owner=A_ORG),
        Probe(
            "GET",
            f"/v1/audit/entries/{i.entry}",
            "/v1/audit/entries/{index}",
            auditor,
            owner=A_ORG,
            other=[("the dpo of an organisation the entry does not concern", partner_dpo, 404)],
        ),
        Probe("GET", "/v1/audit/tree-head", "/v1/audit/tree-head", partner_dpo, owner=A_ORG),
        Probe("GET", f"/v1/audit/entries/{i.entry}/inclusion-proof", "/v1/audit/entries/{index}/inclusion-proof", auditor, owner=A_ORG),
        Probe("GET", "/v1/audit/consistency-proof?first=1&second=2", "/v1/audit/consistency-proof", auditor, owner=A_ORG),
        Probe("GET", "/v1/audit/export", "/v1/audit/export", as_district("dpo", district_wide=True), owner=A_ORG),
        Probe(
            "GET",
            f"/v1/audit/subjects/{i.client}/report",
            "/v1/audit/subjects/{client_id}/report",
            as_org(A_ORG, "dpo"),  # the registering organisation's dpo
            owner=A_ORG,
            other=[("the dpo of an organisation holding nothing on the client", as_org("awo-paderborn", "dpo"), 404)],
        ),
        Probe("POST", "/v1/audit/tree-head", "/v1/audit/tree-head", service_token("audit"), 201, owner=A_ORG),
    ]


def gateway_probes(i: Ids) -> list[Probe]:
    awo = as_org(G_AWO, "partner_system")
    # A path naming AWO: another organisation's partner system is refused whatever its transport.
    naming_awo = [
        ("another HTTPS member's partner system (IN VIA)", as_org(G_INVIA, "partner_system"), 403),
        ("a Kafka member's partner system (Caritas)", as_org(G_CARITAS, "partner_system"), 403),
    ]
    return [
        *ops(G_AWO),
        Probe("GET", f"/v1/partners/{G_AWO}/inbox", "/v1/partners/{org}/inbox", awo, owner=G_AWO, other=naming_awo),
        Probe(
            "POST",
            f"/v1/partners/{G_AWO}/inbox/acknowledgements",
            "/v1/partners/{org}/inbox/acknowledgements",
            awo,
            204,
            body={"cursor": i.cursor},
            owner=G_AWO,
            other=naming_awo,
        ),
        Probe(
            "POST",
            f"/v1/partners/{G_AWO}/outbox",
            "/v1/partners/{org}/outbox",
            awo,
            202,
            body=gateway_answer(G_AWO),
            owner=G_AWO,
            other=naming_awo,
            content_type=STRUCTURED,
        ),
    ]


PROBES = {
    "intake": intake_probes,
    "consent": consent_probes,
    "notifications": notifications_probes,
    "audit": audit_probes,
    "gateway": gateway_probes,
}


# ------------------------------------------------------------------ the attacks, per service
async def test_intake(make_intake, consent):
    async with make_intake() as (app, http):
        jc = as_org(JOBCENTER)

        async def register() -> uuid.UUID:
            r = await http.post("/v1/clients", json=client_body(health="Diabetes"), headers=jc)
            assert r.status_code == 201, r.text
            return uuid.UUID(r.json()["client_id"])

        async def refer(client: uuid.UUID) -> uuid.UUID:
            body = {"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity"]}
            r = await http.post(f"/v1/clients/{client}/referrals", json=body, headers=jc)
            assert r.status_code == 201, r.text
            return uuid.UUID(r.json()["referral_id"])

        ids = Ids(client=await register(), handover_client=await register(), erasable_client=await register())
        consent.grant(ids.client, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        consent.grant(ids.client, JOBCENTER, Purpose.CONTACT_FOR_NOTIFICATIONS, [DataCategory.CONTACT])
        ids.referral, ids.declined_referral, ids.revoked_referral = [await refer(ids.client) for _ in range(3)]
        consent.grant(ids.erasable_client, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        await refer(ids.erasable_client)  # the KI sees the client to be erased: its refusal is 403, not 404
        r = await http.post(
            f"/v1/clients/{ids.client}/deadlines", json={"kind": "appointment", "due_at": "2026-03-12T10:00:00+01:00"}, headers=jc
        )
        ids.deadline = uuid.UUID(r.json()["deadline_id"])
        await attack(http, app, intake_probes(ids))
        # The erased client is gone for those who saw it; the internal API answers nothing about it either.
        r = await http.get(f"/v1/clients/{ids.erasable_client}", headers=jc)
        assert problem(r, 410, "erased client")["type"] == "urn:lotse:problem:client-erased"
        r = await http.get(f"/internal/v1/clients/{ids.erasable_client}/disclosure?category=identity", headers=service_token("consent"))
        assert problem(r, 410, "erased client on the internal API")["type"] == "urn:lotse:problem:client-erased"


async def test_consent(service):
    jc = as_org(C_JOBCENTER)
    client = uuid.uuid4()
    granted = await service.grant(client)
    to_withdraw = await service.grant(client)
    ids = Ids(client=client, consent=uuid.UUID(granted["consent_id"]), withdrawn_consent=uuid.UUID(to_withdraw["consent_id"]))
    await attack(service.http, service.app, consent_probes(ids))
    # The filtered list: the Jobcenter sees its consents (also the one the positive control recorded), Diakonie none.
    listed = (await service.http.get(f"/v1/clients/{client}/consents", headers=jc)).json()
    assert len(listed) == 3 and {granted["consent_id"], to_withdraw["consent_id"]} <= {c["consent_id"] for c in listed}
    assert (await service.http.get(f"/v1/clients/{client}/consents", headers=as_org(C_DIAKONIE))).json() == []


async def test_notifications(start_service, contacts):
    async with start_service() as svc:
        created = await svc.http.post(
            "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook", "description": "x"}, headers=as_org(N_JOBCENTER)
        )
        assert created.status_code == 201, created.text
        ids = Ids(endpoint=uuid.UUID(created.json()["id"]))
        await attack(svc.http, svc.app, [p for p in notifications_probes(ids) if p.route != "/v1/notifications/{notification_id}"])
        # A notification's detail: refused like the others; no notification exists, so the owner's control is a 404 problem.
        (detail,) = [p for p in notifications_probes(ids) if p.route == "/v1/notifications/{notification_id}"]
        detail.ok_status = 404
        await attack(svc.http, svc.app, [detail])


async def test_audit(audit):
    client, elsewhere = uuid.uuid4(), uuid.uuid4()
    t = datetime.now(UTC)
    await audit.produce(
        topics.CLIENTS,
        *[
            new_event(
                ClientRegistered(client_id=c, registering_org=A_ORG, responsible_org=A_ORG, preferred_language="de", registered_at=t),
                source="/lotse/intake",
                acting_org=A_ORG,
            )
            for c in (client, elsewhere)
        ],
    )
    await audit.wait_for_size(2)
    await audit.sign()
    ids = Ids(client=client, entry=0)
    await attack(audit.http, audit.app, audit_probes(ids))


async def test_gateway(start_gateway):
    async with start_gateway() as gw:
        awo = as_org(G_AWO, "partner_system")
        await gw.put_on_inbox(G_AWO, inbox_event(G_AWO))
        page = (await gw.http.get(f"/v1/partners/{G_AWO}/inbox", headers=awo)).json()
        (record,) = page["records"]
        probes = gateway_probes(Ids(cursor=record["cursor"]))
        await attack(gw.http, gw.app, probes)
        # Whatever the policy table says: only the partner system, never the organisation's own caseworkers.
        for p in probes[len(ops(G_AWO)) :]:
            problem(await call(gw.http, p, as_org(G_AWO, "caseworker")), 403, f"AWO's caseworker on {p.method} {p.route}")
        # Refused callers changed nothing: the positive control acknowledged the record, so the page is empty now.
        assert (await gw.http.get(f"/v1/partners/{G_AWO}/inbox", headers=awo)).json()["records"] == []

        # Bad input on every route: a 4xx problem, never a 5xx, and nothing taken.
        inbox, acks, outbox = (f"/v1/partners/{G_AWO}/{p}" for p in ("inbox", "inbox/acknowledgements", "outbox"))
        answer = json.dumps(gateway_answer(G_AWO))
        bad: list[tuple[str, str, dict[str, Any], int]] = [
            ("GET", f"/v1/partners/{G_CARITAS}/inbox", {}, 404),  # Caritas reads over Kafka (its own partner system)
            ("GET", "/v1/partners/AWO!/inbox", {}, 422),
            ("GET", inbox, {"params": {"after": "garbage"}}, 422),
            ("GET", inbox, {"params": {"after": "c1." + "A" * 5000}}, 422),
            ("GET", inbox, {"params": {"limit": "0"}}, 422),
            ("GET", inbox, {"params": {"limit": "many"}}, 422),
            ("GET", inbox, {"params": {"wait": "-1"}}, 422),
            ("POST", acks, {"json": {}}, 422),
            ("POST", acks, {"json": {"cursor": "garbage"}}, 422),
            ("POST", acks, {"json": {"cursor": record["cursor"], "extra": 1}}, 422),
            ("POST", acks, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
            ("POST", outbox, {"content": answer, "headers": {"content-type": "application/json"}}, 415),
            ("POST", outbox, {"content": b"{not json", "headers": {"content-type": STRUCTURED}}, 422),
            ("POST", outbox, {"content": b"[]", "headers": {"content-type": STRUCTURED}}, 422),
            ("POST", outbox, {"content": answer, "headers": {"content-type": BATCH}}, 422),
            ("POST", outbox, {"content": b"\xff\xfe", "headers": {"content-type": STRUCTURED}}, 422),
            ("POST", outbox, {"content": b" " * 1_100_000, "headers": {"content-type": STRUCTURED}}, 413),
            ("POST", outbox, {"content": json.dumps(gateway_answer(G_AWO, source="/partners/in-via-paderborn")),
                              "headers": {"content-type": STRUCTURED}}, 422),
        ]  # fmt: skip
        for method, path, kwargs, status in bad:
            headers = (awo if "caritas" not in path else as_org(G_CARITAS, "partner_system")) | kwargs.pop("headers", {})
            problem(await gw.http.request(method, path, headers=headers, **kwargs), status, f"bad input {method} {path} {kwargs}")


# ------------------------------------------------------------------ the leaks of issue 12, one by one
async def test_leak_intake_personal_data_by_naming_another_organisation(make_intake):
    async with make_intake() as (_app, http):
        r = await http.post("/v1/clients", json=client_body(health="Diabetes"), headers=as_org(JOBCENTER))
        client = r.json()["client_id"]
        # The old header, with no token, with another member's token, and with a forged token: nothing.
        problem(await http.get(f"/v1/clients/{client}", headers={"X-Lotse-Org": JOBCENTER}), 401, "header only")
        r = await http.get(f"/v1/clients/{client}", headers=as_org(CARITAS) | {"X-Lotse-Org": JOBCENTER})
        assert problem(r, 404, "another member naming the Jobcenter")["detail"] == f"no client {client}"
        assert "Diabetes" not in r.text and "Olena" not in r.text
        forged = outsiders(JOBCENTER)["forged token (foreign key, real kid)"]
        problem(await http.get(f"/v1/clients/{client}", headers=forged), 401, "forged token")
        # A client that does not exist reads exactly the same for another member: existence is not revealed.
        ghost = uuid.uuid4()
        assert (await http.get(f"/v1/clients/{ghost}", headers=as_org(CARITAS))).json()["detail"] == f"no client {ghost}"
        # The registering organisation (positive control) sees it all.
        assert (await http.get(f"/v1/clients/{client}", headers=as_org(JOBCENTER))).json()["health"] == "Diabetes"


async def test_leak_consent_records_receipts_and_decisions_answer_anyone(service):
    granted = await service.grant()
    cid = granted["consent_id"]
    for path in (f"/v1/consents/{cid}", f"/v1/consents/{cid}/receipt"):
        problem(await service.http.get(path), 401, "anonymous")
        problem(await service.http.get(path, headers=as_org(C_DIAKONIE)), 404, "unrelated member")
        problem(await service.http.get(path, headers=as_district("auditor")), 403, "auditor")
        assert (await service.http.get(path, headers=as_org(C_JOBCENTER))).status_code == 200
    decision = {"client_id": granted["client_id"], "recipient": C_CARITAS, "purpose": "referral", "category": "identity"}
    problem(await service.http.get("/v1/decisions", params=decision), 401, "anonymous decision")
    problem(await service.http.get("/v1/decisions", params=decision, headers=as_org(C_CARITAS)), 403, "the recipient itself")
    ok = await service.http.get("/v1/decisions", params=decision, headers=service_token("intake"))
    assert ok.status_code == 200 and ok.json()["allowed"] is True


async def test_leak_a_non_member_withdraws_a_consent(service):
    granted = await service.grant()
    cid = granted["consent_id"]
    body = problem(await service.http.post(f"/v1/consents/{cid}/withdraw", headers=as_org(NOT_A_MEMBER)), 403, "non-member")
    assert body["type"] == "urn:lotse:problem:not-a-member"
    problem(await service.http.post(f"/v1/consents/{cid}/withdraw", headers=as_org(C_DIAKONIE)), 404, "unrelated member")
    problem(await service.http.post(f"/v1/consents/{cid}/withdraw"), 401, "anonymous")
    assert (await service.http.get(f"/v1/consents/{cid}", headers=as_org(C_JOBCENTER))).json()["status"] == "active"


async def test_withdrawal_and_records_for_the_clients_responsible_organisation(service):
    """What the consent service knows from lotse.clients.v1: the registering and responsible organisations."""
    client = uuid.uuid4()
    granted = await service.grant(client, org=C_CARITAS, recipients=[C_KI])  # collected by Caritas, not the Jobcenter
    cid = granted["consent_id"]
    jc = as_org(C_JOBCENTER)
    problem(await service.http.get(f"/v1/consents/{cid}", headers=jc), 404, "before intake announced the client")
    t = datetime.now(UTC)
    registered = ClientRegistered(
        client_id=client, registering_org=C_JOBCENTER, responsible_org=C_JOBCENTER, preferred_language="uk", registered_at=t
    )
    await service.produce(topics.CLIENTS, new_event(registered, source="/lotse/intake", acting_org=C_JOBCENTER))

    async def visible() -> bool:
        return (await service.http.get(f"/v1/consents/{cid}", headers=jc)).status_code == 200

    await eventually(visible, timeout=30)
    assert [c["consent_id"] for c in (await service.http.get(f"/v1/clients/{client}/consents", headers=jc)).json()] == [cid]
    # The case moves to Diakonie: Diakonie may now read it; the Jobcenter (registering) still may.
    handed = CaseHandedOver(client_id=client, from_org=C_JOBCENTER, to_org=C_DIAKONIE, handed_over_at=t)
    await service.produce(topics.CLIENTS, new_event(handed, source="/lotse/intake", acting_org=C_JOBCENTER))

    async def moved() -> bool:
        return (await service.http.get(f"/v1/consents/{cid}/receipt", headers=as_org(C_DIAKONIE))).status_code == 200

    await eventually(moved, timeout=30)
    # A forged registration (not from intake) gives nobody access.
    forged = ClientRegistered(client_id=client, registering_org=C_KI, responsible_org=C_KI, preferred_language="uk", registered_at=t)
    await service.produce(topics.CLIENTS, new_event(forged, source="/partners/ki-paderborn", acting_org=C_KI))
    # The responsible organisation records the client's withdrawal.
    r = await service.http.post(f"/v1/consents/{cid}/withdraw", headers=as_org(C_DIAKONIE))
    assert r.status_code == 200 and r.json()["withdrawal_recorded_by_org"] == C_DIAKONIE
    problem(await service.http.get(f"/v1/consents/{cid}", headers=as_org(C_KI, "caseworker")), 404, "recipient reading the record")


async def test_leak_audit_entries_reports_and_export_answer_anyone(audit):
    client = uuid.uuid4()
    t = datetime.now(UTC)
    reg = ClientRegistered(client_id=client, registering_org=A_ORG, responsible_org=A_ORG, preferred_language="de", registered_at=t)
    await audit.produce(topics.CLIENTS, new_event(reg, source="/lotse/intake", acting_org=A_ORG))
    await audit.produce(topics.partner_inbox(A_PARTNER), partner_referral(client, uuid.uuid4()))
    other = uuid.uuid4()
    reg2 = ClientRegistered(client_id=other, registering_org=A_ORG, responsible_org=A_ORG, preferred_language="de", registered_at=t)
    await audit.produce(topics.CLIENTS, new_event(reg2, source="/lotse/intake", acting_org=A_ORG))
    await audit.wait_for_size(3)
    await audit.sign()
    for path in ("/v1/audit/entries", "/v1/audit/export", f"/v1/audit/subjects/{client}/report"):
        problem(await audit.http.get(path), 401, "anonymous")
        problem(await audit.http.get(path, headers=as_org(A_ORG)), 403, "the registering organisation's caseworker")
    # An organisation's dpo reads only entries concerning its organisation, and may not widen the filter.
    partner_dpo = as_org(A_PARTNER, "dpo")
    seen = (await audit.http.get("/v1/audit/entries", headers=partner_dpo)).json()["items"]
    assert [(e["entry"]["topic"], e["entry"]["client_id"]) for e in seen] == [(topics.partner_inbox(A_PARTNER), str(client))]
    everything = (await audit.http.get("/v1/audit/entries", headers=as_district("auditor"))).json()["items"]
    assert len(everything) == 3 > len(seen)
    problem(await audit.http.get("/v1/audit/entries", params={"org": A_ORG}, headers=partner_dpo), 403, "dpo widening the filter")
    problem(await audit.http.get("/v1/audit/export", headers=partner_dpo), 403, "an organisation's dpo exporting the log")
    # Art. 15: the partner received the client's data, so its dpo may; not for the other client; auditors never.
    assert (await audit.http.get(f"/v1/audit/subjects/{client}/report", headers=partner_dpo)).status_code == 200
    problem(await audit.http.get(f"/v1/audit/subjects/{other}/report", headers=partner_dpo), 404, "a client the partner holds nothing of")
    problem(await audit.http.get(f"/v1/audit/subjects/{client}/report", headers=as_district("auditor")), 403, "auditor")
    report = await audit.http.get(f"/v1/audit/subjects/{other}/report", headers=as_district("dpo", district_wide=True))
    assert report.status_code == 200 and report.json()["client_id"] == str(other)


async def test_leak_a_non_member_signs_a_tree_head(audit):
    for who, headers in {
        "anonymous": {},
        "a non-member": as_org(NOT_A_MEMBER),
        "a member's caseworker": as_org(A_ORG),
        "an auditor": as_district("auditor"),
        "another service": service_token("consent"),
    }.items():
        r = await audit.http.post("/v1/audit/tree-head", headers=headers)
        problem(r, 401 if not headers else 403, who)
    for headers in (as_district("operator"), service_token("audit")):
        assert (await audit.http.post("/v1/audit/tree-head", headers=headers)).status_code == 201


# ------------------------------------------------------------------ /metrics
async def test_metrics_are_served_to_loopback_only_unless_configured(tmp_path, monkeypatch):
    from services.consent.bootstrap import bootstrap as consent_app
    from services.consent.tests.conftest import DIRECTORY as CONSENT_DIRECTORY
    from services.consent.tests.conftest import fast_settings as consent_settings

    async def scrape(app: FastAPI, client: tuple[str, int]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get("/metrics")

    app = consent_app(consent_settings("t."), directory=CONSENT_DIRECTORY)
    assert (await scrape(app, ("127.0.0.1", 40000))).status_code == 200
    assert (await scrape(app, ("::1", 40000))).status_code == 200
    for remote in ("10.1.2.3", "192.0.2.7", "::ffff:10.1.2.3", "testclient"):
        body = problem(await scrape(app, (remote, 40000)), 403, remote)
        assert body["type"] == "urn:lotse:problem:address-not-allowed"
    # A scraper's network allowed by configuration; loopback then only if listed.
    monkeypatch.setenv("LOTSE_METRICS_ALLOWED_NETWORKS", '["10.0.0.0/8"]')
    app = consent_app(consent_settings("t."), directory=CONSENT_DIRECTORY)
    assert (await scrape(app, ("10.1.2.3", 40000))).status_code == 200
    problem(await scrape(app, ("127.0.0.1", 40000)), 403, "loopback not listed")
    monkeypatch.setenv("LOTSE_METRICS_ALLOWED_NETWORKS", '["not-a-network"]')
    with pytest.raises(ValueError, match="not-a-network"):
        consent_app(consent_settings("t."), directory=CONSENT_DIRECTORY)
