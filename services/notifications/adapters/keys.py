"""The service's keys: the key-encryption keys (KEKs) that protect webhook secrets at rest, and the Ed25519
key that signs every webhook (Standard Webhooks `v1a`).

Both come from configuration. Without configuration and with `generate_keys` on (development), each is
generated once into `.run/notifications/` (mode 0600) with a loud warning, as the audit service does with
its signing key; with `generate_keys` off, a missing key stops the service at start (`KeyConfigError`, exit 2).

Webhook secrets are sealed with AES-256-GCM: a random 96-bit nonce per encryption, and associated data
that binds the ciphertext to its endpoint id, so a ciphertext copied onto another endpoint does not decrypt.
Each ciphertext is stored with the id of the KEK that sealed it; old KEKs stay configured
(`secret_old_keks`) until the re-wrap job has moved every secret to the current one.

No function here logs or puts a key or a secret into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat, load_pem_private_key

log = logging.getLogger(__name__)

KEK_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, the GCM standard nonce
KEK_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SECRET_KEY_PREFIX = "whsk_"  # Standard Webhooks: an Ed25519 secret key
PUBLIC_KEY_PREFIX = "whpk_"  # Standard Webhooks: an Ed25519 public key


class KeyConfigError(RuntimeError):
    """A key (or the webhook CA file) is missing or malformed in the configuration: the service does not start (exit 2)."""


class SecretUnavailable(Exception):
    """A stored secret cannot be decrypted: its KEK is not configured, or the ciphertext was altered or moved."""


# ---------------------------------------------------------------- webhook secrets at rest
@dataclass(frozen=True)
class Sealed:
    kek_id: str
    nonce: bytes
    ciphertext: bytes  # includes the 16-byte GCM tag


def associated_data(endpoint_id: uuid.UUID) -> bytes:
    """What a sealed secret is bound to: its endpoint."""
    return b"lotse-notifications/webhook-secret/v1:" + str(endpoint_id).encode()


@dataclass(frozen=True)
class SecretBox:
    """Seals webhook secrets under the current KEK; opens what any configured KEK (current or old) sealed."""

    current_id: str
    _keys: Mapping[str, AESGCM] = field(repr=False)

    @classmethod
    def of(cls, current_id: str, current: bytes, old: Mapping[str, bytes] | None = None) -> SecretBox:
        keys = {kid: AESGCM(key) for kid, key in (old or {}).items()}
        keys[current_id] = AESGCM(current)
        return cls(current_id, keys)

    @property
    def known_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def seal(self, secret: str, endpoint_id: uuid.UUID) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._keys[self.current_id].encrypt(nonce, secret.encode(), associated_data(endpoint_id))
        return Sealed(self.current_id, nonce, ciphertext)

    def open(self, sealed: Sealed, endpoint_id: uuid.UUID) -> str:
        aead = self._keys.get(sealed.kek_id)
        if aead is None:
            raise SecretUnavailable(
                f"the webhook secret is encrypted under key-encryption key {sealed.kek_id!r}, which is not configured "
                "(LOTSE_NOTIFICATIONS_SECRET_KEK / SECRET_OLD_KEKS)"
            )
        try:
            return aead.decrypt(sealed.nonce, sealed.ciphertext, associated_data(endpoint_id)).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise SecretUnavailable(
                f"the webhook secret does not decrypt under key-encryption key {sealed.kek_id!r} for this endpoint"
            ) from None


def kek_fingerprint(key: bytes) -> str:
    """A key id derived from the key, for a KEK configured without `secret_kek_id`."""
    return "kek-" + hashlib.sha256(b"lotse-notifications-kek-id:" + key).hexdigest()[:12]


def parse_kek(text: str, what: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{what} is not base64") from None
    if len(key) != KEK_BYTES:
        raise KeyConfigError(f"{what} must be base64 of {KEK_BYTES} bytes (AES-256), got {len(key)} bytes")
    return key


def load_secret_box(kek: str | None, kek_id: str | None, old_keks: Mapping[str, str], path: Path, *, generate: bool) -> SecretBox:
    """The KEKs from configuration (`kek` inline, else the file at `path`, generated there if allowed)."""
    if kek:
        key = parse_kek(kek, "LOTSE_NOTIFICATIONS_SECRET_KEK")
        source = "configuration"
    else:
        text = _read_or_generate(
            path,
            generate=generate,
            make=lambda: base64.b64encode(os.urandom(KEK_BYTES)).decode() + "\n",
            what="webhook secret key-encryption key",
            setting="LOTSE_NOTIFICATIONS_SECRET_KEK",
        )
        key = parse_kek(text, f"the key-encryption key in {path}")
        source = str(path)
    current_id = kek_id or kek_fingerprint(key)
    if not KEK_ID.fullmatch(current_id):
        raise KeyConfigError("LOTSE_NOTIFICATIONS_SECRET_KEK_ID must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
    old: dict[str, bytes] = {}
    for kid, text in old_keks.items():
        if not KEK_ID.fullmatch(kid):
            raise KeyConfigError(f"LOTSE_NOTIFICATIONS_SECRET_OLD_KEKS: {kid[:64]!r} is not a key id (A-Z, a-z, 0-9, '.', '_', '-')")
        old_key = parse_kek(text, f"LOTSE_NOTIFICATIONS_SECRET_OLD_KEKS[{kid!r}]")
        if kid == current_id and old_key != key:
            raise KeyConfigError(f"LOTSE_NOTIFICATIONS_SECRET_OLD_KEKS names the current key id {kid!r} with another key")
        old[kid] = old_key
    old.pop(current_id, None)
    log.info("webhook secret key-encryption keys", extra={"kek_id": current_id, "source": source, "old_kek_ids": sorted(old)})
    return SecretBox.of(current_id, key, old)


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
        text = _read_or_generate(
            path,
            generate=generate,
            make=lambda: signing_key_text(Ed25519PrivateKey.generate()) + "\n",
            what="webhook signing key",
            setting="LOTSE_NOTIFICATIONS_WEBHOOK_SIGNING_KEY",
        )
        current = parse_signing_key(text, f"the webhook signing key in {path}")
        source = str(path)
    keys = [SigningKey(current)]
    if previous:
        keys.append(SigningKey(parse_signing_key(previous, "LOTSE_NOTIFICATIONS_WEBHOOK_SIGNING_PREVIOUS_KEY")))
    log.info("webhook signing keys", extra={"key_ids": [k.key_id for k in keys], "source": source})
    return keys


# ---------------------------------------------------------------- development keys
def _read_or_generate(path: Path, *, generate: bool, make: Callable[[], str], what: str, setting: str) -> str:
    if path.exists():
        return path.read_text(encoding="ascii")
    if not generate:
        raise KeyConfigError(f"no {what}: set {setting} (or create {path})")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written completely under a temporary name, then linked into place: a replica starting at the same
    # moment either links first (and we read its key) or finds the finished file, never a half-written one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, make().encode("ascii"))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text(encoding="ascii")
    finally:
        tmp.unlink()
    log.warning(
        f"GENERATED A DEVELOPMENT {what.upper()}: fine on a laptop, wrong in production. Configure {setting} "
        "and set LOTSE_NOTIFICATIONS_GENERATE_KEYS=false",
        extra={"path": str(path)},
    )
    return path.read_text(encoding="ascii")
