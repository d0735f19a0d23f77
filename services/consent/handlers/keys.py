"""Recipients' public keys: an organisation registers and retires its own (several may be active: rotation)."""

from __future__ import annotations

import logging
from typing import Any

from contracts.sealed import PublicKey, check_public_key

from ..adapters import repository as repo
from ..domain.commands import RegisterKey, RetireKey
from ..domain.errors import KeyConflict, KeyNotFound, KeyRejected, OtherOrganisation
from ..domain.keys import OrgKey, public_members
from .deps import Deps
from .sealing import org_keys

log = logging.getLogger(__name__)


def _own(org: str, acting_org: str) -> None:
    if org != acting_org:
        raise OtherOrganisation(f"{acting_org} cannot manage the keys of {org}.")


def _checked(cmd: RegisterKey) -> dict[str, Any]:
    jwk = cmd.jwk
    if "d" in jwk:
        # Never stored, never echoed. The key left its owner: it should be treated as compromised.
        raise KeyRejected("jwk", "a private key (member 'd') was sent; register the public key only, and replace this key pair")
    if cmd.use not in ("enc", "sig"):
        raise KeyRejected("use", "use must be 'enc' or 'sig'")
    try:
        public = public_members(jwk)
        check_public_key(PublicKey(kid=cmd.kid, use=cmd.use, jwk=public))  # type: ignore[arg-type]
    except Exception as exc:  # any malformed member: a refusal naming the field, never a 500
        raise KeyRejected("jwk", "not a public EC P-256 JWK (kty EC, crv P-256, x, y)") from exc
    return public


async def register_key(cmd: RegisterKey, deps: Deps) -> tuple[OrgKey, bool]:
    """Registers a public key; (key, created). The same key again is no change; another key under a kid in use 409."""
    _own(cmd.org, cmd.acting_org)
    jwk = _checked(cmd)
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await repo.lock_org_keys(conn, cmd.org)
        existing = {k.kid: k for k in await org_keys(conn, deps, cmd.org)}
        same = existing.get(cmd.kid)
        if same is not None:
            if same.use == cmd.use and public_members(same.jwk) == jwk and same.active:
                return same, False
            raise KeyConflict(f"key id {cmd.kid!r} is already in use{' (retired)' if not same.active else ''} for {cmd.org}")
        key = OrgKey(cmd.org, cmd.kid, cmd.use, jwk, "api", registered_at=now, registered_by=cmd.registered_by)  # type: ignore[arg-type]
        await repo.insert_key(conn, key, at=now)
    log.info("key registered", extra={"org": cmd.org, "kid": cmd.kid, "use": cmd.use})
    return key, True


async def retire_key(cmd: RetireKey, deps: Deps) -> OrgKey:
    """Retires a key (from the API or the network file): it seals and verifies nothing any more. Again: no change."""
    _own(cmd.org, cmd.acting_org)
    now = deps.clock.now()
    async with deps.db.pool.acquire() as conn, conn.transaction():
        await repo.lock_org_keys(conn, cmd.org)
        key = {k.kid: k for k in await org_keys(conn, deps, cmd.org)}.get(cmd.kid)
        if key is None:
            raise KeyNotFound(f"{cmd.org} has no key {cmd.kid!r}")
        if not key.active:
            return key
        if key.source == "api":
            await repo.retire_key(conn, cmd.org, cmd.kid, at=now, by=cmd.retired_by)
        else:  # a network-file key: its retirement is recorded here, the file stays as it is
            await repo.insert_key(
                conn, OrgKey(cmd.org, cmd.kid, key.use, key.jwk, "network-file", registered_at=now, retired_at=now), at=now
            )
    log.info("key retired", extra={"org": cmd.org, "kid": cmd.kid, "use": key.use})
    return OrgKey(key.org, key.kid, key.use, key.jwk, key.source, key.registered_at, key.registered_by, retired_at=now)
