"""What the audit service's handlers and views work with. Built once in `bootstrap`."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lotse_kit.clock import Clock
from lotse_kit.db import Database
from lotse_kit.network import OrgDirectory

from ..adapters.repository import AuditRepository


@dataclass(frozen=True)
class Deps:
    db: Database
    repo: AuditRepository
    clock: Clock  # tree-head timestamps, report dates
    signing_key: Ed25519PrivateKey
    directory: OrgDirectory  # organisation names and time zone of the readable report
    page_max: int
    export_fetch_rows: int
