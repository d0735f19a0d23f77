"""One client's journey through all four services at once, over the real broker, database and identity
provider (tests/e2e/network.py: every caller on a Keycloak token, every service and the partner on its own
Kafka principal). Privacy after the referral (corrections, withdrawal, erasure, acknowledgements) is
tests/e2e/test_privacy_journey.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contracts import decode, new_event, topics
from contracts.events import PartnerReferralV2, ReferralAccepted
from contracts.sealed import SealedError
from lotse_partner import open_sealed
from tests.auth.conftest import Keycloak
from tests.e2e.network import CARITAS, JOBCENTER, RunningNetwork, running_network
from tests.fixtures import produce_events
from tests.kafka_helpers import eventually, read_topic
from tests.peers import MailSink


async def test_consented_referral_travels_from_intake_to_the_partner_and_back(
    kafka_bootstrap: str, keycloak: Keycloak, unique: str, topic_namespace: str, smtp: MailSink, tmp_path: Path
) -> None:
    async with running_network(keycloak, kafka_bootstrap, unique, topic_namespace, smtp, tmp_path) as net:
        await journey(net)


async def journey(net: RunningNetwork) -> None:
    ns, kafka, intake, consent, audit, mailbox = net.ns, net.kafka, net.intake, net.consent, net.audit, net.mailbox
    jc = net.callers["jobcenter"]
    caritas = net.caritas.kafka

    # 1. The Jobcenter registers a client who prefers Ukrainian.
    r = await intake.post(
        "/v1/clients",
        headers=jc,
        json={
            "registering_org": JOBCENTER,
            "given_name": "Olena",
            "family_name": "Koval",
            "date_of_birth": "1988-04-12",
            "email": "olena.koval@example.org",
            "phone": "+49 5251 123456",
            "preferred_language": "uk",
            "languages": ["uk", "ru"],
            "needs": ["integration_course"],
            "residence_title": "aufenthg_24",
            "residence_valid_until": "2027-03-04",
            "health": "needs ground-floor rooms",
        },
    )
    assert r.status_code == 201, r.text
    client_id = r.json()["client_id"]

    # 2. Without consent, a referral is refused and nothing leaves intake.
    refused = await intake.post(
        f"/v1/clients/{client_id}/referrals", headers=jc, json={"need": "integration_course", "categories": ["identity", "contact"]}
    )
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert set(refused.json()["missing_categories"]) == {"identity", "contact"}

    # 3. The client consents, in Ukrainian: Caritas may receive identity and contact for a referral,
    #    and the Jobcenter and Caritas may contact the client about it.
    r = await consent.post(
        "/v1/consents",
        headers=jc,
        json={
            "client_id": client_id,
            "recipients": [CARITAS, JOBCENTER],
            "purposes": ["referral", "contact_for_notifications"],
            "categories": ["identity", "contact"],
            "form": "written",
            "information_language": "uk",
            "information": {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True},
        },
    )
    assert r.status_code == 201, r.text
    consent_id = r.json()["consent_id"]

    # 4. The referral now goes through, routed by the process plan for the need.
    r = await intake.post(
        f"/v1/clients/{client_id}/referrals",
        headers=jc,
        json={
            "need": "integration_course",
            "categories": ["identity", "contact"],
            "reason": "Integrationskurs mit Kinderbetreuung",
        },
    )
    assert r.status_code == 201, r.text
    referral = r.json()
    assert referral["to_org"] == CARITAS
    referral_id = referral["referral_id"]

    # 5. Caritas's inbox holds the referral with exactly the consented categories.
    # Read as Caritas itself: its own principal, in a consumer group under its own prefix.
    inbox = await read_topic(
        caritas,
        ns + topics.partner_inbox(CARITAS),
        until=lambda rs: any(decode(x.headers, x.value).type == "lotse.referral.sent" for x in rs),
        group=f"{ns}partner.{CARITAS}.journey",
    )
    [rec] = [x for x in inbox if decode(x.headers, x.value).type == "lotse.referral.sent"]
    sent = decode(rec.headers, rec.value)
    assert sent.dataschema.endswith("lotse.referral.sent.partner.v2") and isinstance(sent.data, PartnerReferralV2)
    assert str(sent.data.referral_id) == referral_id and str(sent.data.consent_id) == consent_id
    # On the topic only ciphertext; Caritas opens it with its own key, and only Caritas can.
    assert b"Koval" not in rec.value and b"olena.koval" not in rec.value and b"Kinderbetreuung" not in rec.value
    opened = open_sealed(sent, net.caritas.keys)
    assert opened is not None and sent.data.sealed.kid == net.caritas.keys.public("enc").kid
    assert opened.personal_data.identity.family_name == "Koval"
    assert opened.personal_data.contact.email == "olena.koval@example.org"
    assert opened.personal_data.health is None and opened.personal_data.needs is None
    assert opened.notes is not None and opened.notes.reason == "Integrationskurs mit Kinderbetreuung"
    with pytest.raises(SealedError):
        open_sealed(sent, net.awo.keys)
    # ...and the shared topic only has the pseudonymous disclosure record with the payload's hash.
    made = await read_topic(kafka, ns + topics.DISCLOSURES, until=1)
    disclosure = decode(made[0].headers, made[0].value)
    assert disclosure.type == "lotse.disclosure.made" and disclosure.data.recipient == CARITAS
    assert disclosure.data.payload_sha256 == hashlib.sha256(rec.value).hexdigest()
    assert b"Koval" not in made[0].value

    # 6. Caritas accepts through its own outbox topic; intake closes the loop.
    answer = new_event(
        ReferralAccepted(client_id=uuid.UUID(client_id), referral_id=uuid.UUID(referral_id), to_org=CARITAS, accepted_at=datetime.now(UTC)),
        source=f"/partners/{CARITAS}",
        acting_org=CARITAS,
    )
    await produce_events(caritas, ns + topics.partner_outbox(CARITAS), answer)  # Caritas answers on its own outbox

    async def accepted() -> bool:
        r = await intake.get(f"/v1/referrals/{referral_id}", headers=jc)
        return r.status_code == 200 and r.json()["status"] == "accepted"

    await eventually(accepted, timeout=60)

    # 7. The client hears about it by e-mail, in Ukrainian (contact data released under the consent).
    async def ukrainian_mail() -> list[Any]:
        return mailbox.to("olena.koval@example.org")

    mails = await eventually(ukrainian_mail, timeout=60)
    assert any(m["Content-Language"] == "uk" for m in mails)

    # 8. The audit log holds the journey, proves it, and the Art. 15 report names who got what.
    async def logged_types() -> set[str] | None:
        r = await audit.get("/v1/audit/entries", params={"client_id": client_id, "limit": 200}, headers=net.callers["auditor"])
        assert r.status_code == 200, r.text
        types = {e["entry"]["ce"].get("type") for e in r.json()["items"]}
        return types if {"lotse.disclosure.made", "lotse.referral.accepted", "lotse.consent.granted"} <= types else None

    await eventually(logged_types, timeout=60)
    page = (await audit.get("/v1/audit/entries", params={"client_id": client_id, "limit": 200}, headers=net.callers["auditor"])).json()[
        "items"
    ]
    dumped = json.dumps(page)
    assert "Koval" not in dumped and "olena.koval@example.org" not in dumped
    inbox_entries = [e for e in page if e["entry"].get("topic", "").endswith(topics.partner_inbox(CARITAS))]
    assert inbox_entries and all("data_sha256" in e["entry"] for e in inbox_entries)

    head = await audit.post("/v1/audit/tree-head", headers=net.callers["operator"])
    assert head.status_code == 201, head.text
    idx = inbox_entries[0]["index"]
    proof = await audit.get(
        f"/v1/audit/entries/{idx}/inclusion-proof", params={"tree_size": head.json()["tree_size"]}, headers=net.callers["auditor"]
    )
    assert proof.status_code == 200 and proof.json()["leaf_index"] == idx

    # The Art. 15 report, for the district's data-protection officer.
    report = (
        await audit.get(f"/v1/audit/subjects/{client_id}/report", params={"format": "json", "lang": "uk"}, headers=net.callers["dpo"])
    ).json()
    received = {d["recipient"]: set(d["categories"]) for d in report["disclosures"]}
    assert received == {CARITAS: {"identity", "contact"}}
