"""lotse_kit/webhooks.py signs as Standard Webhooks specifies: the reference library verifies it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from lotse_kit.webhooks import InvalidSecret, WebhookSecret, webhook_headers


def test_the_reference_library_verifies_our_signature():
    secret = WebhookSecret.generate()
    body = b'{"specversion":"1.0","id":"e1"}'
    headers = webhook_headers([secret], "e1", datetime.now(UTC), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret.text).verify(body, headers) == {"specversion": "1.0", "id": "e1"}
    with pytest.raises(WebhookVerificationError):
        Webhook(WebhookSecret.generate().text).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret.text).verify(body + b" ", headers)


def test_during_a_rotation_both_secrets_sign():
    old, new = WebhookSecret.generate(), WebhookSecret.generate()
    body = b"{}"
    headers = webhook_headers([new, old], "e2", datetime.now(UTC), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for s in (old, new):
        Webhook(s.text).verify(body, headers)


def test_a_secret_never_shows_in_a_repr():
    s = WebhookSecret.generate()
    assert s.text not in repr(s) and s.text.removeprefix("whsec_") not in repr(s)


@pytest.mark.parametrize("text", ["whsec_not base64!", "whsec_" + "QUJD", ""])
def test_malformed_secrets_are_refused_without_echoing_them(text):
    with pytest.raises(InvalidSecret) as exc:
        WebhookSecret(text)
    assert text.removeprefix("whsec_") not in str(exc.value) or not text.removeprefix("whsec_")
