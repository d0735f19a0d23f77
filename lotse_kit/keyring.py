"""Key-encryption keys (KEKs) from configuration, with rotation: one place for "encrypted at rest".

A `Keyring` seals bytes with AES-256-GCM under the current KEK (a random 96-bit nonce per seal, and
associated data that binds the ciphertext to what it belongs to, e.g. a client id, so a ciphertext moved
elsewhere does not open) and opens what any configured KEK sealed, current or old. Each sealed value
carries the id of the KEK that sealed it; after a rotation (a new current KEK, the old one listed under
its id among the old KEKs) a service re-wraps its values in the background and the old KEK is removed
once nothing is sealed under it any more.

Services use it for small secrets: intake wraps each client's data key (envelope encryption, so a KEK
rotation re-wraps 32-byte keys, never the data), notifications its webhook secrets.

Configuration: the current KEK as base64 of 32 bytes with an optional id (default: derived from the
key), old KEKs as `{"<id>": "<base64>"}`. Without a configured KEK and with generation allowed
(development), one is generated once into a file (mode 0600) with a loud warning; with generation off
a missing KEK is a `KeyConfigError` (the service does not start). Nothing here logs a key or puts one
into an exception message.
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

KEK_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, the GCM standard nonce
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyConfigError(RuntimeError):
    """A key is missing or malformed in the configuration: the service does not start (exit 2)."""


class KeyUnavailable(Exception):
    """A sealed value cannot be opened: its KEK is not configured, or the ciphertext was altered or moved."""


@dataclass(frozen=True)
class SealedValue:
    kek_id: str
    nonce: bytes
    ciphertext: bytes  # includes the 16-byte GCM tag


@dataclass(frozen=True)
class Keyring:
    """Seals under the current KEK; opens what any configured KEK (current or old) sealed."""

    current_id: str
    _keys: Mapping[str, AESGCM] = field(repr=False)

    @classmethod
    def of(cls, current_id: str, current: bytes, old: Mapping[str, bytes] | None = None) -> Keyring:
        keys = {kid: AESGCM(key) for kid, key in (old or {}).items()}
        keys[current_id] = AESGCM(current)
        return cls(current_id, keys)

    @classmethod
    def generate(cls, current_id: str = "test-kek") -> Keyring:
        return cls.of(current_id, os.urandom(KEK_BYTES))

    @property
    def known_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def seal(self, plaintext: bytes, associated_data: bytes) -> SealedValue:
        nonce = os.urandom(NONCE_BYTES)
        return SealedValue(self.current_id, nonce, self._keys[self.current_id].encrypt(nonce, plaintext, associated_data))

    def open(self, sealed: SealedValue, associated_data: bytes) -> bytes:
        aead = self._keys.get(sealed.kek_id)
        if aead is None:
            raise KeyUnavailable(f"sealed under key-encryption key {sealed.kek_id!r}, which is not configured")
        try:
            return aead.decrypt(sealed.nonce, sealed.ciphertext, associated_data)
        except (InvalidTag, ValueError):
            raise KeyUnavailable(f"does not open under key-encryption key {sealed.kek_id!r} for what it is bound to") from None

    def rewrap(self, sealed: SealedValue, associated_data: bytes) -> SealedValue:
        """The same plaintext under the current KEK (unchanged when it already is)."""
        if sealed.kek_id == self.current_id:
            return sealed
        return self.seal(self.open(sealed, associated_data), associated_data)


def kek_fingerprint(key: bytes, purpose: str) -> str:
    """A key id derived from the key, for a KEK configured without an id."""
    return "kek-" + hashlib.sha256(f"lotse-{purpose}-kek-id:".encode() + key).hexdigest()[:12]


def parse_kek(text: str, what: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{what} is not base64") from None
    if len(key) != KEK_BYTES:
        raise KeyConfigError(f"{what} must be base64 of {KEK_BYTES} bytes (AES-256), got {len(key)} bytes")
    return key


def load_keyring(
    kek: str | None,
    kek_id: str | None,
    old_keks: Mapping[str, str],
    path: Path,
    *,
    generate: bool,
    setting: str,
    purpose: str,
    old_setting: str | None = None,
    generate_setting: str | None = None,
) -> Keyring:
    """The KEKs from configuration: `kek` inline (the setting named `setting`), else the file at `path`,
    generated there if allowed; `old_keks` are `{id: base64}` (setting `<setting>`'s `OLD_KEKS` sibling).
    `old_setting` and `generate_setting` name the settings of the old KEKs and of key generation in messages."""
    if kek:
        key = parse_kek(kek, setting)
        source = "configuration"
    else:
        text = read_or_generate(
            path,
            generate=generate,
            make=lambda: base64.b64encode(os.urandom(KEK_BYTES)).decode() + "\n",
            what=f"{purpose} key-encryption key",
            setting=setting,
            generate_setting=generate_setting,
        )
        key = parse_kek(text, f"the key-encryption key in {path}")
        source = str(path)
    current_id = kek_id or kek_fingerprint(key, purpose)
    if not KEY_ID.fullmatch(current_id):
        raise KeyConfigError(f"{setting}_ID must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
    old: dict[str, bytes] = {}
    for kid, value in old_keks.items():
        if not KEY_ID.fullmatch(kid):
            raise KeyConfigError(f"{old_setting or 'old key-encryption keys'}: {kid[:64]!r} is not a key id (A-Z, a-z, 0-9, '.', '_', '-')")
        old_key = parse_kek(value, f"{old_setting}[{kid!r}]" if old_setting else f"old key-encryption key {kid!r}")
        if kid == current_id and old_key != key:
            names = f"{old_setting} names" if old_setting else "the old key-encryption keys name"
            raise KeyConfigError(f"{names} the current key id {kid!r} with another key")
        old[kid] = old_key
    old.pop(current_id, None)
    log.info(f"{purpose} key-encryption keys", extra={"kek_id": current_id, "source": source, "old_kek_ids": sorted(old)})
    return Keyring.of(current_id, key, old)


def read_or_generate(
    path: Path, *, generate: bool, make: Callable[[], str], what: str, setting: str, generate_setting: str | None = None
) -> str:
    """A development key file: read it, or (if allowed) write a new one once, safely against a concurrent start.
    `generate_setting` names the setting that switches generation off, for the warning."""
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
        f"GENERATED A DEVELOPMENT {what.upper()}: fine on a laptop, wrong in production. Configure {setting} and "
        + (f"set {generate_setting}=false" if generate_setting else "switch key generation off"),
        extra={"path": str(path)},
    )
    return path.read_text(encoding="ascii")
