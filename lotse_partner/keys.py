"""A partner organisation's private keys, kept in one JSON file readable only by its owner."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.sealed import KeyUse, PublicKey, generate_key


@dataclass
class PartnerKeys:
    """`{"enc": [private JWK, ...], "sig": [...]}`, newest last. The newest of each use is the one to
    register and sign with; older ones stay to open records sealed before a rotation."""

    org: str
    enc: list[dict[str, Any]] = field(default_factory=list, repr=False)
    sig: list[dict[str, Any]] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: Path) -> PartnerKeys:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(org=doc["org"], enc=list(doc.get("enc", [])), sig=list(doc.get("sig", [])))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"org": self.org, "enc": self.enc, "sig": self.sig}, f, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load_or_create(cls, path: Path, org: str) -> PartnerKeys:
        if path.exists():
            return cls.load(path)
        keys = cls(org)
        keys.rotate("enc")
        keys.rotate("sig")
        keys.save(path)
        return keys

    # ------------------------------------------------------------------ keys
    def rotate(self, use: KeyUse) -> PublicKey:
        """Adds a new key of `use` (kept with the old ones); returns its public key to register."""
        kid = f"{self.org}-{use}-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
        private, public = generate_key(kid, use)
        (self.enc if use == "enc" else self.sig).append(private)
        return public

    def public(self, use: KeyUse) -> PublicKey:
        """The newest public key of `use`, as Lotse registers it."""
        private = (self.enc if use == "enc" else self.sig)[-1]
        return PublicKey(kid=private["kid"], use=use, jwk={k: private[k] for k in ("kty", "crv", "x", "y")})

    @property
    def signing_key(self) -> dict[str, Any]:
        return self.sig[-1]
