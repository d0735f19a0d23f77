"""The auditor API: signed tree heads, proofs checked by the independent RFC 9162 verifier, filters, export."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contracts import new_event, topics
from contracts.events import ClientRegistered, ConsentGranted, ReferralSent
from services.audit.domain.tree_head import signed_bytes
from services.audit.tests import rfc9162
from services.audit.tests.conftest import AUDITOR, ORG, PARTNER, now

OTHER = "diakonie-paderborn"


def b64d(s: str) -> bytes:
    return base64.b64decode(s)


def registered(client_id, org=ORG):
    return new_event(
        ClientRegistered(client_id=client_id, registering_org=org, responsible_org=org, preferred_language="ar", registered_at=now()),
        source="/lotse/intake",
        acting_org=org,
    )


def consent(client_id):
    return new_event(
        ConsentGranted(
            client_id=client_id,
            consent_id=uuid.uuid4(),
            collecting_org=ORG,
            recipients=[PARTNER],
            purposes=["referral"],
            categories=["identity", "needs"],
            legal_basis=["GDPR Art. 6(1)(a)"],
            form="paper",
            information_language="ar",
            granted_at=now(),
        ),
        source="/lotse/consent",
        acting_org=ORG,
    )


def referral(client_id, to_org):
    return new_event(
        ReferralSent(client_id=client_id, referral_id=uuid.uuid4(), from_org=ORG, to_org=to_org, service="beratung", sent_at=now()),
        source="/lotse/intake",
        acting_org=ORG,
    )


def check_head(head: dict, public: Ed25519PublicKey) -> bytes:
    root = b64d(head["sha256_root_hash"])
    public.verify(b64d(head["tree_head_signature"]), signed_bytes(head["tree_size"], head["timestamp"], root))
    return root


async def all_entries(audit) -> list[bytes]:
    """The entries as the API serves them (exact bytes), by index."""
    out, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await audit.http.get("/v1/audit/entries", params=params, headers=AUDITOR)).json()
        out += [(i["index"], b64d(i["entry_b64"])) for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [i for i, _ in out] == list(range(len(out)))  # stable log order, no gaps, no repeats across pages
    return [e for _, e in out]


async def test_proofs_check_out_with_an_independent_verifier(audit):
    public = audit.key.public_key()
    client = uuid.uuid4()
    await audit.produce(topics.CLIENTS, *[registered(uuid.uuid4()) for _ in range(12)], registered(client))
    await audit.produce(topics.CONSENTS, consent(client))
    await audit.wait_for_size(14)
    first_head = await audit.sign()
    first_root = check_head(first_head, public)
    assert first_head["tree_size"] == 14 and first_head["signature_algorithm"] == "ed25519"

    await audit.produce(topics.REFERRALS, *[referral(client, PARTNER) for _ in range(9)], referral(uuid.uuid4(), OTHER))
    await audit.wait_for_size(24)
    head = await audit.sign()
    assert head == (await audit.http.get("/v1/audit/tree-head", headers=AUDITOR)).json()
    root = check_head(head, public)
    n = head["tree_size"]
    assert n == 24

    served = await all_entries(audit)
    assert rfc9162.mth(served) == root  # the served entries are exactly what the signed root commits to
    for i, entry in enumerate(served):
        proof = (await audit.http.get(f"/v1/audit/entries/{i}/inclusion-proof", headers=AUDITOR)).json()
        assert proof["tree_size"] == n and b64d(proof["leaf_hash"]) == rfc9162.hash_leaf(entry)
        assert rfc9162.verify_inclusion(rfc9162.hash_leaf(entry), i, n, [b64d(p) for p in proof["audit_path"]], root), i
        # ... and against the older head, for the entries it covers.
        if i < 14:
            old = (await audit.http.get(f"/v1/audit/entries/{i}/inclusion-proof", params={"tree_size": 14}, headers=AUDITOR)).json()
            assert rfc9162.verify_inclusion(rfc9162.hash_leaf(entry), i, 14, [b64d(p) for p in old["audit_path"]], first_root)

    for m in (1, 5, 8, 14, 23, 24):
        c = (await audit.http.get("/v1/audit/consistency-proof", params={"first": m, "second": n}, headers=AUDITOR)).json()
        assert rfc9162.verify_consistency(m, n, rfc9162.mth(served[:m]), root, [b64d(p) for p in c["consistency"]]), m
    c = (await audit.http.get("/v1/audit/consistency-proof", params={"first": 14, "second": 24}, headers=AUDITOR)).json()
    assert rfc9162.verify_consistency(14, 24, first_root, root, [b64d(p) for p in c["consistency"]])
    assert not rfc9162.verify_consistency(14, 24, rfc9162.mth([*served[:13], b"forged"]), root, [b64d(p) for p in c["consistency"]])

    # Out of range and invalid requests are problem+json.
    for url, params in (
        ("/v1/audit/entries/24/inclusion-proof", {"tree_size": 24}),
        ("/v1/audit/entries/0/inclusion-proof", {"tree_size": 99}),
        ("/v1/audit/consistency-proof", {"first": 20, "second": 10}),
    ):
        r = await audit.http.get(url, params=params, headers=AUDITOR)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", r.text
        assert r.json()["type"] == "urn:lotse:problem:out-of-range"
    r = await audit.http.get("/v1/audit/entries/999", headers=AUDITOR)
    assert r.status_code == 404 and r.json()["type"] == "urn:lotse:problem:no-such-entry"


async def test_filters_pagination_and_export(audit):
    client = uuid.uuid4()
    await audit.produce(topics.CLIENTS, registered(client), registered(uuid.uuid4(), org=OTHER))
    await audit.produce(topics.REFERRALS, referral(client, PARTNER), referral(uuid.uuid4(), PARTNER), referral(client, OTHER))
    await audit.wait_for_size(5)
    head = await audit.sign()

    async def indexes(**params) -> list[int]:
        r = await audit.http.get("/v1/audit/entries", params=params, headers=AUDITOR)
        assert r.status_code == 200, r.text
        return [i["index"] for i in r.json()["items"]]

    def docs(idxs, served):
        return [served[i] for i in idxs]

    served = [json.loads(e) for e in await all_entries(audit)]
    mine = await indexes(client_id=str(client))
    assert len(mine) == 3 and all(d["client_id"] == str(client) for d in docs(mine, served))
    partner = await indexes(org=PARTNER)
    assert len(partner) == 2 and all(d["data"]["to_org"] == PARTNER for d in docs(partner, served))
    other = await indexes(org=OTHER)
    assert len(other) == 2  # one registered by OTHER, one referral to OTHER
    sent = await indexes(type="lotse.referral.sent", client_id=str(client))
    assert len(sent) == 2
    t0 = now()
    assert await indexes(**{"from": (t0 + timedelta(hours=1)).isoformat()}) == []
    assert len(await indexes(**{"from": (t0 - timedelta(hours=1)).isoformat(), "to": (t0 + timedelta(hours=1)).isoformat()})) == 5
    first_page = (await audit.http.get("/v1/audit/entries", params={"limit": 2}, headers=AUDITOR)).json()
    second_page = (
        await audit.http.get("/v1/audit/entries", params={"limit": 2, "cursor": first_page["next_cursor"]}, headers=AUDITOR)
    ).json()
    assert [i["index"] for i in first_page["items"]] == [0, 1] and [i["index"] for i in second_page["items"]] == [2, 3]

    bad = await audit.http.get("/v1/audit/entries", params={"cursor": "nonsense"}, headers=AUDITOR)
    assert bad.status_code == 400 and bad.json()["type"] == "urn:lotse:problem:invalid-cursor"
    bad = await audit.http.get("/v1/audit/entries", params={"client_id": "not-a-uuid"}, headers=AUDITOR)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "client_id"
    anonymous = await audit.http.get("/v1/audit/entries")
    assert anonymous.status_code == 401 and anonymous.json()["type"] == "urn:lotse:problem:unauthenticated"

    # Export: every entry up to the signed head, in order, with the recorded leaf hashes.
    r = await audit.http.get("/v1/audit/export", headers=AUDITOR)
    assert r.status_code == 200 and r.headers["x-lotse-tree-size"] == str(head["tree_size"])
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["index"] for line in lines] == list(range(5))
    entries = [b64d(line["entry_b64"]) for line in lines]
    assert rfc9162.mth(entries) == b64d(head["sha256_root_hash"])
    assert all(b64d(line["leaf_hash"]) == rfc9162.hash_leaf(e) for line, e in zip(lines, entries, strict=True))

    r = await audit.http.get("/v1/audit/export", params={"format": "csv", "tree_size": 3}, headers=AUDITOR)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["index"]) for x in rows] == [0, 1, 2]
    assert rows[0]["client_id"] == str(client) and rows[0]["event_type"] == "lotse.client.registered"
    assert [b64d(x["entry_b64"]) for x in rows] == entries[:3]
