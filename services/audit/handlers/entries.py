"""Appending to the log: a batch of built entries, durably and once per record position."""

from __future__ import annotations

from ..adapters.repository import AppendResult
from ..domain.commands import AppendEntries
from .deps import Deps


async def append_entries(cmd: AppendEntries, deps: Deps) -> AppendResult:
    """Appends a batch. Idempotent by record position; durable when this returns."""
    return await deps.repo.append(cmd.entries)
