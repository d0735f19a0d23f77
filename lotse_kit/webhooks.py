"""Standard Webhooks (https://www.standardwebhooks.com), the sending side: secrets, the signed content, the headers.

A webhook is a POST with three headers:
- `webhook-id`: the message id, the same on every retry (receivers deduplicate by it);
- `webhook-timestamp`: Unix seconds when this attempt was signed (receivers refuse old ones: replay);
- `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` signatures over `{id}.{timestamp}.{body}`
  with the key `base64decode(secret without its "whsec_" prefix)`; during a rotation one per secret.

Used by the gateway's push delivery (services/gateway); the partner-side check is `lotse_partner.webhooks`.
A secret is never logged: `WebhookSecret` keeps it out of `repr`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

SECRET_PREFIX = "whsec_"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class InvalidSecret(ValueError):
    """A secret that is not `whsec_<base64 of 24 to 64 bytes>` (the message never contains the secret)."""


@dataclass(frozen=True)
class WebhookSecret:
    """A Standard Webhooks secret, `whsec_<base64>`; its key bytes never appear in a repr or log."""

    text: str = field(repr=False)

    def __post_init__(self) -> None:
        key = self.key  # raises InvalidSecret
        if not 24 <= len(key) <= 64:
            raise InvalidSecret("a webhook secret must have 24 to 64 bytes of key")

    @property
    def key(self) -> bytes:
        try:
            return base64.b64decode(self.text.removeprefix(SECRET_PREFIX), validate=True)
        except ValueError:
            raise InvalidSecret("a webhook secret is whsec_ followed by base64") from None

    @classmethod
    def generate(cls) -> WebhookSecret:
        return cls(SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode())


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What Standard Webhooks signs: `{msg_id}.{timestamp}.{payload}`."""
    return f"{msg_id}.{timestamp}.".encode() + body


def sign_v1(secret: WebhookSecret, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    mac = hmac.new(secret.key, signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets: Sequence[WebhookSecret], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1` signature per secret (a rotation signs with the new and the old)."""
    if not secrets:
        raise ValueError("a webhook needs at least one secret")
    return " ".join(sign_v1(s, msg_id, timestamp, body) for s in secrets)


def webhook_headers(secrets: Sequence[WebhookSecret], msg_id: str, now: datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt signed at `now`."""
    ts = int(now.timestamp())
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature_header(secrets, msg_id, ts, body),
    }
