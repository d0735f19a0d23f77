"""Push: each record of a push partner's inbox is POSTed to its URL as the structured CloudEvent with Standard
Webhooks headers, retried until a 2xx, which acknowledges it: delivered exactly once per id (2xx), in order."""

from __future__ import annotations

import json
import uuid

from standardwebhooks.webhooks import Webhook

from contracts import validate
from contracts.structured import from_structured
from tests.kafka_helpers import eventually

from .conftest import INVIA, TEST_SECRET, inbox_event, partner


async def test_503_then_200_delivers_each_record_once_in_order_signed(start_gateway, receiver):
    client_id = uuid.uuid4()
    envs = [inbox_event(INVIA, client_id=client_id) for _ in range(3)]
    receiver.script = [503, 503, 200, 500, 200]  # the first record fails twice, the second once
    async with start_gateway() as gw:
        await gw.put_on_inbox(INVIA, *envs)
        await eventually(lambda: len(receiver.delivered_ids()) == 3, timeout=30)
        assert receiver.delivered_ids() == [str(e.id) for e in envs]
        attempts = [h["webhook-id"] for h, _, _ in receiver.requests]
        assert attempts == [str(envs[0].id)] * 3 + [str(envs[1].id)] * 2 + [str(envs[2].id)]
        verifier = Webhook(TEST_SECRET)
        for headers, body, _ in receiver.requests:
            assert headers["content-type"] == "application/cloudevents+json"
            # Standard Webhooks: the receiver's library verifies id, timestamp and the v1 signature.
            verified = verifier.verify(body, {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
            assert verified["id"] == headers["webhook-id"]
            assert validate(from_structured(json.loads(body))).id == uuid.UUID(headers["webhook-id"])
        # Delivered means acknowledged (recorded right after the 2xx arrived): nothing is left to fetch.

        async def nothing_left() -> bool:
            return (await gw.http.get(f"/v1/partners/{INVIA}/inbox", headers=partner(INVIA))).json()["records"] == []

        await eventually(nothing_left, timeout=10)
        assert receiver.delivered_ids() == [str(e.id) for e in envs]  # and nothing more was posted
    async with start_gateway() as gw:  # after a restart nothing is sent again; a new record is
        late = inbox_event(INVIA, client_id=client_id)
        await gw.put_on_inbox(INVIA, late)
        await eventually(lambda: len(receiver.delivered_ids()) == 4, timeout=30)
        assert receiver.delivered_ids() == [str(e.id) for e in [*envs, late]]


async def test_a_wrong_secret_fails_verification(start_gateway, receiver):
    async with start_gateway() as gw:
        await gw.put_on_inbox(INVIA, inbox_event(INVIA))
        await eventually(lambda: receiver.delivered_ids(), timeout=30)
    headers, body, _ = receiver.requests[0]
    other = Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
    try:
        other.verify(body, {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
    except Exception as exc:  # WebhookVerificationError
        assert "signature" in str(exc).lower()
    else:
        raise AssertionError("a signature under another secret verified")


async def test_an_organisation_without_a_secret_is_not_pushed_and_the_worker_stays_up(start_gateway, receiver, tmp_path):
    """A missing secret is that organisation's configuration error: logged and counted, the push worker (and
    so the gateway's readiness) carries on, and the record is pushed once the secret is there."""
    from lotse_kit import metrics as kit_metrics

    def no_secret_rounds() -> float:
        return kit_metrics.REGISTRY.get_sample_value("lotse_gateway_push_attempts_total", {"org": INVIA, "outcome": "no_secret"}) or 0

    before = no_secret_rounds()
    env = inbox_event(INVIA)
    async with start_gateway(webhook_keys={}, webhook_key_dir=tmp_path, generate_webhook_keys=False) as gw:
        await gw.put_on_inbox(INVIA, env)
        await eventually(lambda: no_secret_rounds() >= before + 10, timeout=30)  # well past the worker's unhealthy_after
        assert (await gw.http.get("/health/ready")).status_code == 200
        assert receiver.requests == []
    (tmp_path / INVIA).write_text(TEST_SECRET + "\n")
    async with start_gateway(webhook_keys={}, webhook_key_dir=tmp_path, generate_webhook_keys=False):
        await eventually(lambda: receiver.delivered_ids() == [str(env.id)], timeout=30)
