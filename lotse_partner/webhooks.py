"""Verifying the webhooks Lotse's notifications service sends (Standard Webhooks, https://www.standardwebhooks.com/).

Every request carries `webhook-id`, `webhook-timestamp` and `webhook-signature`; the signature header is a
space-separated list of `<version>,<base64>` over `{webhook-id}.{webhook-timestamp}.{body}`:

- `v1`: HMAC-SHA256 with the endpoint's own secret (`whsec_…`, shown once when the endpoint was registered or
  its secret rotated; during a rotation one `v1` per secret);
- `v1a`: Ed25519 with the district's signing key; its public key (`whpk_…`) is published at
  `GET /v1/webhooks/public-key` of the notifications service (during a key rotation one `v1a` per key).

    payload = verify(secret, request.headers, raw_body, expect_organisation="caritas-paderborn")

`verify` accepts the request if any signature it carries matches any key given (a `whsec_` secret or a `whpk_`
public key, or several during a rotation), compares HMACs in constant time, refuses a timestamp more than
`tolerance` away from now (the spec's replay protection; 5 minutes, as the reference libraries), and returns the
parsed JSON body. Give it the raw bytes as received: a body parsed and serialised again no longer verifies.
What it cannot do for you: drop a repeated `webhook-id` (the same event is retried with the same id; keep the
ids you processed, at least for the tolerance) and, with `v1a`, check that the webhook is addressed to you: the
district's key signs every partner's webhooks, so pass `expect_organisation` (checked against the signed
`data.organisation`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["DEFAULT_TOLERANCE", "Reason", "WebhookVerificationError", "verify"]

SECRET_PREFIX = "whsec_"
PUBLIC_KEY_PREFIX = "whpk_"
DEFAULT_TOLERANCE = timedelta(minutes=5)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

Reason = Literal[
    "missing-header",
    "invalid-timestamp",
    "timestamp-too-old",
    "timestamp-too-new",
    "no-matching-signature",
    "invalid-payload",
    "wrong-organisation",
    "invalid-key",
]


class WebhookVerificationError(ValueError):
    """The request is not a valid webhook for these keys; answer it with 4xx and do not act on it.

    `reason` says which check failed (one of `Reason`); the message says it in words and never contains a key."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def verify(
    keys: str | bytes | Iterable[str | bytes],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
    expect_organisation: str | None = None,
) -> dict[str, Any]:
    """The webhook's JSON payload, once a signature of `headers` over `body` matches one of `keys`.

    `keys`: a `whsec_` secret (`v1`), a `whpk_` public key (`v1a`), raw secret bytes (`v1`), or several of them.
    `headers`: the request's headers, any case. `now`: the receiver's clock (default: the system's, in UTC).
    Raises `WebhookVerificationError`."""
    secrets, public_keys = _keys(keys)
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signature = (lowered.get(h, "").strip() for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    missing = [h for h, v in (("webhook-id", msg_id), ("webhook-timestamp", stamp), ("webhook-signature", signature)) if not v]
    if missing:
        raise WebhookVerificationError("missing-header", f"missing header(s): {', '.join(missing)}")
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookVerificationError("invalid-timestamp", "webhook-timestamp is not an integer Unix time in seconds")
    sent = datetime.fromtimestamp(int(stamp), UTC)
    current = (now or datetime.now(UTC)).astimezone(UTC)
    if sent < current - tolerance:
        raise WebhookVerificationError("timestamp-too-old", f"webhook-timestamp is more than {tolerance} in the past")
    if sent > current + tolerance:
        raise WebhookVerificationError("timestamp-too-new", f"webhook-timestamp is more than {tolerance} in the future")

    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    content = f"{msg_id}.{stamp}.".encode() + raw
    if not _any_signature_matches(signature, content, secrets, public_keys):
        raise WebhookVerificationError("no-matching-signature", "no signature in webhook-signature matches the keys given")

    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WebhookVerificationError("invalid-payload", "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookVerificationError("invalid-payload", "the body is not a JSON object")
    if expect_organisation is not None:
        data = payload.get("data")
        addressed = data.get("organisation") if isinstance(data, dict) else None
        if addressed != expect_organisation:
            raise WebhookVerificationError("wrong-organisation", f"the webhook is addressed to {addressed!r}, not {expect_organisation!r}")
    return payload


def _keys(keys: str | bytes | Iterable[str | bytes]) -> tuple[list[bytes], list[Ed25519PublicKey]]:
    given: list[str | bytes] = [keys] if isinstance(keys, str | bytes) else list(keys)
    secrets: list[bytes] = []
    public_keys: list[Ed25519PublicKey] = []
    for key in given:
        if isinstance(key, bytes):
            secret = key
        elif key.startswith(PUBLIC_KEY_PREFIX):
            raw = _b64(key.removeprefix(PUBLIC_KEY_PREFIX), "a whpk_ public key")
            if len(raw) != 32:
                raise WebhookVerificationError("invalid-key", "a whpk_ public key must hold 32 bytes (Ed25519)")
            public_keys.append(Ed25519PublicKey.from_public_bytes(raw))
            continue
        else:
            secret = _b64(key.removeprefix(SECRET_PREFIX), "a whsec_ secret")
        if not secret:
            raise WebhookVerificationError("invalid-key", "an empty webhook secret verifies nothing")
        secrets.append(secret)
    if not secrets and not public_keys:
        raise WebhookVerificationError("invalid-key", "no key given")
    return secrets, public_keys


def _b64(text: str, what: str) -> bytes:
    text = text.strip()
    try:
        # Padding is often lost when a secret is copied: put it back, then decode strictly.
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("invalid-key", f"{what} is not base64") from None


def _any_signature_matches(header: str, content: bytes, secrets: list[bytes], public_keys: list[Ed25519PublicKey]) -> bool:
    expected = [hmac.new(s, content, hashlib.sha256).digest() for s in secrets]
    matched = False
    for entry in header.split(" "):
        version, sep, value = entry.partition(",")
        if not sep:
            continue  # not "<version>,<signature>": skip it, as an unknown version is skipped
        try:
            sig = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if version == "v1":
            # compare_digest: no early exit on the first differing byte (the spec's constant-time comparison).
            for e in expected:
                matched |= hmac.compare_digest(e, sig)
        elif version == "v1a":
            for pk in public_keys:
                try:
                    pk.verify(sig, content)
                    matched = True
                except InvalidSignature:
                    pass
    return matched
