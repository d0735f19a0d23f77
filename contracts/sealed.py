"""Personal data sealed to its recipient, and acknowledgements signed by a partner (JOSE, with joserfc).

The personal-data part of every partner inbox record is a JWE (RFC 7516) in compact serialisation:
`ECDH-ES+A256KW` key agreement with the recipient organisation's registered P-256 key and `A256GCM`
content encryption; the header's `kid` names the key, so a partner with several active keys (during
a rotation) knows which private key opens it. The plaintext is the JSON of `SealedContent`. Brokers,
their disks, backups and the platform's operators only ever see ciphertext; the audit log keeps the
SHA-256 of the record as sent.

A partner acknowledges a forwarded withdrawal or erasure with a JWS (RFC 7515, compact, `ES256`)
over `{"client_id": ..., "event_id": ...}`, signed with its registered signing key; Lotse verifies it
against the keys the organisation registered (`use: "sig"`).

This module is part of the contracts on purpose: a partner system needs exactly this code to read
its inbox (the partner kit uses it), and nothing of Lotse's services.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from pydantic import BaseModel, ConfigDict, Field

JWE_ALG = "ECDH-ES+A256KW"
JWE_ENC = "A256GCM"
JWS_ALG = "ES256"
KeyUse = Literal["enc", "sig"]


class PublicKey(BaseModel):
    """A partner's registered public key (a JWK, EC P-256), for sealing (`enc`) or for its signatures (`sig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kid: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    use: KeyUse
    jwk: dict[str, Any] = Field(description="The public JWK: kty EC, crv P-256, x, y. A private member (d) is refused.")

    def key(self) -> ECKey:
        if "d" in self.jwk:
            raise ValueError("a private key was given where a public key belongs")
        if self.jwk.get("kty") != "EC" or self.jwk.get("crv") != "P-256":
            raise ValueError("only EC P-256 keys are accepted")
        return ECKey.import_key({**self.jwk, "kid": self.kid, "use": self.use})


class SealedError(Exception):
    """A JWE or JWS that is malformed, not for these keys, tampered with, or signed by someone else."""


def check_public_key(key: PublicKey) -> PublicKey:
    """Raises ValueError when the JWK is not a usable public P-256 key."""
    try:
        key.key()
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"key {key.kid!r} is not a usable public EC P-256 JWK: {exc}") from exc
    return key


def generate_key(kid: str, use: KeyUse) -> tuple[dict[str, Any], PublicKey]:
    """A new P-256 key pair: the private JWK (for the partner to keep) and its registrable public key."""
    private = ECKey.generate_key("P-256", parameters={"kid": kid, "use": use})
    public = private.as_dict(private=False)
    return private.as_dict(private=True), PublicKey(kid=kid, use=use, jwk={k: public[k] for k in ("kty", "crv", "x", "y")})


def seal(content: Mapping[str, Any], recipient: PublicKey) -> str:
    """The JWE (compact) of `content` for `recipient` (an `enc` key)."""
    if recipient.use != "enc":
        raise ValueError(f"key {recipient.kid!r} is a {recipient.use} key, not an encryption key")
    plaintext = json.dumps(content, separators=(",", ":"), sort_keys=True, default=str).encode()
    header = {"alg": JWE_ALG, "enc": JWE_ENC, "kid": recipient.kid, "cty": "application/vnd.lotse.personal-data+json"}
    return jwe.encrypt_compact(header, plaintext, recipient.key())


def unseal(token: str, private_keys: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Opens a JWE with the private key its `kid` names (a partner's side)."""
    try:
        header = json.loads(_b64(token.split(".", 1)[0]))
    except (ValueError, IndexError) as exc:
        raise SealedError("not a compact JWE") from exc
    if header.get("alg") != JWE_ALG or header.get("enc") != JWE_ENC:
        raise SealedError(f"unexpected JWE algorithms {header.get('alg')}/{header.get('enc')}")
    keys = {k.get("kid"): k for k in private_keys}
    key = keys.get(header.get("kid"))
    if key is None:
        raise SealedError(f"no private key with kid {header.get('kid')!r}")
    try:
        opened = jwe.decrypt_compact(token, ECKey.import_key(dict(key)))
        content = json.loads(opened.plaintext or b"")
    except (JoseError, ValueError) as exc:
        raise SealedError(f"cannot open the JWE: {type(exc).__name__}") from exc
    if not isinstance(content, dict):
        raise SealedError("the sealed content is not a JSON object")
    return content


def ack_payload(client_id: str, event_id: str) -> bytes:
    return json.dumps({"client_id": str(client_id), "event_id": str(event_id)}, separators=(",", ":"), sort_keys=True).encode()


def sign_ack(client_id: str, event_id: str, private_key: Mapping[str, Any]) -> str:
    """The partner's signature over an acknowledgement (JWS compact, ES256, `kid` of its signing key)."""
    key = ECKey.import_key(dict(private_key))
    return jws.serialize_compact({"alg": JWS_ALG, "kid": key.kid}, ack_payload(client_id, event_id), key)


def verify_ack(signature: str, client_id: str, event_id: str, public_keys: Iterable[PublicKey]) -> str:
    """Checks a partner's acknowledgement signature; returns the `kid` that verified it, else raises SealedError."""
    try:
        header = json.loads(_b64(signature.split(".", 1)[0]))
    except (ValueError, IndexError) as exc:
        raise SealedError("not a compact JWS") from exc
    if header.get("alg") != JWS_ALG:
        raise SealedError(f"signatures must be {JWS_ALG}, not {str(header.get('alg'))[:16]!r}")
    candidates = [k for k in public_keys if k.use == "sig" and k.kid == header.get("kid")]
    if not candidates:
        raise SealedError(f"no registered signing key {str(header.get('kid'))[:64]!r} for this organisation")
    try:
        signed = jws.deserialize_compact(signature, candidates[0].key(), algorithms=[JWS_ALG])
    except (JoseError, ValueError) as exc:
        raise SealedError("the signature does not verify") from exc
    if signed.payload != ack_payload(client_id, event_id):
        raise SealedError("the signature is over another event or client")
    return candidates[0].kid


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
