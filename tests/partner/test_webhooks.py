"""lotse_partner.webhooks.verify: Standard Webhooks verification for partners.

The reference vector of the Standard Webhooks libraries' test suites, and round trips through the notifications
service's own signer (`services.notifications.adapters.senders.sign`, `webhook_body`), for `v1` and `v1a`.
"""

from __future__ import annotations

import base64
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks import Webhook

from lotse_partner import webhooks
from lotse_partner.webhooks import WebhookVerificationError, verify
from services.notifications.adapters.keys import SigningKey
from services.notifications.adapters.senders import sign, webhook_body
from services.notifications.handlers.endpoints import new_secret

# The vector every Standard Webhooks library tests its signer with ("sign function works"); the spec text
# itself publishes no secret to reproduce its example headers with.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
VECTOR_HEADERS = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
VECTOR_NOW = datetime.fromtimestamp(VECTOR_TS, UTC)

NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
ORG = "caritas-paderborn"


def whpk(key: SigningKey) -> str:
    return key.public_key


def delivery(
    secrets: list[str], keys: list[SigningKey], *, at: datetime = NOW, org: str = ORG, msg_id: str = "msg_0b6c"
) -> tuple[dict[str, str], bytes]:
    """Headers and body exactly as the notifications service's WebhookSender makes them."""
    body = webhook_body("lotse.case.handed_over", at, {"client_id": "c-1", "to_org": org, "organisation": org, "trigger_event_id": "e-1"})
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": sign(secrets, msg_id, at, body, keys),
    }
    return headers, body


def reason(exc: pytest.ExceptionInfo[WebhookVerificationError]) -> str:
    return exc.value.reason


# ---------------------------------------------------------------- the reference vector
def test_the_reference_vector_verifies():
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, VECTOR_NOW, VECTOR_BODY.decode()) == VECTOR_SIGNATURE  # the vector is the library's
    assert verify(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY, now=VECTOR_NOW) == {"test": 2432232314}
    assert verify(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY.decode(), now=VECTOR_NOW + timedelta(minutes=4)) == {"test": 2432232314}


def test_the_reference_vector_refuses_any_change():
    changed = [
        (VECTOR_HEADERS, b'{"test": 2432232315}'),
        ({**VECTOR_HEADERS, "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJel"}, VECTOR_BODY),
        ({**VECTOR_HEADERS, "webhook-timestamp": str(VECTOR_TS + 1)}, VECTOR_BODY),
        (VECTOR_HEADERS, b'{"test":2432232314}'),  # serialised again: one space less
    ]
    for headers, body in changed:
        with pytest.raises(WebhookVerificationError) as exc:
            verify(VECTOR_SECRET, headers, body, now=VECTOR_NOW)
        assert reason(exc) == "no-matching-signature"
    with pytest.raises(WebhookVerificationError) as exc:
        verify("whsec_" + base64.b64encode(b"another secret of enough length").decode(), VECTOR_HEADERS, VECTOR_BODY, now=VECTOR_NOW)
    assert reason(exc) == "no-matching-signature"


# ---------------------------------------------------------------- round trips with the service's signer
def test_v1_with_the_endpoint_secret_round_trips():
    secret = new_secret()
    headers, body = delivery([secret], [])
    payload = verify(secret, headers, body, now=NOW, expect_organisation=ORG)
    assert payload["type"] == "lotse.case.handed_over"
    assert payload["data"]["organisation"] == ORG


def test_v1a_with_the_published_public_key_round_trips():
    key = SigningKey(Ed25519PrivateKey.generate())
    headers, body = delivery([new_secret()], [key])
    assert verify(whpk(key), headers, body, now=NOW, expect_organisation=ORG)["data"]["to_org"] == ORG
    other = SigningKey(Ed25519PrivateKey.generate())
    with pytest.raises(WebhookVerificationError) as exc:
        verify(whpk(other), headers, body, now=NOW)
    assert reason(exc) == "no-matching-signature"


def test_rotations_sign_twice_and_either_key_verifies():
    old, new = new_secret(), new_secret()
    old_key, new_key = SigningKey(Ed25519PrivateKey.generate()), SigningKey(Ed25519PrivateKey.generate())
    headers, body = delivery([new, old], [new_key, old_key])
    assert [s.split(",")[0] for s in headers["webhook-signature"].split(" ")] == ["v1", "v1", "v1a", "v1a"]
    for keys in (
        old,
        new,
        whpk(old_key),
        whpk(new_key),
        [new_secret(), old],
        [whpk(SigningKey(Ed25519PrivateKey.generate())), whpk(old_key)],
    ):
        assert verify(keys, headers, body, now=NOW)["type"] == "lotse.case.handed_over"


def test_a_signature_counts_only_for_its_own_version():
    secret = new_secret()
    key = SigningKey(Ed25519PrivateKey.generate())
    headers, body = delivery([secret], [key])
    v1 = next(s for s in headers["webhook-signature"].split(" ") if s.startswith("v1,"))
    v1a = next(s for s in headers["webhook-signature"].split(" ") if s.startswith("v1a,"))
    # The HMAC relabelled v1a does not pass as Ed25519, nor the Ed25519 signature relabelled v1 as HMAC.
    for sig, keys in (("v1a," + v1.split(",", 1)[1], whpk(key)), ("v1," + v1a.split(",", 1)[1], secret)):
        with pytest.raises(WebhookVerificationError) as exc:
            verify(keys, {**headers, "webhook-signature": sig}, body, now=NOW)
        assert reason(exc) == "no-matching-signature"
    # Unknown versions and malformed entries are skipped, not fatal: a later valid signature still counts.
    assert verify(secret, {**headers, "webhook-signature": f"v2,AAAA garbage v1,%%% {v1}"}, body, now=NOW)


def test_header_names_are_case_insensitive():
    secret = new_secret()
    headers, body = delivery([secret], [])
    assert verify(secret, {k.title(): v for k, v in headers.items()}, body, now=NOW)


def test_hmacs_are_compared_in_constant_time(monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    secret = new_secret()
    headers, body = delivery([secret], [])
    verify(secret, headers, body, now=NOW)
    assert calls, "the HMAC was not compared with hmac.compare_digest"


# ---------------------------------------------------------------- timestamps, headers, payloads, keys
def test_timestamps_outside_the_tolerance_are_refused():
    secret = new_secret()
    headers, body = delivery([secret], [])
    assert verify(secret, headers, body, now=NOW + timedelta(minutes=5))  # the edge is inside
    for now, why in (
        (NOW + timedelta(minutes=5, seconds=1), "timestamp-too-old"),
        (NOW - timedelta(minutes=5, seconds=1), "timestamp-too-new"),
    ):
        with pytest.raises(WebhookVerificationError) as exc:
            verify(secret, headers, body, now=now)
        assert reason(exc) == why
    assert verify(secret, headers, body, now=NOW + timedelta(minutes=30), tolerance=timedelta(hours=1))
    with pytest.raises(WebhookVerificationError) as exc:
        verify(secret, headers, body, now=NOW + timedelta(seconds=11), tolerance=timedelta(seconds=10))
    assert reason(exc) == "timestamp-too-old"


@pytest.mark.parametrize("stamp", ["", "1.5", "-1", "1e9", "abc", "99999999999999"])
def test_a_timestamp_that_is_no_unix_time_is_refused(stamp):
    secret = new_secret()
    headers, body = delivery([secret], [])
    with pytest.raises(WebhookVerificationError) as exc:
        verify(secret, {**headers, "webhook-timestamp": stamp}, body, now=NOW)
    assert reason(exc) == ("missing-header" if not stamp else "invalid-timestamp")


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(header):
    secret = new_secret()
    headers, body = delivery([secret], [])
    del headers[header]
    with pytest.raises(WebhookVerificationError, match=header) as exc:
        verify(secret, headers, body, now=NOW)
    assert reason(exc) == "missing-header"


def test_signed_bodies_that_are_no_json_object_are_refused():
    secret = new_secret()
    for body in (b"not json", b"[1, 2]", b"\xff\xfe"):
        stamp = str(int(NOW.timestamp()))
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": stamp,
            "webhook-signature": Webhook(secret).sign("msg_1", NOW, body.decode("latin-1")),
        }
        if body == b"\xff\xfe":  # the library signs text; sign the raw bytes as the spec does
            mac = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), f"msg_1.{stamp}.".encode() + body, "sha256").digest()
            headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()
        with pytest.raises(WebhookVerificationError) as exc:
            verify(secret, headers, body, now=NOW)
        assert reason(exc) == "invalid-payload"


def test_a_webhook_addressed_to_another_organisation_is_refused():
    key = SigningKey(Ed25519PrivateKey.generate())
    headers, body = delivery([], [key], org="awo-kreis-paderborn")
    with pytest.raises(WebhookVerificationError, match="awo-kreis-paderborn") as exc:
        verify(whpk(key), headers, body, now=NOW, expect_organisation=ORG)
    assert reason(exc) == "wrong-organisation"


@pytest.mark.parametrize("key", ["whpk_" + base64.b64encode(b"short").decode(), "whpk_not*base64", "whsec_not*base64", "whsec_", b"", []])
def test_unusable_keys_are_refused_without_echoing_them(key):
    secret = new_secret()
    headers, body = delivery([secret], [])
    with pytest.raises(WebhookVerificationError) as exc:
        verify(key, headers, body, now=NOW)
    assert reason(exc) == "invalid-key"
    if isinstance(key, str) and len(key) > len("whsec_"):
        assert key not in str(exc.value)


def test_a_secret_copied_without_its_padding_still_verifies():
    secret = new_secret()
    headers, body = delivery([secret], [])
    assert verify(secret.rstrip("="), headers, body, now=NOW)
