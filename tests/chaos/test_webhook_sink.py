"""The fault suite's partner webhook endpoint (bench/chaos/webhook_sink.py) with the real notifications service.

Two ways in:
- the running single-node network (`make up`): the sink registered as the Jobcenter's endpoint by its partner
  system, a referral sent through intake's public API. It needs a notifications service that may deliver to
  127.0.0.1 over the local CA (`WebhookSink.notifications_env()`); the test says so and skips where it may not.
- a notifications service in this process (real Kafka and PostgreSQL, the service tests' fixtures), which
  takes that environment as settings: the same sink, the same checks, on every machine.

Both: a webhook reaches the sink and verifies with the partner kit; with the sink down the service retries and
delivers once it is up, with one webhook id for every attempt and exactly one 200 per event id.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from bench.chaos.webhook_sink import Delivery, WebhookSink, WebhookSinkError
from contracts.topics import CLIENTS
from lotse_kit.settings import service_url
from services.notifications.tests import conftest as notifications_fixtures
from services.notifications.tests.test_delivery import all_final, handed_over
from tests.fixtures import as_org
from tests.infra import local_keycloak_url
from tests.kafka_helpers import eventually

JOBCENTER = "jobcenter-kreis-paderborn"  # the demo network's (deploy/demo/network.yaml)
CARITAS = notifications_fixtures.CARITAS  # the service tests' network file's

# The notifications service in process, and the fixtures it needs, from the service's own tests.
start_service = notifications_fixtures.start_service
network_file = notifications_fixtures.network_file
contacts = notifications_fixtures.contacts
peer = notifications_fixtures.peer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def sink(tmp_path) -> AsyncIterator[WebhookSink]:
    s = WebhookSink(free_port(), state_dir=tmp_path / "sink")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def of_event(deliveries: list[Delivery], event_id: str) -> list[Delivery]:
    return [d for d in deliveries if d.event_id == event_id]


def assert_delivered_once_after_503s(attempts: list[Delivery]) -> None:
    """503s while down, then exactly one 200; every attempt verified, one webhook id throughout."""
    statuses = [d.status for d in attempts]
    assert 503 in statuses and statuses.count(200) == 1, statuses
    assert statuses.index(200) == len(statuses) - 1, f"an attempt after the 200: {statuses}"
    assert all(d.verified for d in attempts), [d.reason for d in attempts]
    assert len({d.webhook_id for d in attempts}) == 1


# ---------------------------------------------------------------- in process: runs everywhere
async def test_sink_verifies_and_a_down_sink_gets_the_event_once_it_is_up(start_service, sink):
    overrides: dict[str, Any] = {"webhook_ca_file": sink.ca_file, "retry_schedule_s": [1.0] * 20}
    async with start_service(**overrides) as svc:
        endpoint = await sink.register(
            CARITAS, event_types=["lotse.case.handed_over"], notifications_url="", headers=as_org(CARITAS), http=svc.http
        )
        assert sink.endpoint_id == endpoint

        first = handed_over(CARITAS)
        await svc.produce(CLIENTS, first)
        await eventually(lambda: _has_status(sink, str(first.id), 200), timeout=60)
        [delivered] = of_event(await sink.deliveries(), str(first.id))
        assert delivered.verified and delivered.organisation == CARITAS and delivered.type == "lotse.case.handed_over"
        assert delivered.client_id == str(first.data.client_id)

        await sink.down()
        second = handed_over(CARITAS)
        await svc.produce(CLIENTS, second)
        await eventually(lambda: _count_status(sink, str(second.id), 503, at_least=2), timeout=60)  # retried while down
        await sink.up()
        await eventually(lambda: _has_status(sink, str(second.id), 200), timeout=60)
        await eventually(lambda: all_final(svc, second.id, 2), timeout=60)  # the service recorded it as delivered: no more tries
        [row] = await svc.rows("trigger_event_id = $1 AND channel = 'webhook'", second.id)
        assert row["status"] == "delivered"
        attempts = of_event(await sink.deliveries(), str(second.id))
        assert_delivered_once_after_503s(attempts)
        assert row["attempts"] == len(attempts)
        assert attempts[0].webhook_id == f"msg_{row['id']}"

        await sink.unregister(http=svc.http)
        listed = await svc.http.get("/v1/webhook-endpoints", headers=as_org(CARITAS))
        assert endpoint not in {e["id"] for e in listed.json()}


async def test_a_delivery_that_does_not_verify_is_refused_and_recorded(sink):
    await sink.set_keys(["whsec_" + "QUJD" * 8], "caritas-paderborn")
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(sink.ca_file))) as http:
        r = await http.post(
            sink.url,
            content=b'{"type":"x","data":{}}',
            headers={"webhook-id": "msg_forged", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
        )
    assert r.status_code == 401
    [d] = await sink.deliveries()
    assert (d.webhook_id, d.status, d.verified) == ("msg_forged", 401, False)
    assert d.reason and d.reason.startswith("timestamp-too-old")


async def test_the_control_routes_need_the_sinks_token(sink):
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(sink.ca_file))) as http:
        base = sink.url.rsplit("/hooks", 1)[0]
        for method, path in (("GET", "/control/deliveries"), ("POST", "/control/state"), ("POST", "/control/keys")):
            r = await http.request(method, base + path, headers={"authorization": "Bearer guessed"}, json={"up": False, "keys": []})
            assert r.status_code == 401, path
    assert (await sink.deliveries()) == []


async def _has_status(sink: WebhookSink, event_id: str, status: int) -> bool:
    return any(d.status == status for d in of_event(await sink.deliveries(), event_id))


async def _count_status(sink: WebhookSink, event_id: str, status: int, *, at_least: int) -> bool:
    return Counter(d.status for d in of_event(await sink.deliveries(), event_id))[status] >= at_least


# ---------------------------------------------------------------- the running single-node network
def running(name: str) -> bool:
    try:
        return httpx.get(f"{service_url(name)}/health/ready", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
async def test_running_network_delivers_a_referral_webhook_to_the_sink_once_despite_503s(sink):
    if not all(running(s) for s in ("intake", "consent", "notifications")):
        pytest.skip("the local network is not running (make up)")
    from lotse_cli.dev import find_user, user_token

    issuer = f"{local_keycloak_url()}/realms/lotse"  # the tests' own issuer is in LOTSE_OIDC_ISSUER
    try:
        await sink.register(JOBCENTER, event_types=["lotse.referral.sent"], issuer=issuer)
    except WebhookSinkError as exc:
        if exc.status == 422:  # the URL refused: loopback, or a certificate the service does not trust
            pytest.skip(
                f"the running notifications service may not deliver to the sink ({exc}); start it with {WebhookSink.notifications_env()}"
            )
        raise
    try:
        caseworker = {"authorization": f"Bearer {user_token(find_user(JOBCENTER, 'caseworker'), issuer=issuer)}"}
        async with httpx.AsyncClient(timeout=30, headers=caseworker) as http:
            first = await _send_referral(http)
            await eventually(lambda: _client_status(sink, first, 200), timeout=120)

            await sink.down()
            second = await _send_referral(http)
            await eventually(lambda: _client_status(sink, second, 503), timeout=120)
            await sink.up()  # the retry 5 s (±20 %) later finds it up
            await eventually(lambda: _client_status(sink, second, 200), timeout=600, interval=1)

            deliveries = await sink.deliveries()
            [one] = [d for d in deliveries if d.client_id == first]
            assert one.status == 200 and one.verified and one.organisation == JOBCENTER and one.type == "lotse.referral.sent"
            attempts = [d for d in deliveries if d.client_id == second]
            assert_delivered_once_after_503s(attempts)
            event_id = attempts[0].event_id
            # The service has recorded it as delivered, so no further attempt can come.
            status = await http.get(
                f"{service_url('notifications')}/v1/notifications",
                params={"trigger_event_id": event_id, "channel": "webhook"},
                headers={"authorization": f"Bearer {user_token(find_user(JOBCENTER, 'partner_system'), issuer=issuer)}"},
            )
            assert status.status_code == 200, status.text
            mine = [n for n in status.json()["items"] if n["endpoint_id"] == sink.endpoint_id]
            assert [n["status"] for n in mine] == ["delivered"]
            assert Counter(d.event_id for d in await sink.deliveries() if d.status == 200)[event_id] == 1
    finally:
        await sink.unregister()


async def _send_referral(http: httpx.AsyncClient) -> str:
    """A client of the Jobcenter, her consent and a referral to Caritas, through the public APIs; returns her id."""
    intake, consent = service_url("intake"), service_url("consent")
    client = {
        "registering_org": JOBCENTER,
        "given_name": "Chaos",
        "family_name": f"Demo-{uuid.uuid4().hex[:6]}",
        "date_of_birth": "1990-01-01",
        "preferred_language": "uk",
        "languages": ["uk"],
        "needs": ["integration_course"],
        "residence_title": "aufenthg_24",
        "residence_valid_until": (date.today() + timedelta(days=200)).isoformat(),
    }
    r = await http.post(f"{intake}/v1/clients", json=client)
    assert r.status_code == 201, r.text
    client_id = str(r.json()["client_id"])
    r = await http.post(
        f"{consent}/v1/consents",
        json={
            "client_id": client_id,
            "form": "written",
            "information": {"purpose": True, "consequences_of_refusal": True, "right_to_withdraw": True},
            "recipients": ["caritas-paderborn", JOBCENTER],
            "purposes": ["referral"],
            "categories": ["identity"],
            "information_language": "uk",
        },
    )
    assert r.status_code == 201, r.text
    r = await http.post(f"{intake}/v1/clients/{client_id}/referrals", json={"need": "integration_course", "categories": ["identity"]})
    assert r.status_code == 201, r.text
    return client_id


async def _client_status(sink: WebhookSink, client_id: str, status: int) -> bool:
    return any(d.client_id == client_id and d.status == status for d in await sink.deliveries())
