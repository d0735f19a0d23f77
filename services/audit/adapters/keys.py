"""The Ed25519 signing key: from configuration, or a development key generated into `.run/`."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key

from ..domain.tree_head import key_id

log = logging.getLogger(__name__)


class SigningKeyError(RuntimeError):
    pass


def parse_private_key(text: str) -> Ed25519PrivateKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError("the audit signing key must be an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError("the audit signing key is neither PEM nor base64") from exc
    if len(raw) != 32:
        raise SigningKeyError("a base64 Ed25519 key must decode to 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def load_signing_key(inline: str | None, path: Path, *, generate: bool) -> Ed25519PrivateKey:
    if inline:
        key = parse_private_key(inline)
        log.info("audit signing key from configuration", extra={"key_id": key_id(key.public_key())})
        return key
    if path.exists():
        key = parse_private_key(path.read_text())
        log.info("audit signing key loaded", extra={"path": str(path), "key_id": key_id(key.public_key())})
        return key
    if not generate:
        raise SigningKeyError(f"no audit signing key: set LOTSE_AUDIT_SIGNING_KEY or create {path}")
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another replica generated it in between
        return parse_private_key(path.read_text())
    try:
        os.write(fd, pem(key))
    finally:
        os.close(fd)
    log.warning("generated a development audit signing key", extra={"path": str(path), "key_id": key_id(key.public_key())})
    return key
