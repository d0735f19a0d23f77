"""The realm's real tokens meet the kit's access policies: what each Keycloak demo user and service
account may call (the policy table of docs/security.md), so a realm change that drops a claim or a
role mapping shows here, not in production."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from lotse_cli.dev import demo_users
from lotse_kit import access
from lotse_kit.auth import AuthSettings, TokenVerifier
from lotse_kit.errors import Forbidden
from lotse_kit.network import OrgDirectory, load_network
from tests.auth.conftest import Keycloak
from tests.e2e.network import NETWORK

DEMO = OrgDirectory.of(load_network(NETWORK))
POLICIES = [
    access.ORG_STAFF,
    access.AUTHENTICATED,
    access.SERVICES,
    access.CONTACT_LOOKUP,
    access.CONTACT_LOOKUP_BATCH,
    access.CONSENT_GATE,
    access.NOTIFICATION_STATUS,
    access.AUDIT_READ,
    access.AUDIT_EXPORT,
    access.SUBJECT_REPORT,
    access.TREE_HEAD_SIGNING,
]
STAFF = {"org-staff", "authenticated", "notification-status"}
# username (or service) -> the policies that admit it
EXPECTED: dict[str, set[str]] = {
    "caseworker.*": STAFF,
    "partner.*": STAFF,
    "dpo.caritas-paderborn": {"authenticated", "audit-read", "subject-report"},
    "dpo.district": {"authenticated", "audit-read", "audit-export", "subject-report"},
    "auditor": {"authenticated", "audit-read", "audit-export"},
    "operator": {"authenticated", "notification-status", "tree-head-signing"},
    "service:intake": {"authenticated", "services"},
    "service:consent": {"authenticated", "services", "consent-gate"},
    "service:notifications": {"authenticated", "services", "contact-lookup", "contact-lookup-batch"},
    "service:audit": {"authenticated", "services", "tree-head-signing"},
}


def admitted(p: Any) -> set[str]:
    req = Request(
        {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": [(b"lotse-on-behalf-of", b"caritas-paderborn")]}
    )
    out = set()
    for rule in POLICIES:
        try:
            rule.admit(req, p, DEMO)
        except Forbidden:
            continue
        out.add(rule.name)
    return out


def expected_for(username: str) -> set[str]:
    return EXPECTED.get(username) or EXPECTED[username.split(".", 1)[0] + ".*"]


@pytest.mark.parametrize("user", [u["username"] for u in demo_users()])
async def test_each_demo_user_is_admitted_exactly_by_its_policies(keycloak: Keycloak, user: str) -> None:
    p = await TokenVerifier(AuthSettings(issuer=keycloak.issuer)).verify(await keycloak.user_token(user))
    assert admitted(p) == expected_for(user)


@pytest.mark.parametrize("service", ["intake", "consent", "notifications", "audit"])
async def test_each_service_account_is_admitted_exactly_by_its_policies(keycloak: Keycloak, service: str) -> None:
    p = await TokenVerifier(AuthSettings(issuer=keycloak.issuer)).verify(await keycloak.service_token(f"lotse-{service}"))
    assert admitted(p) == EXPECTED[f"service:{service}"]
