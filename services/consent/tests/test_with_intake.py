"""The gate against the real intake service: intake (built by its own bootstrap, served over HTTP) emits the
pseudonymous disclosure request and answers the internal disclosure API; the consent service fetches with its
own client-credentials token and seals to the recipient's registered key. Real broker, database and issuer."""

from __future__ import annotations

import uuid

import httpx
import pytest

from contracts import decode, topics
from contracts.events import SealedContent
from contracts.sealed import SealedError, generate_key, unseal
from contracts.vocab import DataCategory, Purpose
from lotse_kit.auth import AuthSettings, ServiceTokens
from lotse_kit.context import ON_BEHALF_OF
from lotse_kit.network import OrgDirectory, load_network
from services.consent.adapters.intake import ERASED, NOT_SERVED, DisclosureQuery, HttpIntakeDisclosures, IntakeUnavailable
from services.intake.adapters.consent import HttpConsentDecisions
from services.intake.tests.conftest import HERE as INTAKE_TESTS
from services.intake.tests.conftest import JOBCENTER, KI, client_body, clock, consent, directory, h, make_intake  # noqa: F401 - intake's fixtures
from tests.fixtures import as_org, local_issuer, service_token, serving
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
            assert adapter.calls + adapter.batch_calls >= 1
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


async def test_the_batch_request_answers_what_the_single_requests_answer_in_one_call(make_intake, consent) -> None:  # noqa: F811
    issuer = local_issuer().signer.issuer
    tokens = ServiceTokens(AuthSettings(issuer=issuer, client_id="lotse-consent", client_secret="test-only"))
    async with make_intake() as (intake_app, intake_http), serving(intake_app, lifespan="off") as intake_url:
        adapter = HttpIntakeDisclosures(intake_url, tokens=tokens)
        clients = []
        for name in ("Olena", "Xenia", "Erika"):
            r = await intake_http.post("/v1/clients", json=client_body(given_name=name, health="Diabetes Typ 1"), headers=h(JOBCENTER))
            assert r.status_code == 201, r.text
            clients.append(uuid.UUID(r.json()["client_id"]))
        consent.grant(clients[0], KI, Purpose.REFERRAL, [DataCategory.IDENTITY])
        body = {"to_org": KI, "service": "sprachmittlerpool", "categories": ["identity"], "reason": "Termin beim Jobcenter"}
        r = await intake_http.post(f"/v1/clients/{clients[0]}/referrals", json=body, headers=h(JOBCENTER))
        referral_id = uuid.UUID(r.json()["referral_id"])
        assert (await intake_http.delete(f"/v1/clients/{clients[2]}", headers=h(JOBCENTER))).status_code == 200
        queries = [
            DisclosureQuery(clients[0], (DataCategory.IDENTITY,), referral_id),
            DisclosureQuery(clients[1], (DataCategory.CONTACT, DataCategory.HEALTH)),
            DisclosureQuery(clients[2], (DataCategory.IDENTITY,)),
            DisclosureQuery(uuid.uuid4(), (DataCategory.IDENTITY,)),
        ]
        answers = await adapter.disclosures(queries * 100)  # 400 queries: two requests of at most 200
        assert adapter.batch_calls == 2 and adapter.calls == 0 and len(answers) == 400
        assert answers[:4] == answers[4:8]
        assert answers[0] == await adapter.disclosure(queries[0].client_id, queries[0].categories, referral_id)
        assert answers[1] == await adapter.disclosure(queries[1].client_id, queries[1].categories)
        assert answers[2] == ERASED and answers[3] == NOT_SERVED
        assert not isinstance(answers[0], str) and answers[0].notes is not None and answers[0].notes.reason == "Termin beim Jobcenter"
        await adapter.aclose()


async def test_the_batch_request_renews_a_refused_token_once() -> None:
    issued: list[str] = []

    def issuer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"token_endpoint": "http://issuer.test/token"})
        issued.append(f"t{len(issued) + 1}")
        return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 300})

    presented: list[str | None] = []

    def intake(request: httpx.Request) -> httpx.Response:
        presented.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != "Bearer t2":
            return httpx.Response(401, json={"type": "urn:lotse:problem:invalid-token"})
        return httpx.Response(200, json={"items": [{"status": "erased"}]})

    tokens = ServiceTokens(
        AuthSettings(issuer="http://issuer.test", client_id="lotse-consent", client_secret="s"), transport=httpx.MockTransport(issuer)
    )
    adapter = HttpIntakeDisclosures("http://intake", transport=httpx.MockTransport(intake), tokens=tokens)
    assert await adapter.disclosures([DisclosureQuery(uuid.uuid4(), (DataCategory.IDENTITY,))]) == [ERASED]
    assert presented == ["Bearer t1", "Bearer t2"] and issued == ["t1", "t2"]
    # An answer of the wrong length: intake counts as unavailable (the gate then fetches one by one).
    with pytest.raises(IntakeUnavailable, match="1 items for 2"):
        await adapter.disclosures([DisclosureQuery(uuid.uuid4(), (DataCategory.IDENTITY,))] * 2)
    await adapter.aclose()


async def test_intakes_contact_batch_asks_the_real_consent_service_once_and_a_withdrawal_stops_the_contact(
    make_intake,  # noqa: F811
    start_consent: StartService,
) -> None:
    """Intake's POST /internal/v1/contacts with its real decision adapter against this service's POST /v1/decisions:
    the consented organisation gets the contact, the others the single route's problems, and once the client withdrew
    the consent, the contact is refused in the batch exactly as in the single route."""
    issuer = local_issuer().signer.issuer
    tokens = ServiceTokens(AuthSettings(issuer=issuer, client_id="lotse-intake", client_secret="test-only"))
    network = OrgDirectory.of(load_network(INTAKE_TESTS / "network.yaml"))
    async with start_consent(directory=network) as svc, serving(svc.app, lifespan="off") as consent_url:
        decisions = HttpConsentDecisions(consent_url, tokens=tokens)
        async with make_intake(consent=decisions) as (_intake_app, intake_http):
            r = await intake_http.post("/v1/clients", json=client_body(), headers=h(JOBCENTER))
            assert r.status_code == 201, r.text
            client_id = r.json()["client_id"]
            granted = await svc.grant(
                uuid.UUID(client_id), org=JOBCENTER, recipients=[KI], purposes=["contact_for_notifications"], categories=["contact"]
            )
            notifications = service_token("notifications")
            items = [{"client_id": client_id, "on_behalf_of": KI}, {"client_id": client_id, "on_behalf_of": JOBCENTER}]

            async def both() -> tuple[list[dict], list[dict]]:
                batch = await intake_http.post("/internal/v1/contacts", json={"items": items}, headers=notifications)
                assert batch.status_code == 200, batch.text
                singles = []
                for i in items:
                    one = await intake_http.get(
                        f"/v1/clients/{client_id}/contact", headers=notifications | {ON_BEHALF_OF: i["on_behalf_of"]}
                    )
                    body = one.json()
                    body.pop("instance", None)
                    singles.append({"status": one.status_code, "contact" if one.status_code == 200 else "problem": body})
                return batch.json()["items"], singles

            batch, singles = await both()
            assert batch == singles
            assert [a["status"] for a in batch] == [200, 409] and batch[0]["contact"]["email"] == "olena.kovalenko@mail.example"

            r = await svc.http.post(f"/v1/consents/{granted['consent_id']}/withdraw", headers=as_org(JOBCENTER))
            assert r.status_code == 200, r.text
            batch, singles = await both()
            assert batch == singles
            assert [a["status"] for a in batch] == [409, 409] and "contact" not in batch[0]
            assert batch[0]["problem"]["type"] == "urn:lotse:problem:consent-required"
        await decisions.aclose()
