"""A referral to a partner without Kafka, end to end: the whole network (tests/e2e/network.py: real Keycloak tokens,
every service its own Kafka principal) plus the gateway as `lotse-gateway`. AWO's partner system fetches the sealed
referral over HTTPS with its Keycloak token, opens it with its own key, accepts over HTTPS, and intake records the
acceptance; the acknowledged record is not handed out again."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from contracts import new_event, validate
from contracts.events import PartnerReferralV2, ReferralAccepted
from contracts.structured import STRUCTURED, from_structured, structured_of
from lotse_cli.admin import service_grants
from lotse_kit import auth
from lotse_kit.auth import TokenVerifier
from lotse_kit.kafka import connection
from lotse_kit.network import load_network
from lotse_kit.provisioning import ServiceGrant, desired_state, provision, service_principal
from lotse_partner import open_sealed
from services.gateway.bootstrap import bootstrap
from services.gateway.config import GatewaySettings
from services.gateway.entrypoints.consumers import DECLARATION
from tests.auth.conftest import Keycloak
from tests.e2e.network import AWO, FAST, JOBCENTER, NETWORK, keycloak_auth, running_network
from tests.fixtures import in_process
from tests.kafka_helpers import eventually
from tests.peers import MailSink


async def test_a_referral_to_an_https_partner_and_its_answer(
    kafka_bootstrap: str, keycloak: Keycloak, unique: str, topic_namespace: str, smtp: MailSink, tmp_path: Path
) -> None:
    async with running_network(keycloak, kafka_bootstrap, unique, topic_namespace, smtp, tmp_path) as net:
        # The gateway's principal, provisioned from its declaration next to the services' (same group prefixes).
        schemas = {**net.schemas, "gateway": f"gw_{unique}"}
        grants = [dataclasses.replace(g, group_prefix=f"lotse-{schemas[g.service]}-") for g in service_grants() if g.service != "gateway"]
        grants.append(ServiceGrant(DECLARATION, group_prefix=f"lotse-{schemas['gateway']}-"))
        await provision(
            connection(kafka_bootstrap), desired_state(load_network(NETWORK), grants, namespace=topic_namespace), tmp_path / "kafka"
        )
        settings = GatewaySettings(
            topic_namespace=topic_namespace,
            network_file=NETWORK,
            kafka_credentials_file=tmp_path / "kafka" / f"{service_principal(topic_namespace, 'gateway')}.properties",
            kafka_create_topics=False,
            push_retry_base_s=3600,  # IN VIA's demo URL does not resolve here
            webhook_key_dir=tmp_path / "webhook-keys",
            **FAST,
        )
        gateway = bootstrap(settings, schema=schemas["gateway"])
        auth.install(gateway, TokenVerifier(keycloak_auth(keycloak)))
        jc, awo = net.callers["jobcenter"], net.callers["awo_system"]
        async with in_process(gateway) as gw:
            # The Jobcenter registers a client, who consents that AWO receives identity and contact; a referral.
            r = await net.intake.post(
                "/v1/clients",
                headers=jc,
                json={
                    "registering_org": JOBCENTER,
                    "given_name": "Nadia",
                    "family_name": "Haddad",
                    "email": "nadia.haddad@example.org",
                    "preferred_language": "ar",
                    "languages": ["ar"],
                    "needs": ["language_course"],
                },
            )
            assert r.status_code == 201, r.text
            client_id = r.json()["client_id"]
            await net.consent_to_referral(jc, client_id, AWO, "ar")
            r = await net.intake.post(
                f"/v1/clients/{client_id}/referrals", headers=jc, json={"need": "language_course", "categories": ["identity", "contact"]}
            )
            assert r.status_code == 201, r.text
            assert r.json()["to_org"] == AWO
            referral_id = r.json()["referral_id"]

            # A caseworker's token, even of AWO's own staff, is not AWO's partner system.
            assert (await gw.get(f"/v1/partners/{AWO}/inbox", headers=jc)).status_code == 403

            # AWO's system fetches its inbox over HTTPS (long poll) with its Keycloak token.
            async def referral_page() -> dict | None:
                page = (await gw.get(f"/v1/partners/{AWO}/inbox", params={"wait": 5}, headers=awo, timeout=30)).json()
                return page if any(rec["event"]["type"] == "lotse.referral.sent" for rec in page["records"]) else None

            page = await eventually(referral_page, timeout=60)
            [rec] = [x for x in page["records"] if x["event"]["type"] == "lotse.referral.sent"]
            sent = validate(from_structured(rec["event"]))
            assert isinstance(sent.data, PartnerReferralV2) and str(sent.data.referral_id) == referral_id
            # Sealed content stays sealed through the gateway: only AWO's private key opens it.
            assert "Haddad" not in json.dumps(rec["event"])
            opened = open_sealed(sent, net.awo.keys)
            assert opened is not None and opened.personal_data.identity.family_name == "Haddad"

            # AWO accepts over HTTPS; intake records the acceptance from AWO's outbox topic.
            answer = new_event(
                ReferralAccepted(
                    client_id=uuid.UUID(client_id), referral_id=uuid.UUID(referral_id), to_org=AWO, accepted_at=datetime.now(UTC)
                ),
                source=f"/partners/{AWO}",
                acting_org=AWO,
            )
            r = await gw.post(
                f"/v1/partners/{AWO}/outbox", content=json.dumps(structured_of(answer)).encode(), headers=awo | {"content-type": STRUCTURED}
            )
            assert r.status_code == 202, r.text

            async def accepted() -> bool:
                r = await net.intake.get(f"/v1/referrals/{referral_id}", headers=jc)
                return r.status_code == 200 and r.json()["status"] == "accepted"

            await eventually(accepted, timeout=60)

            # Acknowledged, the referral is not handed out again.
            r = await gw.post(f"/v1/partners/{AWO}/inbox/acknowledgements", json={"cursor": page["next_cursor"]}, headers=awo)
            assert r.status_code == 204, r.text
            again = (await gw.get(f"/v1/partners/{AWO}/inbox", headers=awo)).json()
            assert all(x["event"]["id"] != rec["event"]["id"] for x in again["records"])
