"""`lotse demo`: the story of the source articles, played against the running network (`make up`: the real broker,
database and Keycloak, the four services, the mail sink).

Each step's outcome is asserted from the command's `--json` document and, independently, from the services' own APIs
(intake, consent, notifications, audit) with the acting role's token; never from the narration. The story runs twice
(fresh clients each run). Without a running network the tests skip: they cannot start the services themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from lotse_cli.demo import verify_consistency, verify_inclusion
from lotse_cli.dev import find_user, secrets_file, user_token
from lotse_kit.settings import service_url
from services.audit.domain import merkle
from tests.infra import local_keycloak_url
from tests.peers import free_port

REPO = Path(__file__).resolve().parents[2]
REALM = local_keycloak_url() + "/realms/lotse"
SERVICES = ("intake", "consent", "notifications", "audit")
JOBCENTER, KIM, CARITAS, KI, DIAKONIE = (
    "jobcenter-kreis-paderborn",
    "kim-kreis-paderborn",
    "caritas-paderborn",
    "ki-kreis-paderborn",
    "diakonie-paderborn-hoexter",
)
STEPS = [
    "partners",
    "registered",
    "handed_over",
    "consented",
    "referred",
    "accepted",
    "notified",
    "neighbour",
    "refused",
    "withdrawn",
    "audited",
    "verified",
]


def network_running() -> str | None:
    """Why the story cannot run here, or None."""
    if not secrets_file().exists():
        return f"no {secrets_file()}: the local stack is not up (make up)"
    for name in SERVICES:
        try:
            if httpx.get(service_url(name) + "/health/ready", timeout=3).status_code != 200:
                return f"{name} is not ready (make up)"
        except httpx.HTTPError:
            return f"{name} is not running (make up)"
    return None


WHY_NOT = network_running()
needs_network = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def run_demo(*args: str) -> tuple[int, dict[str, Any]]:
    # A process of its own, as an operator runs it (the story takes 25-60 s: the deadline scheduler scans every 30 s), with
    # the running network's settings: none of the LOTSE_* the test session sets for the services it builds itself
    # (its own token issuer above all).
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOTSE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "lotse_cli.main", "demo", "--json", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"exit {proc.returncode}; stdout: {proc.stdout[-2000:]}; stderr: {proc.stderr[-2000:]}"
    return proc.returncode, json.loads(lines[0])


def as_(org: str | None, role: str = "caseworker") -> dict[str, str]:
    """A token of the running network's Keycloak (not the test session's issuer, which LOTSE_OIDC_ISSUER names)."""
    return {"Authorization": f"Bearer {user_token(find_user(org, role), issuer=REALM)}"}


def get(service: str, path: str, who: dict[str, str], **params: Any) -> Any:
    r = httpx.get(service_url(service) + path, headers=who, params=params, timeout=30)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
    return r.json()


@needs_network
def test_the_story_plays_out_twice_and_the_services_show_each_step() -> None:
    runs = [run_demo(), run_demo()]
    for code, doc in runs:
        assert code == 0 and doc["ok"], json.dumps([s for s in doc["steps"] if not s["ok"]], ensure_ascii=False)
        assert [s["id"] for s in doc["steps"]] == STEPS and all(s["ok"] for s in doc["steps"])
    facts = [{s["id"]: s["facts"] for s in doc["steps"]} for _code, doc in runs]
    # Fresh clients each run.
    assert facts[0]["registered"]["client_id"] != facts[1]["registered"]["client_id"]
    assert facts[0]["neighbour"]["client_id"] != facts[1]["neighbour"]["client_id"]
    check_story(facts[1])


def check_story(f: dict[str, dict[str, Any]]) -> None:
    olena, samir = f["registered"]["client_id"], f["neighbour"]["client_id"]
    jc, kim = as_(JOBCENTER), as_(KIM)

    # Registered under AsylbLG by KIM, handed over to the Jobcenter under SGB II.
    assert f["registered"]["responsible_org"] == KIM and f["registered"]["legal_regime"] == "asylblg"
    case = get("intake", f"/v1/clients/{olena}", jc)
    assert case["responsible_org"] == JOBCENTER and case["legal_regime"] == "sgb_ii" and case["registering_org"] == KIM
    r = httpx.patch(service_url("intake") + f"/v1/clients/{olena}", headers=kim, json={"needs": ["other"]}, timeout=30)
    assert r.status_code == 403  # the former organisation no longer changes the case

    notes = get("notifications", "/v1/notifications", jc, client_id=olena)["items"]

    def note(trigger: str, kind: str) -> dict[str, Any]:
        [n] = [n for n in notes if n["trigger_type"] == trigger and n["recipient_kind"] == kind and n["channel"] == "email"]
        return dict(n)

    assert note("lotse.case.handed_over", "organisation")["status"] == "delivered"

    # Consent in Ukrainian: the receipt and her e-mailed copy.
    consent_id = f["consented"]["consent_id"]
    assert get("consent", f"/v1/consents/{consent_id}", jc)["information_language"] == "uk"
    receipt = get("consent", f"/v1/consents/{consent_id}/receipt", jc)  # default: the language she was informed in
    assert receipt["language"] == "uk" and receipt["record"]
    granted = note("lotse.consent.granted", "client")
    assert granted["status"] == "delivered" and granted["language"] == "uk" and granted["template"] == "consent_receipt.client"

    # Referred to Caritas' migration counselling, opened by Caritas, accepted over its outbox.
    referral_id = f["referred"]["referral_id"]
    assert f["referred"]["opened_family_name"] == "Demo-Koval" and f["referred"]["consent_id"] == consent_id
    referral = get("intake", f"/v1/referrals/{referral_id}", jc)
    assert referral["to_org"] == CARITAS and referral["service"] == "mbe" and referral["status"] in ("accepted", "completed")
    assert f["accepted"]["status"] in ("accepted", "completed")

    # The title's expiry: the deadline and the reminder in Ukrainian, delivered (the command read it from the mail sink).
    [deadline] = [d for d in case["deadlines"] if d["deadline_id"] == f["notified"]["deadline_id"]]
    assert deadline["kind"] == "residence_title_expiry" and deadline["last_day"] == case["residence_valid_until"]
    reminder = note("lotse.deadline.approaching", "client")
    assert reminder["id"] == f["notified"]["notification_id"]
    assert reminder["status"] == "delivered" and reminder["language"] == "uk" and f["notified"]["mail_language"] == "uk"

    # The neighbour: §104c end computed, consent with an interpreter, two referrals to the KI.
    neighbour = get("intake", f"/v1/clients/{samir}", kim)
    assert neighbour["residence_title"] == "aufenthg_104c" and neighbour["preferred_language"] == "ar"
    [end] = [d for d in neighbour["deadlines"] if d["kind"] == "chancen_aufenthalt_end"]
    assert end["last_day"] == neighbour["residence_valid_until"] == f["neighbour"]["chancen_last_day"]
    assert "cannot be extended" in end["legal_note"]
    his_consent = get("consent", f"/v1/consents/{f['neighbour']['consent_id']}", kim)
    assert his_consent["interpreter_used"] is True and his_consent["information_language"] == "ar"
    services = set()
    for ref in f["neighbour"]["referrals"]:
        got = get("intake", f"/v1/referrals/{ref['referral_id']}", kim)
        assert got["to_org"] == KI and got["status"] in ("sent", "accepted", "completed")  # a KI example may answer
        services.add(got["service"])
    assert services == {"anerkennungsberatung", "sprachmittlerpool"}

    # Refused for want of consent: problem+json, and nothing recorded.
    refused = f["refused"]
    assert refused["status"] == 409 and refused["problem"]["type"] == "urn:lotse:problem:consent-required"
    assert refused["problem"]["recipient"] == DIAKONIE and refused["problem"]["missing_categories"] == ["identity", "contact"]
    assert not [x for x in case["referrals"] if x["to_org"] == DIAKONIE]

    # Withdrawn: the consent, Caritas' signed acknowledgement, and what it stops.
    consent = get("consent", f"/v1/consents/{consent_id}", jc)
    assert consent["status"] == "withdrawn" and CARITAS in consent["disclosed_to"]
    acks = get("consent", f"/v1/clients/{olena}/disclosures", jc)["acknowledgements"]
    assert [a["status"] for a in acks if a["org"] == CARITAS and a["kind"] == "withdrawal"] == ["acknowledged"]
    assert f["withdrawn"]["new_referral_status"] == 409 and f["withdrawn"]["new_referral_reason"].startswith("withdrawn")

    # The DPO's report shows it all; the auditor's log is consistent with the head the story started from.
    report = get("audit", f"/v1/audit/subjects/{olena}/report", as_(None, "dpo"), format="json")
    assert {c["consent_id"]: c["status"] for c in report["consents"]}[consent_id] == "withdrawn"
    assert CARITAS in [d["recipient"] for d in report["disclosures"]]
    assert {x["referral_id"]: x["status"] for x in report["referrals"]}[referral_id] in ("accepted", "completed")
    assert [(h["from_org"], h["to_org"]) for h in report["handovers"]] == [(KIM, JOBCENTER)]
    assert report["tampered_entries"] == [] and report["language"] == "uk"
    v = f["verified"]
    assert v["signatures_valid"] and v["consistent"] and v["inclusion_failures"] == [] and v["entries_checked"] > 0
    auditor = as_(None, "auditor")
    head = get("audit", "/v1/audit/tree-head", auditor)
    start = f["partners"]["tree_head_at_start"]
    first, second = start["tree_size"], head["tree_size"]
    proof = get("audit", "/v1/audit/consistency-proof", auditor, first=first, second=second)["consistency"]
    assert second >= v["tree_size"] > first
    root0, root = (base64.b64decode(h["sha256_root_hash"]) for h in (start, head))
    assert verify_consistency(first, second, root0, root, [base64.b64decode(x) for x in proof])


@needs_network
def test_the_command_exits_1_and_says_which_step_did_not_happen() -> None:
    code, doc = run_demo("--intake", f"http://127.0.0.1:{free_port()}", "--timeout", "5")
    assert code == 1 and doc["ok"] is False
    failed = doc["steps"][-1]
    assert failed["id"] == "registered" and failed["ok"] is False and "the intake service did not answer" in failed["error"]
    assert [s["id"] for s in doc["steps"]] == ["partners", "registered"]


def _tree(leaves: list[bytes]) -> merkle.NodeGetter:
    hashes = [merkle.leaf_hash(x) for x in leaves]

    def get(level: int, index: int) -> bytes:
        span = hashes[index << level : (index + 1) << level]
        while len(span) > 1:
            span = [merkle.node_hash(span[i], span[i + 1]) for i in range(0, len(span), 2)]
        return span[0]

    return get


def test_the_demos_verifier_accepts_the_logs_proofs_and_rejects_altered_ones() -> None:
    leaves = [f"entry {i}".encode() for i in range(20)]
    get = _tree(leaves)
    for size in range(1, 21):
        root = merkle.root(size, get)
        for i in range(size):
            path = merkle.inclusion_path(i, size, get)
            assert verify_inclusion(merkle.leaf_hash(leaves[i]), i, size, path, root)
            assert not verify_inclusion(merkle.leaf_hash(b"altered"), i, size, path, root)
            assert not verify_inclusion(merkle.leaf_hash(leaves[i]), size, size, path, root)  # no such leaf
        for first in range(1, size + 1):
            proof = merkle.consistency_proof(first, size, get)
            old = merkle.root(first, get)
            assert verify_consistency(first, size, old, root, proof)
            if first < size:
                assert not verify_consistency(first, size, hashlib.sha256(b"rewritten").digest(), root, proof)
                bad = [proof[0][::-1], *proof[1:]]
                assert not verify_consistency(first, size, old, root, bad)
