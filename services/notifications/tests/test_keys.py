"""The service's keys without infrastructure: sealing webhook secrets (AES-256-GCM), KEK rotation, the Ed25519
signing key (v1a), development keys generated into files, and settings read from the environment."""

from __future__ import annotations

import base64
import logging
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from lotse_kit.keyring import kek_fingerprint
from services.notifications.adapters.keys import (
    KEK_PURPOSE,
    KeyConfigError,
    Keyring,
    SealedValue,
    SecretUnavailable,
    load_secret_keyring,
    load_signing_keys,
    open_secret,
    parse_signing_key,
    rewrap_secret,
    seal_secret,
)
from services.notifications.adapters.senders import sign
from services.notifications.config import NotificationsSettings
from services.notifications.handlers.endpoints import new_secret

KEK_1, KEK_2 = os.urandom(32), os.urandom(32)
SECRET = new_secret()
EP = uuid.uuid4()


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def test_a_sealed_secret_opens_only_for_its_endpoint_and_unaltered():
    box = Keyring.of("k1", KEK_1)
    sealed = seal_secret(box, SECRET, EP)
    assert sealed.kek_id == "k1" and len(sealed.nonce) == 12 and len(sealed.ciphertext) == len(SECRET) + 16
    assert SECRET.encode() not in sealed.ciphertext
    assert open_secret(box, sealed, EP) == SECRET
    again = seal_secret(box, SECRET, EP)
    assert again.nonce != sealed.nonce and again.ciphertext != sealed.ciphertext  # a fresh random nonce every time

    with pytest.raises(SecretUnavailable, match="does not decrypt") as exc:
        open_secret(box, sealed, uuid.uuid4())  # copied onto another endpoint: the associated data differs
    assert SECRET not in str(exc.value)
    tampered = SealedValue(sealed.kek_id, sealed.nonce, bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:])
    with pytest.raises(SecretUnavailable):
        open_secret(box, tampered, EP)


def test_kek_rotation_opens_old_secrets_and_seals_new_ones_under_the_new_key():
    before = seal_secret(Keyring.of("k1", KEK_1), SECRET, EP)
    rotated = Keyring.of("k2", KEK_2, {"k1": KEK_1})
    assert open_secret(rotated, before, EP) == SECRET
    after = seal_secret(rotated, SECRET, EP)
    assert after.kek_id == "k2" and rotated.known_ids == {"k1", "k2"}
    rewrapped = rewrap_secret(rotated, before, EP)
    assert rewrapped.kek_id == "k2" and open_secret(Keyring.of("k2", KEK_2), rewrapped, EP) == SECRET
    assert rewrap_secret(rotated, after, EP) is after  # already under the current KEK
    with pytest.raises(SecretUnavailable, match="'k1', which is not configured"):
        open_secret(Keyring.of("k2", KEK_2), before, EP)  # the old KEK removed too early


def test_keks_from_configuration(tmp_path):
    box = load_secret_keyring(b64(KEK_2), "2026-03", {"2025-01": b64(KEK_1)}, tmp_path / "unused", generate=False)
    assert box.current_id == "2026-03" and box.known_ids == {"2025-01", "2026-03"}
    assert open_secret(box, seal_secret(Keyring.of("2025-01", KEK_1), SECRET, EP), EP) == SECRET
    assert not (tmp_path / "unused").exists()
    # Without an id the key names itself, stably.
    assert load_secret_keyring(b64(KEK_1), None, {}, tmp_path / "unused", generate=False).current_id == kek_fingerprint(KEK_1, KEK_PURPOSE)


# A KEK, a secret sealed under it and the id derived from it, as the service's own SecretBox (before the kit's
# keyring) wrote them: configurations without SECRET_KEK_ID and stored secrets must keep working unchanged.
PINNED_KEK = bytes(range(32))
PINNED_KEK_ID = "kek-ccd98d5c5e04"  # "kek-" + sha256(b"lotse-notifications-kek-id:" + key)[:12]
PINNED_ENDPOINT = uuid.UUID("00000000-0000-4000-8000-000000000001")
PINNED_NONCE = bytes(range(12))
PINNED_CIPHERTEXT = bytes.fromhex(
    "306aa57ea6ba835acc00d6caf0a8392cc297c675b13a1e3d7926a4c45c2841f34051efbdee8053d935e53eacc9c66979af64ea3926e8862ce7ad3c33d8947e721156"
)


def test_kek_ids_and_stored_secrets_of_existing_configurations_stay_the_same(tmp_path):
    assert kek_fingerprint(PINNED_KEK, KEK_PURPOSE) == PINNED_KEK_ID
    assert kek_fingerprint(b"lotse-notifications-test-kek-32B", KEK_PURPOSE) == "kek-cdbd9b7ed6fa"
    box = load_secret_keyring(b64(PINNED_KEK), None, {}, tmp_path / "unused", generate=False)
    assert box.current_id == PINNED_KEK_ID
    stored = SealedValue(PINNED_KEK_ID, PINNED_NONCE, PINNED_CIPHERTEXT)
    assert open_secret(box, stored, PINNED_ENDPOINT) == "whsec_" + b64(bytes(32))
    # The same key in a file (development) gets the same id.
    (tmp_path / "secret-kek").write_text(b64(PINNED_KEK) + "\n")
    assert load_secret_keyring(None, None, {}, tmp_path / "secret-kek", generate=False).current_id == PINNED_KEK_ID


@pytest.mark.parametrize(
    ("kek", "kek_id", "old", "words"),
    [
        (b64(os.urandom(16)), None, {}, "must be base64 of 32 bytes"),
        ("not base64!", None, {}, "is not base64"),
        (b64(KEK_1), "bad id!", {}, "SECRET_KEK_ID must be"),
        (b64(KEK_1), "k1", {"k1": b64(KEK_2)}, "names the current key id 'k1' with another key"),
        (b64(KEK_1), "k1", {"k0": "short"}, "SECRET_OLD_KEKS['k0']"),
    ],
    ids=["short", "not-base64", "bad-id", "current-id-reused", "bad-old"],
)
def test_malformed_keks_stop_the_service_without_showing_the_key(tmp_path, kek, kek_id, old, words):
    with pytest.raises(KeyConfigError) as exc:
        load_secret_keyring(kek, kek_id, old, tmp_path / "kek", generate=True)
    assert words in str(exc.value)
    for value in [kek, *old.values()]:
        assert value not in str(exc.value)


def test_development_keys_are_generated_once_with_mode_0600_and_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    kek_file, signing_file = tmp_path / "run" / "secret-kek", tmp_path / "run" / "webhook-signing-key"
    box = load_secret_keyring(None, None, {}, kek_file, generate=True)
    [key] = load_signing_keys(None, None, signing_file, generate=True)
    for f in (kek_file, signing_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(kek_file.parent.stat().st_mode) == 0o700
    assert signing_file.read_text().startswith("whsk_")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("GENERATED A DEVELOPMENT" in w and "LOTSE_NOTIFICATIONS_GENERATE_KEYS=false" in w for w in warnings)
    assert not any(kek_file.read_text().strip() in str(r.__dict__) for r in caplog.records)

    caplog.clear()  # the next start reads the same keys, quietly
    assert open_secret(load_secret_keyring(None, None, {}, kek_file, generate=True), seal_secret(box, SECRET, EP), EP) == SECRET
    assert load_signing_keys(None, None, signing_file, generate=True)[0].public_key == key.public_key
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert sorted(p.name for p in kek_file.parent.iterdir()) == ["secret-kek", "webhook-signing-key"]  # no temporary files left


def test_without_keys_and_without_generation_the_service_refuses_to_start(tmp_path):
    with pytest.raises(KeyConfigError, match="set LOTSE_NOTIFICATIONS_SECRET_KEK"):
        load_secret_keyring(None, None, {}, tmp_path / "secret-kek", generate=False)
    with pytest.raises(KeyConfigError, match="set LOTSE_NOTIFICATIONS_WEBHOOK_SIGNING_KEY"):
        load_signing_keys(None, None, tmp_path / "webhook-signing-key", generate=False)
    assert list(tmp_path.iterdir()) == []


def test_signing_keys_read_every_serialisation_and_sign_v1a():
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    for text in (f"whsk_{b64(seed)}", b64(seed), f"whsk_{b64(seed + public)}", pem):
        assert parse_signing_key(text, "key").public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == public
    with pytest.raises(KeyConfigError, match="does not belong"):
        parse_signing_key(f"whsk_{b64(seed + bytes(32))}", "key")
    with pytest.raises(KeyConfigError, match="32-byte Ed25519 seed"):
        parse_signing_key(f"whsk_{b64(seed[:16])}", "key")

    previous = Ed25519PrivateKey.generate()
    prev_text = "whsk_" + b64(previous.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    keys = load_signing_keys(f"whsk_{b64(seed)}", prev_text, Path("/nonexistent"), generate=False)
    assert keys[0].public_key == "whpk_" + b64(public) and len(keys) == 2
    ts = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    header = sign(["whsec_" + b64(bytes(32))], "msg_1", ts, b'{"a":1}', keys)
    v1, v1a_current, v1a_previous = header.split(" ")
    assert v1.startswith("v1,") and v1a_current.startswith("v1a,") and v1a_previous.startswith("v1a,")
    content = f"msg_1.{int(ts.timestamp())}.".encode() + b'{"a":1}'
    Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(v1a_current[4:]), content)
    previous.public_key().verify(base64.b64decode(v1a_previous[4:]), content)


def test_key_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOTSE_NOTIFICATIONS_SECRET_KEK", b64(KEK_2))
    monkeypatch.setenv("LOTSE_NOTIFICATIONS_SECRET_KEK_ID", "2026-03")
    monkeypatch.setenv("LOTSE_NOTIFICATIONS_SECRET_OLD_KEKS", f'{{"2025-01": "{b64(KEK_1)}"}}')
    monkeypatch.setenv("LOTSE_NOTIFICATIONS_GENERATE_KEYS", "false")
    s = NotificationsSettings()
    assert s.secret_kek is not None and s.secret_kek.get_secret_value() == b64(KEK_2) and s.secret_kek_id == "2026-03"
    assert {k: v.get_secret_value() for k, v in s.secret_old_keks.items()} == {"2025-01": b64(KEK_1)}
    assert s.generate_keys is False
    assert b64(KEK_1) not in repr(s) and b64(KEK_2) not in repr(s)
