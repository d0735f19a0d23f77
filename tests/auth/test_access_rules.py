"""The kit's access rules (lotse_kit.access) on their own: route policies and scope rules, no service needed."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from lotse_kit import access
from lotse_kit.auth import LocalSigner, Principal
from lotse_kit.context import CallerContext, NoActingOrganisation, RequestContext

SIGNER = LocalSigner()
VERIFIER = SIGNER.verifier()
MEMBERS = type("Members", (), {"has": staticmethod(lambda org: org in {"caritas-paderborn", "awo-paderborn"})})()


def principal(**claims: Any) -> Principal:
    return VERIFIER.principal_from(SIGNER.claims(subject=claims.pop("subject", "s"), **claims))


def request(headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/x", "headers": raw, "query_string": b""})


def admit(rule: access.Rule, p: Principal, headers: dict[str, str] | None = None) -> RequestContext | CallerContext:
    return rule.admit(request(headers), p, MEMBERS)


def test_org_roles_act_for_their_member_organisation_only():
    ctx = admit(access.ORG_STAFF, principal(org="caritas-paderborn", roles=["partner_system"]))
    assert isinstance(ctx, RequestContext) and ctx.acting_org == "caritas-paderborn"
    with pytest.raises(access.NotAMember):
        admit(access.ORG_STAFF, principal(org="evil-consulting", roles=["caseworker"]))
    with pytest.raises(NoActingOrganisation):
        admit(access.ORG_STAFF, principal(roles=["caseworker"]))
    for roles in (["auditor"], ["dpo"], ["operator"], [], ["admin"]):
        with pytest.raises(access.RoleRequired):
            admit(access.ORG_STAFF, principal(org="caritas-paderborn", roles=roles))


def test_a_service_token_is_judged_as_a_service_only():
    # Roles a service account might also carry do not count: the `service` claim decides.
    svc = principal(service="notifications", roles=["caseworker", "operator"], org="caritas-paderborn")
    with pytest.raises(access.RoleRequired):
        admit(access.ORG_STAFF, svc)
    with pytest.raises(access.RoleRequired):
        admit(access.TREE_HEAD_SIGNING, svc)
    assert admit(access.SERVICES, svc).acting_org is None
    # On behalf of: the named member acts; a malformed, missing or non-member name is refused.
    ctx = admit(access.CONTACT_LOOKUP, svc, {"Lotse-On-Behalf-Of": "awo-kreis-paderborn".replace("-kreis", "")})
    assert ctx.acting_org == "awo-paderborn"
    for headers, error in (({}, NoActingOrganisation), ({"Lotse-On-Behalf-Of": "EVIL ORG"}, NoActingOrganisation)):
        with pytest.raises(error):
            admit(access.CONTACT_LOOKUP, svc, headers)
    with pytest.raises(access.NotAMember):
        admit(access.CONTACT_LOOKUP, svc, {"Lotse-On-Behalf-Of": "evil-consulting"})
    with pytest.raises(access.RoleRequired):
        admit(access.CONTACT_LOOKUP, principal(service="audit"), {"Lotse-On-Behalf-Of": "awo-paderborn"})
    # A person cannot use the delegation header at all.
    with pytest.raises(access.RoleRequired):
        admit(access.CONTACT_LOOKUP, principal(org="awo-paderborn", roles=["caseworker"]), {"Lotse-On-Behalf-Of": "awo-paderborn"})


def test_district_level_roles():
    district_dpo = principal(roles=["dpo"], district_wide=True)
    org_dpo = principal(roles=["dpo"], org="caritas-paderborn")
    loose_dpo = principal(roles=["dpo"])  # neither: a misconfigured account
    string_flag = VERIFIER.principal_from(SIGNER.claims(roles=["dpo"]) | {"district_wide": "true"})  # only JSON true counts
    assert access.is_district_level(district_dpo) and not access.is_district_level(org_dpo) and not access.is_district_level(loose_dpo)
    assert not access.is_district_level(string_flag)
    assert access.is_district_level(principal(roles=["auditor"]))
    # The export: auditors and the district's dpo, not an organisation's.
    admit(access.AUDIT_EXPORT, district_dpo)
    admit(access.AUDIT_EXPORT, principal(roles=["auditor"]))
    for p in (org_dpo, loose_dpo):
        with pytest.raises(access.RoleRequired):
            admit(access.AUDIT_EXPORT, p)
    # What an audit reader reads.
    assert access.audit_scope(admit(access.AUDIT_READ, org_dpo)) == "caritas-paderborn"  # type: ignore[arg-type]
    assert access.audit_scope(admit(access.AUDIT_READ, district_dpo)) is None  # type: ignore[arg-type]
    with pytest.raises(access.RoleRequired):
        access.audit_scope(admit(access.AUDIT_READ, loose_dpo))  # type: ignore[arg-type]
    # Art. 15: an organisation's dpo for clients its organisation holds data on.
    report = admit(access.SUBJECT_REPORT, org_dpo)
    assert access.may_read_subject_report(report, {"caritas-paderborn", "jobcenter"})  # type: ignore[arg-type]
    assert not access.may_read_subject_report(report, {"jobcenter"})  # type: ignore[arg-type]
    assert access.may_read_subject_report(admit(access.SUBJECT_REPORT, district_dpo), set())  # type: ignore[arg-type]


def test_a_rule_must_name_known_roles():
    with pytest.raises(ValueError, match="unknown roles"):
        access.Rule("typo", org_roles=frozenset({"casewroker"}))
    with pytest.raises(ValueError, match="district_only"):
        access.Rule("x", roles=frozenset({"auditor"}), district_only=frozenset({"dpo"}))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("", False), ("x", False)],
)
def test_metrics_networks(host: str, allowed: bool):
    assert access.metrics_policy(access.AccessSettings()).allows(host or None) is allowed


def test_scope_rules():
    V = access.ClientView
    assert access.client_view("a", registering_org="a", responsible_org="b", referred_to=False) is V.ALL
    assert access.client_view("b", registering_org="a", responsible_org="b", referred_to=False) is V.ALL
    assert access.client_view("c", registering_org="a", responsible_org="b", referred_to=True) is V.CONSENTED
    assert access.client_view("c", registering_org="a", responsible_org="b", referred_to=False) is V.NONE
    assert access.sees_consent("a", collecting_org="a", responsible_orgs=())
    assert access.sees_consent("r", collecting_org="a", responsible_orgs={"r"})
    assert not access.sees_consent("recipient", collecting_org="a", responsible_orgs={"r"})
    assert access.may_withdraw("recipient", collecting_org="a", recipients={"recipient"}, responsible_orgs=())
    assert access.may_withdraw("r", collecting_org="a", recipients=(), responsible_orgs={"r"})
    assert not access.may_withdraw("x", collecting_org="a", recipients={"b"}, responsible_orgs={"r"})
