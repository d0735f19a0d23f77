"""The service's keys: the key-encryption keys (KEKs) that protect webhook secrets at rest, and the Ed25519
key that signs every webhook (Standard Webhooks `v1a`).

Both come from configuration. Without configuration and with `generate_keys` on (development), each is
generated once into `.run/notifications/` (mode 0600) with a loud warning, as the audit service does with
its signing key; with `generate_keys` off, a missing key stops the service at start (`KeyConfigError`, exit 2).

The KEKs are the kit's `lotse_kit.keyring.Keyring` (AES-256-GCM, KEK ids, rotation), the one place for
"encrypted at rest". What is notifications' own: the associated data that binds a sealed webhook secret to
its endpoint id (a ciphertext copied onto another endpoint does not decrypt), the settings' names, and the
purpose `notifications` from which a KEK configured without an id gets its id
(`kek-` + the first 12 hex digits of SHA-256(b"lotse-notifications-kek-id:" + key), as before the kit had it).
Each ciphertext is stored with the id of the KEK that sealed it; old KEKs stay configured
(`secret_old_keks`) until the re-wrap job has moved every secret to the current one.

No function here logs or puts a key or a secret into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat, load_pem_private_key

from lotse_kit.keyring import KeyConfigError, Keyring, KeyUnavailable, SealedValue, load_keyring, read_or_generate

__all__ = [
    "KEK_PURPOSE",
    "KeyConfigError",
    "Keyring",
    "SealedValue",
    "SecretUnavailable",
    "SigningKey",
    "load_secret_keyring",
    "load_signing_keys",
    "open_secret",
    "rewrap_secret",
    "seal_secret",
]

log = logging.getLogger(__name__)

KEK_PURPOSE = "notifications"  # derived KEK ids: kek-<sha256(b"lotse-notifications-kek-id:" + key)[:12]>
KEK_SETTING = "LOTSE_NOTIFICATIONS_SECRET_KEK"
OLD_KEKS_SETTING = "LOTSE_NOTIFICATIONS_SECRET_OLD_KEKS"
GENERATE_SETTING = "LOTSE_NOTIFICATIONS_GENERATE_KEYS"
SECRET_KEY_PREFIX = "whsk_"  # Standard Webhooks: an Ed25519 secret key
PUBLIC_KEY_PREFIX = "whpk_"  # Standard Webhooks: an Ed25519 public key


class SecretUnavailable(Exception):
    """A stored secret cannot be decrypted: its KEK is not configured, or the ciphertext was altered or moved."""


# ---------------------------------------------------------------- webhook secrets at rest
def associated_data(endpoint_id: uuid.UUID) -> bytes:
    """What a sealed secret is bound to: its endpoint."""
    return b"lotse-notifications/webhook-secret/v1:" + str(endpoint_id).encode()


def seal_secret(keyring: Keyring, secret: str, endpoint_id: uuid.UUID) -> SealedValue:
    """The secret under the current KEK, bound to its endpoint."""
    return keyring.seal(secret.encode(), associated_data(endpoint_id))


def open_secret(keyring: Keyring, sealed: SealedValue, endpoint_id: uuid.UUID) -> str:
    """The secret, or `SecretUnavailable` naming the KEK id (never the key or the secret)."""
    if sealed.kek_id not in keyring.known_ids:
        raise SecretUnavailable(
            f"the webhook secret is encrypted under key-encryption key {sealed.kek_id!r}, which is not configured "
            f"({KEK_SETTING} / SECRET_OLD_KEKS)"
        )
    try:
        return keyring.open(sealed, associated_data(endpoint_id)).decode()
    except (KeyUnavailable, UnicodeDecodeError):
        raise SecretUnavailable(
            f"the webhook secret does not decrypt under key-encryption key {sealed.kek_id!r} for this endpoint"
        ) from None


def rewrap_secret(keyring: Keyring, sealed: SealedValue, endpoint_id: uuid.UUID) -> SealedValue:
    """The same secret under the current KEK (unchanged when it already is)."""
    if sealed.kek_id == keyring.current_id:
        return sealed
    return seal_secret(keyring, open_secret(keyring, sealed, endpoint_id), endpoint_id)


def load_secret_keyring(kek: str | None, kek_id: str | None, old_keks: Mapping[str, str], path: Path, *, generate: bool) -> Keyring:
    """The KEKs from configuration (`kek` inline, else the file at `path`, generated there if allowed)."""
    return load_keyring(
        kek,
        kek_id,
        old_keks,
        path,
        generate=generate,
        setting=KEK_SETTING,
        purpose=KEK_PURPOSE,
        old_setting=OLD_KEKS_SETTING,
        generate_setting=GENERATE_SETTING,
    )


# ---------------------------------------------------------------- the webhook signing key (v1a)
@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key that signs webhooks (`v1a`); its public key is published as `whpk_<base64>`."""

    private: Ed25519PrivateKey = field(repr=False)

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def public_key(self) -> str:
        return PUBLIC_KEY_PREFIX + base64.b64encode(self.public_bytes).decode()

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.public_bytes).hexdigest()[:16]

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private.sign(data)).decode()


def signing_key_text(key: Ed25519PrivateKey) -> str:
    """Standard Webhooks' serialisation of an Ed25519 secret key: `whsk_` and the base64 of its 32-byte seed."""
    return SECRET_KEY_PREFIX + base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()


def parse_signing_key(text: str, what: str) -> Ed25519PrivateKey:
    """`whsk_<base64>` (32-byte seed, or 64 bytes seed and public key), bare base64 of the same, or PEM (PKCS#8)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise KeyConfigError(f"{what} is not a readable PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyConfigError(f"{what} must be an Ed25519 key")
        return key
    body = text.removeprefix(SECRET_KEY_PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{what} is neither whsk_<base64>, base64 nor PEM") from None
    if len(raw) not in (32, 64):
        raise KeyConfigError(f"{what} must decode to a 32-byte Ed25519 seed (or 64 bytes: seed and public key)")
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) != raw[32:]:
        raise KeyConfigError(f"{what}: the public half does not belong to the seed")
    return key


def load_signing_keys(inline: str | None, previous: str | None, path: Path, *, generate: bool) -> list[SigningKey]:
    """The current signing key first, then the previous one while a rotation is under way."""
    if inline:
        current = parse_signing_key(inline, "LOTSE_NOTIFICATIONS_WEBHOOK_SIGNING_KEY")
        source = "configuration"
    else:
        text = read_or_generate(
            path,
            generate=generate,
            make=lambda: signing_key_text(Ed25519PrivateKey.generate()) + "\n",
            what="webhook signing key",
            setting="LOTSE_NOTIFICATIONS_WEBHOOK_SIGNING_KEY",
            generate_setting=GENERATE_SETTING,
        )
        current = parse_signing_key(text, f"the webhook signing key in {path}")
        source = str(path)
    keys = [SigningKey(current)]
    if previous:
        keys.append(SigningKey(parse_signing_key(previous, "LOTSE_NOTIFICATIONS_WEBHOOK_SIGNING_PREVIOUS_KEY")))
    log.info("webhook signing keys", extra={"key_ids": [k.key_id for k in keys], "source": source})
    return keys
