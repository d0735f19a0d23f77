"""What the audit service is asked to do (dispatched by `handlers.handle`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .entries import Entry


@dataclass(frozen=True)
class AppendEntries:
    """Append a batch of built entries (idempotent by record position)."""

    entries: Sequence[Entry]


@dataclass(frozen=True)
class SignTreeHead:
    """Sign the log's current size and root, on request of `requested_by` (None: the service itself)."""

    requested_by: str | None = None


@dataclass(frozen=True)
class SignTreeHeadIfGrown:
    """Sign a tree head only if the log grew since the latest one (the periodic signer)."""
