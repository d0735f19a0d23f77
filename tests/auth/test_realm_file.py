"""The realm file (deploy/keycloak/lotse-realm.json) against the network file and the services: no Keycloak needed."""

from __future__ import annotations

import json

from lotse_cli.dev import REALM_FILE, REPO, demo_users, find_user
from lotse_kit.auth import ROLES
from lotse_kit.network import load_network
from lotse_kit.settings import SERVICE_PORTS

REALM = json.loads(REALM_FILE.read_text())
DEMO_NETWORK = REPO / "deploy" / "demo" / "network.yaml"


def test_the_realm_file_holds_no_secret_and_no_password() -> None:
    for c in REALM["clients"]:
        assert "secret" not in c, c["clientId"]
    for u in REALM["users"]:
        assert "credentials" not in u, u["username"]
    assert "password" not in json.dumps(REALM["users"]).lower()


def test_roles_are_the_lotse_roles() -> None:
    assert {r["name"] for r in REALM["roles"]["realm"]} == ROLES


def test_every_service_has_a_confidential_client_with_its_service_claim() -> None:
    clients = {c["clientId"]: c for c in REALM["clients"]}
    for service in SERVICE_PORTS:
        c = clients[f"lotse-{service}"]
        assert c["serviceAccountsEnabled"] and not c["publicClient"]
        assert not c["directAccessGrantsEnabled"] and not c["standardFlowEnabled"]
        assert "lotse-api" in c["defaultClientScopes"]
        [mapper] = [m for m in c["protocolMappers"] if m["config"].get("claim.name") == "service"]
        assert mapper["config"]["claim.value"] == service


def test_lotse_api_scope_sets_audience_and_org_claims() -> None:
    [scope] = [s for s in REALM["clientScopes"] if s["name"] == "lotse-api"]
    mappers = {m["name"]: m for m in scope["protocolMappers"]}
    assert mappers["audience lotse-api"]["config"]["included.custom.audience"] == "lotse-api"
    assert mappers["org"]["config"]["claim.name"] == "org"
    assert mappers["district_wide"]["config"]["jsonType.label"] == "boolean"
    assert "lotse-api" in REALM["defaultDefaultClientScopes"]
    assert REALM["accessTokenLifespan"] == 300


def test_user_profile_lets_only_admins_set_org() -> None:
    [profile] = REALM["components"]["org.keycloak.userprofile.UserProfileProvider"]
    config = json.loads(profile["config"]["kc.user.profile.config"][0])
    attrs = {a["name"]: a for a in config["attributes"]}
    for name in ("org", "district_wide"):
        assert attrs[name]["permissions"]["edit"] == ["admin"]


def test_demo_users_belong_to_organisations_of_the_demo_network() -> None:
    orgs = set(load_network(DEMO_NETWORK).org_ids())
    users = demo_users()
    for u in users:
        assert u["org"] is None or u["org"] in orgs, u
        assert set(u["roles"]) <= ROLES
    for org in ("jobcenter-kreis-paderborn", "caritas-paderborn", "ki-kreis-paderborn", "awo-kreis-paderborn"):
        assert find_user(org, "caseworker") and find_user(org, "partner_system")
    assert find_user("caritas-paderborn", "dpo") == "dpo.caritas-paderborn"
    district_dpo = find_user(None, "dpo")
    assert [u["district_wide"] for u in users if u["username"] == district_dpo] == [True]
    assert find_user(None, "auditor") and find_user(None, "operator")
