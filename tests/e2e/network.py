"""The whole network, running for an end-to-end test: four services, real Kafka, PostgreSQL and Keycloak.

Intake and consent run as real uvicorn servers on loopback, because they call each other over HTTP
(intake asks the consent decision API; the consent gate fetches the consented categories from intake's
internal API) and notifications asks intake's contact API. Nothing is faked:

- every caller holds a token from the real Keycloak (password grant for the people, client credentials
  for the services calling each other);
- every service is its own Kafka principal with exactly the ACLs `lotse admin provision` gives it, and
  creates no topic itself;
- a partner (Caritas) registers its keys through the consent API, reads its inbox and answers on its
  outbox as its own Kafka principal, and opens sealed records with its private key (the partner kit).

The only stand-ins are the partner system (the test) and the mail server (aiosmtpd).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from lotse_cli.dev import env_key
from lotse_kit import auth
from lotse_kit.auth import AuthSettings, ServiceTokens, TokenVerifier
from lotse_kit.kafka import KafkaConnection
from lotse_kit.provisioning import partner_principal
from lotse_partner import PartnerKeys
from services.audit.bootstrap import bootstrap as audit_app
from services.audit.config import AuditSettings
from services.consent.adapters.intake import HttpIntakeDisclosures
from services.consent.bootstrap import bootstrap as consent_app
from services.consent.config import ConsentSettings
from services.intake.adapters.consent import HttpConsentDecisions
from services.intake.bootstrap import bootstrap as intake_app
from services.intake.config import IntakeSettings
from services.notifications.adapters.contacts import IntakeContacts
from services.notifications.bootstrap import bootstrap as notifications_app
from services.notifications.config import NotificationsSettings
from tests.auth.conftest import Keycloak
from tests.fixtures import FAST_KIT_SETTINGS, serving
from tests.kafka_helpers import provision_services
from tests.peers import MailSink, free_port

NETWORK = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "network.yaml"
JOBCENTER = "jobcenter-kreis-paderborn"
CARITAS = "caritas-paderborn"
AWO = "awo-kreis-paderborn"
SERVICES = ("intake", "consent", "notifications", "audit")
# The demo realm's users (deploy/keycloak/lotse-realm.json) who act in the stories.
USERS = {
    "jobcenter": "caseworker.jobcenter-kreis-paderborn",
    "caritas_system": "partner.caritas-paderborn",
    "awo_system": "partner.awo-kreis-paderborn",
    "auditor": "auditor",
    "operator": "operator",
    "dpo": "dpo.district",
}
# Deviations from FAST_KIT_SETTINGS: the services call each other over real HTTP while they start, so
# consumers keep the kit's five attempts and retry up to 0.5 s; partner topics are seen within a second.
FAST = {**FAST_KIT_SETTINGS, "consumer_retry_max_s": 0.5, "consumer_max_attempts": 5, "kafka_metadata_max_age_ms": 1000}


def keycloak_auth(kc: Keycloak, client_id: str | None = None) -> AuthSettings:
    """Keycloak's realm as the issuer; with `client_id`, that service's own client credentials."""
    secret = SecretStr(kc.secrets[env_key("CLIENT_SECRET", client_id)]) if client_id else None
    return AuthSettings(issuer=kc.issuer, client_id=client_id, client_secret=secret)


@dataclass
class Partner:
    """A partner organisation's own means: its Kafka principal and its private keys."""

    org: str
    kafka: KafkaConnection
    keys: PartnerKeys


@dataclass
class RunningNetwork:
    ns: str
    kafka: str  # the tests' own (provisioning) principal, for reading shared topics
    intake: httpx.AsyncClient
    consent: httpx.AsyncClient
    audit: httpx.AsyncClient
    mailbox: MailSink
    callers: dict[str, dict[str, str]]  # name -> Authorization header, see USERS
    schemas: dict[str, str]
    caritas: Partner
    awo: Partner

    def topic(self, logical: str) -> str:
        return self.ns + logical

    async def consent_to_referral(self, headers: dict[str, str], client_id: str, recipient: str, language: str) -> dict[str, Any]:
        """The client's written, informed consent that `recipient` receives identity and contact for a referral."""
        r = await self.consent.post(
            "/v1/consents",
            headers=headers,
            json={
                "client_id": client_id,
                "recipients": [recipient],
                "purposes": ["referral"],
                "categories": ["identity", "contact"],
                "form": "written",
                "information_language": language,
                "information": {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True},
            },
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body


@asynccontextmanager
async def running_network(
    keycloak: Keycloak, kafka_bootstrap: str, unique: str, topic_namespace: str, smtp: MailSink, tmp_path: Path
) -> AsyncIterator[RunningNetwork]:
    ns = topic_namespace
    callers = {name: {"Authorization": f"Bearer {await keycloak.user_token(user)}"} for name, user in USERS.items()}
    schemas = {s: f"{s[:6]}_{unique}" for s in SERVICES}
    creds = await provision_services(kafka_bootstrap, NETWORK, ns, tmp_path / "kafka", schemas)

    def own(service: str) -> dict[str, Any]:
        return {"kafka_credentials_file": creds[service], "kafka_create_topics": False, **FAST}

    def partner(org: str) -> Partner:
        kafka = KafkaConnection.from_properties(tmp_path / "kafka" / f"{partner_principal(ns, org)}.properties")
        return Partner(org, kafka, PartnerKeys.load_or_create(tmp_path / "partners" / f"{org}.json", org))

    verifier = TokenVerifier(keycloak_auth(keycloak))
    intake_port = free_port()
    intake_url = f"http://127.0.0.1:{intake_port}"
    consent = consent_app(
        settings=ConsentSettings(topic_namespace=ns, network_file=NETWORK, intake_url=intake_url, **own("consent")),
        schema=schemas["consent"],
        intake=HttpIntakeDisclosures(intake_url, tokens=ServiceTokens(keycloak_auth(keycloak, "lotse-consent"))),
    )
    auth.install(consent, verifier)
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
    auth.install(audit, verifier)
    async with serving(consent) as consent_url:
        # Each service calls the others with its own Keycloak client (client-credentials grant).
        decisions = HttpConsentDecisions(consent_url, tokens=ServiceTokens(keycloak_auth(keycloak, "lotse-intake")))
        intake = intake_app(
            IntakeSettings(topic_namespace=ns, consent_url=consent_url, **own("intake")), schema=schemas["intake"], consent=decisions
        )
        auth.install(intake, verifier)
        async with serving(intake, port=intake_port):
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
            auth.install(notifications, verifier)
            async with (
                notifications.router.lifespan_context(notifications),
                serving(audit) as audit_url,  # served, so `lotse audit verify --url` can check it
                httpx.AsyncClient(base_url=intake_url, timeout=30) as intake_http,
                httpx.AsyncClient(base_url=consent_url, timeout=30) as consent_http,
                httpx.AsyncClient(base_url=audit_url, timeout=30) as audit_http,
            ):
                net = RunningNetwork(
                    ns, kafka_bootstrap, intake_http, consent_http, audit_http, smtp, callers, schemas, partner(CARITAS), partner(AWO)
                )
                # The partners register their public keys, as their IT supplier would at onboarding.
                for p, caller in ((net.caritas, callers["caritas_system"]), (net.awo, callers["awo_system"])):
                    for use in ("enc", "sig"):
                        key = p.keys.public(use)
                        r = await consent_http.post(f"/v1/organisations/{p.org}/keys", headers=caller, json=key.model_dump())
                        assert r.status_code == 201, r.text
                yield net
