"""The signing key: from configuration, or a development key generated once (mode 0600) and reused."""

from __future__ import annotations

import base64
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from services.audit.adapters.keys import SigningKeyError, load_signing_key, pem
from services.audit.config import DEFAULT_KEY_FILE, REPO
from services.audit.domain.tree_head import key_id


def kid(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key())


def test_development_key_is_generated_once_and_reused(tmp_path):
    path = tmp_path / "audit" / "signing-key.pem"
    first = load_signing_key(None, path, generate=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kid(load_signing_key(None, path, generate=True)) == kid(first)


def test_configured_key_wins_and_missing_key_is_an_error_without_generation(tmp_path):
    key = Ed25519PrivateKey.generate()
    raw = base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
    assert kid(load_signing_key(raw, tmp_path / "unused.pem", generate=True)) == kid(key)
    assert kid(load_signing_key(pem(key).decode(), tmp_path / "unused.pem", generate=True)) == kid(key)
    assert not (tmp_path / "unused.pem").exists()
    with pytest.raises(SigningKeyError, match="no audit signing key"):
        load_signing_key(None, tmp_path / "absent.pem", generate=False)
    with pytest.raises(SigningKeyError, match="neither PEM nor base64"):
        load_signing_key("not a key", tmp_path / "x.pem", generate=False)


def test_default_key_lives_in_the_ignored_run_directory():
    assert DEFAULT_KEY_FILE.is_relative_to(REPO / ".run")
    assert ".run/" in (REPO / ".gitignore").read_text().split()
