"""One client's journey through all four services at once, over the real broker and database.

Intake and consent run as real uvicorn servers on loopback, because intake asks the consent
decision API and notifications asks intake's contact API over HTTP. Nothing is faked: every caller
holds a token from the real Keycloak (password grant for the people, client credentials for the
services calling each other), every service is its own Kafka principal with exactly the ACLs
`lotse admin provision` gives it, and Caritas reads its inbox and answers on its outbox as its own
principal. The only stand-ins are the partner system (this test) and the mail server (aiosmtpd).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from contracts import decode, new_event, topics
from contracts.events import ReferralAccepted
from lotse_cli.dev import env_key
from lotse_kit import auth
from lotse_kit.auth import AuthSettings, ServiceTokens, TokenVerifier
from lotse_kit.kafka import KafkaConnection
from lotse_kit.provisioning import partner_principal
from services.audit.bootstrap import bootstrap as audit_app
from services.audit.config import AuditSettings
from services.consent.bootstrap import bootstrap as consent_app
from services.consent.config import ConsentSettings
from services.intake.adapters.consent import HttpConsentDecisions
from services.intake.bootstrap import bootstrap as intake_app
from services.intake.config import IntakeSettings
from services.notifications.adapters.contacts import IntakeContacts
from services.notifications.bootstrap import bootstrap as notifications_app
from services.notifications.config import NotificationsSettings
from tests.auth.conftest import Keycloak
from tests.fixtures import FAST_KIT_SETTINGS, produce_events, serving
from tests.kafka_helpers import eventually, provision_services, read_topic
from tests.peers import MailSink

NETWORK = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "network.yaml"
JOBCENTER = "jobcenter-kreis-paderborn"
CARITAS = "caritas-paderborn"
AWO = "awo-kreis-paderborn"
# Deviations from FAST_KIT_SETTINGS: the services call each other over real HTTP while they start, so
# consumers keep the kit's five attempts and retry up to 0.5 s; partner topics are seen within a second.
# The demo realm's users (deploy/keycloak/lotse-realm.json) who act in the story.
USERS = {"jobcenter": "caseworker.jobcenter-kreis-paderborn", "auditor": "auditor", "operator": "operator", "dpo": "dpo.district"}
FAST = {**FAST_KIT_SETTINGS, "consumer_retry_max_s": 0.5, "consumer_max_attempts": 5, "kafka_metadata_max_age_ms": 1000}


@dataclass(frozen=True)
class Callers:
    """Authorization headers of the people in the story, each from a real Keycloak token (password grant)."""

    jobcenter: dict[str, str]
    auditor: dict[str, str]
    operator: dict[str, str]
    dpo: dict[str, str]  # the district's data-protection officer


def keycloak_auth(kc: Keycloak, client_id: str | None = None) -> AuthSettings:
    """Keycloak's realm as the issuer; with `client_id`, that service's own client credentials."""
    secret = SecretStr(kc.secrets[env_key("CLIENT_SECRET", client_id)]) if client_id else None
    return AuthSettings(issuer=kc.issuer, client_id=client_id, client_secret=secret)


async def test_consented_referral_travels_from_intake_to_the_partner_and_back(
    kafka_bootstrap: str, keycloak: Keycloak, unique: str, topic_namespace: str, smtp: MailSink, tmp_path: Path
) -> None:
    ns = topic_namespace
    bearer = {name: {"Authorization": f"Bearer {await keycloak.user_token(user)}"} for name, user in USERS.items()}
    callers = Callers(**bearer)
    # Every service on its own Kafka principal with exactly the ACLs `lotse admin provision` gives it,
    # creating no topic itself: a right missing from a declaration fails this journey.
    schemas = {s: f"{s[:6]}_{unique}" for s in ("intake", "consent", "notifications", "audit")}
    creds = await provision_services(kafka_bootstrap, NETWORK, ns, tmp_path / "kafka", schemas)

    def own(service: str) -> dict[str, Any]:
        return {"kafka_credentials_file": creds[service], "kafka_create_topics": False, **FAST}

    consent = consent_app(settings=ConsentSettings(topic_namespace=ns, network_file=NETWORK, **own("consent")), schema=schemas["consent"])
    auth.install(consent, TokenVerifier(keycloak_auth(keycloak)))
    audit = audit_app(
        AuditSettings(
            topic_namespace=ns,
            network_file=NETWORK,
            signing_key_file=tmp_path / "key.pem",
            ingest_batch_timeout_ms=50,
            tree_head_interval_s=3600,
            **own("audit"),
        ),
        schema=schemas["audit"],
    )
    auth.install(audit, TokenVerifier(keycloak_auth(keycloak)))
    async with serving(consent) as consent_url:
        # Each service calls the others with its own Keycloak client (client-credentials grant).
        decisions = HttpConsentDecisions(consent_url, tokens=ServiceTokens(keycloak_auth(keycloak, "lotse-intake")))
        intake = intake_app(
            IntakeSettings(topic_namespace=ns, consent_url=consent_url, **own("intake")), schema=schemas["intake"], consent=decisions
        )
        auth.install(intake, TokenVerifier(keycloak_auth(keycloak)))
        async with serving(intake) as intake_url:
            notifications = notifications_app(
                NotificationsSettings(
                    topic_namespace=ns,
                    intake_url=intake_url,
                    network_file=NETWORK,
                    smtp_port=smtp.port,  # type: ignore[attr-defined]
                    worker_poll_interval_s=0.1,
                    retry_schedule_s=[0.3],
                    **own("notifications"),
                ),
                schema=schemas["notifications"],
                contacts=IntakeContacts(intake_url, tokens=ServiceTokens(keycloak_auth(keycloak, "lotse-notifications"))),
            )
            auth.install(notifications, TokenVerifier(keycloak_auth(keycloak)))
            async with (
                notifications.router.lifespan_context(notifications),
                audit.router.lifespan_context(audit),
                httpx.AsyncClient(base_url=intake_url, timeout=30) as intake_http,
                httpx.AsyncClient(base_url=consent_url, timeout=30) as consent_http,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=audit),
                    base_url="http://audit",
                    timeout=30,
                    headers=callers.auditor,  # reads the log; signing and the Art. 15 report need other roles
                ) as audit_http,
            ):
                caritas = KafkaConnection.from_properties(tmp_path / "kafka" / f"{partner_principal(ns, CARITAS)}.properties")
                await journey(kafka_bootstrap, caritas, ns, intake_http, consent_http, audit_http, smtp, callers)


async def journey(
    kafka: str,
    caritas: KafkaConnection,
    ns: str,
    intake: httpx.AsyncClient,
    consent: httpx.AsyncClient,
    audit: httpx.AsyncClient,
    mailbox: MailSink,
    callers: Callers,
) -> None:
    jc = callers.jobcenter

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
    assert sent.dataschema.endswith("lotse.referral.sent.partner.v1")
    assert str(sent.data.referral_id) == referral_id and str(sent.data.consent_id) == consent_id
    assert sent.data.personal_data.identity.family_name == "Koval"
    assert sent.data.personal_data.contact.email == "olena.koval@example.org"
    assert sent.data.personal_data.health is None and sent.data.personal_data.needs is None
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
        r = await audit.get("/v1/audit/entries", params={"client_id": client_id, "limit": 200})
        assert r.status_code == 200, r.text
        types = {e["entry"]["ce"].get("type") for e in r.json()["items"]}
        return types if {"lotse.disclosure.made", "lotse.referral.accepted", "lotse.consent.granted"} <= types else None

    await eventually(logged_types, timeout=60)
    page = (await audit.get("/v1/audit/entries", params={"client_id": client_id, "limit": 200})).json()["items"]
    dumped = json.dumps(page)
    assert "Koval" not in dumped and "olena.koval@example.org" not in dumped
    inbox_entries = [e for e in page if e["entry"].get("topic", "").endswith(topics.partner_inbox(CARITAS))]
    assert inbox_entries and all("data_sha256" in e["entry"] for e in inbox_entries)

    head = await audit.post("/v1/audit/tree-head", headers=callers.operator)
    assert head.status_code == 201, head.text
    idx = inbox_entries[0]["index"]
    proof = await audit.get(f"/v1/audit/entries/{idx}/inclusion-proof", params={"tree_size": head.json()["tree_size"]})
    assert proof.status_code == 200 and proof.json()["leaf_index"] == idx

    # The Art. 15 report, for the district's data-protection officer.
    report = (
        await audit.get(f"/v1/audit/subjects/{client_id}/report", params={"format": "json", "lang": "uk"}, headers=callers.dpo)
    ).json()
    received = {d["recipient"]: set(d["categories"]) for d in report["disclosures"]}
    assert received == {CARITAS: {"identity", "contact"}}
