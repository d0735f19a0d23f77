"""Recipients' public keys: which one seals, which ones verify, after merging the network file and the API.

An organisation's keys come from two places: `keys` of its entry in the network file, and the keys it
registered through `POST /v1/organisations/{org}/keys`. Several may be active at once (a rotation): the
newest active `enc` key seals new records (its `kid` is in the JWE header, so the partner knows which private
key opens it), every active `sig` key verifies acknowledgements. Newest means: API keys by registration time,
newest first, then the network file's keys from last to first. A retired key (`DELETE .../keys/{kid}`, also
for a network-file key) neither seals nor verifies any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from contracts.sealed import KeyUse, PublicKey

Source = Literal["api", "network-file"]


@dataclass(frozen=True)
class OrgKey:
    org: str
    kid: str
    use: KeyUse
    jwk: dict[str, Any]
    source: Source
    registered_at: datetime | None = None  # None: from the network file
    registered_by: str | None = None
    retired_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.retired_at is None

    def public(self) -> PublicKey:
        return PublicKey(kid=self.kid, use=self.use, jwk=self.jwk)


def merge_keys(org: str, file_keys: Sequence[PublicKey], stored: Iterable[OrgKey]) -> list[OrgKey]:
    """All keys of `org`, newest first; a stored row overrides the network file's key with the same kid."""
    by_kid = {k.kid: k for k in stored}
    api = sorted(
        (k for k in by_kid.values() if k.source == "api"), key=lambda k: (k.registered_at is not None, k.registered_at), reverse=True
    )
    from_file = []
    for pk in reversed(list(file_keys)):
        row = by_kid.get(pk.kid)
        if row is not None and row.source == "api":
            continue  # cannot happen through the API (it refuses a kid in use); the API's row wins
        retired = row.retired_at if row is not None else None
        from_file.append(OrgKey(org, pk.kid, pk.use, dict(pk.jwk), "network-file", retired_at=retired))
    return [*api, *from_file]


def sealing_key(keys: Iterable[OrgKey]) -> PublicKey | None:
    """The newest active encryption key, or None: then nothing can be sealed to the organisation."""
    return next((k.public() for k in keys if k.use == "enc" and k.active), None)


def signing_keys(keys: Iterable[OrgKey]) -> list[PublicKey]:
    return [k.public() for k in keys if k.use == "sig" and k.active]


def public_members(jwk: dict[str, Any]) -> dict[str, Any]:
    """The members a public P-256 key is made of; anything else a caller sent is not kept."""
    return {m: jwk[m] for m in ("kty", "crv", "x", "y")}
