"""Signed tree heads (STH): the log's commitment to its size and root hash at a moment.

The signed bytes are RFC 6962 §3.5's `TreeHeadSignature` structure:

    version (1 byte, v1 = 0) || signature_type (1 byte, tree_hash = 1) ||
    timestamp (uint64, ms since the epoch) || tree_size (uint64) || sha256_root_hash (32 bytes)

signed with Ed25519. The JSON form follows RFC 6962 §4.3 `get-sth` (base64 hashes and signature),
plus the algorithm and the id (SHA-256 of the raw public key) and the public key itself, so that a
verifier can tell which key to pin.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALGORITHM = "ed25519"
_V1 = 0
_TREE_HASH = 1


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch, exactly (the STH timestamp unit)."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public_key(key)).hexdigest()


def signed_bytes(tree_size: int, timestamp_ms: int, root_hash: bytes) -> bytes:
    if len(root_hash) != 32:
        raise ValueError("root hash must be 32 bytes")
    return struct.pack(">BBQQ", _V1, _TREE_HASH, timestamp_ms, tree_size) + root_hash


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    signature: bytes
    key_id: str
    public_key: bytes  # raw Ed25519 public key

    def to_json(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "timestamp": self.timestamp_ms,
            "sha256_root_hash": b64(self.root_hash),
            "tree_head_signature": b64(self.signature),
            "signature_algorithm": ALGORITHM,
            "key_id": self.key_id,
            "public_key": b64(self.public_key),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TreeHead:
        return cls(
            tree_size=int(doc["tree_size"]),
            timestamp_ms=int(doc["timestamp"]),
            root_hash=unb64(doc["sha256_root_hash"]),
            signature=unb64(doc["tree_head_signature"]),
            key_id=str(doc.get("key_id", "")),
            public_key=unb64(doc["public_key"]) if doc.get("public_key") else b"",
        )


def sign(key: Ed25519PrivateKey, tree_size: int, timestamp_ms: int, root_hash: bytes) -> TreeHead:
    public = key.public_key()
    return TreeHead(
        tree_size=tree_size,
        timestamp_ms=timestamp_ms,
        root_hash=root_hash,
        signature=key.sign(signed_bytes(tree_size, timestamp_ms, root_hash)),
        key_id=key_id(public),
        public_key=raw_public_key(public),
    )


def signature_valid(head: TreeHead, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(head.signature, signed_bytes(head.tree_size, head.timestamp_ms, head.root_hash))
    except InvalidSignature:
        return False
    return True


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)
