"""Sealing personal data to a recipient: its keys (network file + API), and the content fetched from intake.

Shared by the disclosure gate and corrections. What intake returns is restricted once more to the categories
the consent allows (a category intake sent but was not asked for is dropped), sealed at once, and never
stored or logged: only the JWE leaves this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from contracts.events import ReferralNotes, Sealed, SealedContent
from contracts.sealed import PublicKey, seal
from contracts.vocab import DataCategory

from ..adapters import repository as repo
from ..domain.keys import OrgKey, merge_keys, sealing_key
from .deps import Deps


async def org_keys(conn: asyncpg.Connection | asyncpg.Pool, deps: Deps, org: str) -> list[OrgKey]:
    """Every key of `org`, newest first: the network file's and those registered through the API."""
    return keys_of(deps, org, await repo.stored_keys(conn, org))


def keys_of(deps: Deps, org: str, stored: Sequence[OrgKey]) -> list[OrgKey]:
    """`org_keys` from its stored keys read already (`repo.gate_batch_state` for a batch)."""
    entry = deps.directory.organisation(org)
    return merge_keys(org, entry.keys if entry is not None else [], stored)


async def recipient_key(conn: asyncpg.Connection, deps: Deps, org: str) -> PublicKey | None:
    return sealing_key(await org_keys(conn, deps, org))


def recipient_key_of(deps: Deps, org: str, stored: Sequence[OrgKey]) -> PublicKey | None:
    """`recipient_key` from its stored keys read already (with `repo.lock_gate_state`, or `repo.gate_batch_state`)."""
    return sealing_key(keys_of(deps, org, stored))


async def fetch_and_seal(
    deps: Deps,
    *,
    client_id: uuid.UUID,
    categories: Sequence[DataCategory],
    key: PublicKey,
    referral_id: uuid.UUID | None = None,
) -> tuple[Sealed, list[DataCategory]]:
    """Fetches exactly `categories` from intake and seals them to `key`; returns the sealed part and the
    categories it actually holds. Raises `IntakeUnavailable` (transient) or `ClientErasedAtIntake`."""
    fetched = await deps.intake.disclosure(client_id, categories, referral_id)
    return seal_fetched(fetched, categories=categories, key=key, referral_id=referral_id)


def seal_fetched(
    fetched: SealedContent, *, categories: Sequence[DataCategory], key: PublicKey, referral_id: uuid.UUID | None
) -> tuple[Sealed, list[DataCategory]]:
    """Seals what intake returned (singly or in a batch), restricted once more to `categories`."""
    allowed = set(categories)
    personal = fetched.personal_data.restricted_to(allowed)
    notes = fetched.notes if referral_id is not None and fetched.notes is not None else None
    content = SealedContent(
        personal_data=personal,
        notes=ReferralNotes(reason=notes.reason, free_text=notes.free_text) if notes is not None else None,
        # The flag belongs to the contact data: a partner that gets none has no use for it.
        do_not_contact=fetched.do_not_contact and DataCategory.CONTACT in allowed,
    )
    jwe = seal(content.model_dump(mode="json"), key)
    return Sealed(jwe=jwe, kid=key.kid), personal.categories()
