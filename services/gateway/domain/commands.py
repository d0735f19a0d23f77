"""Commands: what a partner asks the gateway to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AcknowledgeRecords:
    """Every record of `org`'s inbox up to and including the one `cursor` belongs to was received."""

    org: str
    cursor: str


@dataclass(frozen=True)
class SubmitEvents:
    """Structured CloudEvents a partner posted to its outbox (parsed JSON, not yet checked)."""

    org: str
    events: list[Any]
