"""The gate against the real intake service: intake (built by its own bootstrap, served over HTTP) emits the
pseudonymous disclosure request and answers the internal disclosure API; the consent service fetches with its
own client-credentials token and seals to the recipient's registered key. Real broker, database and issuer."""

from __future__ import annotations

import uuid

from contracts import decode, topics
from contracts.events import SealedContent
from contracts.sealed import SealedError, generate_key, unseal
from contracts.vocab import DataCategory, Purpose
from lotse_kit.auth import AuthSettings, ServiceTokens
from lotse_kit.network import OrgDirectory, load_network
from services.consent.adapters.intake import HttpIntakeDisclosures
from services.intake.tests.conftest import HERE as INTAKE_TESTS
from services.intake.tests.conftest import JOBCENTER, KI, client_body, clock, consent, directory, h, make_intake  # noqa: F401 - intake's fixtures
from tests.fixtures import as_org, local_issuer, serving
from tests.kafka_helpers import eventually, read_topic

from .conftest import PRIVATE_KEYS, StartService

KI_PRIVATE, KI_PUBLIC = generate_key("ki-kreis-paderborn-enc-1", "enc")


def _network_with_ki_key() -> OrgDirectory:
    """Intake's test network, with KI's public key registered in the network file."""
    network = load_network(INTAKE_TESTS / "network.yaml")
    orgs = [o.model_copy(update={"keys": [KI_PUBLIC]}) if o.id == KI else o for o in network.organisations]
    return OrgDirectory.of(network.model_copy(update={"organisations": orgs}))


async def test_the_gate_reads_from_the_real_intake_app(make_intake, consent, start_consent: StartService) -> None:  # noqa: F811
    issuer = local_issuer().signer.issuer
    tokens = ServiceTokens(AuthSettings(issuer=issuer, client_id="lotse-consent", client_secret="test-only"))
    async with make_intake() as (intake_app, intake_http), serving(intake_app, lifespan="off") as intake_url:
        adapter = HttpIntakeDisclosures(intake_url, tokens=tokens)
        async with start_consent(intake=adapter, directory=_network_with_ki_key()) as svc:
            r = await intake_http.post("/v1/clients", json=client_body(health="Diabetes Typ 1"), headers=h(JOBCENTER))
            assert r.status_code == 201, r.text
            client_id = r.json()["client_id"]
            # The client's consent, in the consent service (what the gate checks) and in intake's stand-in.
            granted = await svc.grant(uuid.UUID(client_id), org=JOBCENTER, recipients=[KI], categories=["identity", "needs"])
            consent.grant(client_id, KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
            body = {"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity"], "reason": "Termin beim Jobcenter"}
            r = await intake_http.post(f"/v1/clients/{client_id}/referrals", json=body, headers=h(JOBCENTER))
            assert r.status_code == 201, r.text
            referral_id = r.json()["referral_id"]

            [rec] = await read_topic(svc.bootstrap_servers, svc.topic(topics.partner_inbox(KI)), timeout=60)
            env = decode(rec.headers, rec.value)
            assert env.dataschema == "urn:lotse:schema:lotse.referral.sent.partner.v2"
            assert str(env.data.referral_id) == referral_id and str(env.data.consent_id) == granted["consent_id"]
            assert "Olena" not in rec.value.decode() and "Diabetes" not in rec.value.decode()
            opened = SealedContent.model_validate(unseal(env.data.sealed.jwe, [KI_PRIVATE]))
            assert opened.personal_data.categories() == [DataCategory.IDENTITY]
            assert opened.personal_data.identity.given_name == "Olena" and opened.personal_data.health is None
            assert opened.notes is not None and opened.notes.reason == "Termin beim Jobcenter"
            try:
                unseal(env.data.sealed.jwe, [PRIVATE_KEYS["caritas-paderborn"]["enc"] | {"kid": KI_PUBLIC.kid}])
                raise AssertionError("another organisation's key opened KI's referral")
            except SealedError:
                pass
            assert adapter.calls >= 1
            # The gate used consent's own token: intake refuses any other caller on its internal API.
            refused = await intake_http.get(
                f"/internal/v1/clients/{client_id}/disclosure", params={"category": "identity"}, headers=as_org(JOBCENTER)
            )
            assert refused.status_code == 403
            made = await eventually(
                lambda: svc.pool.fetchval("SELECT outcome FROM disclosures WHERE referral_id = $1", uuid.UUID(referral_id))
            )
            assert made == "made"
        await adapter.aclose()
