"""What handlers need besides a connection; bootstrap builds it, tests swap parts through bootstrap(...)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from lotse_kit.clock import Clock
from lotse_kit.db import Database
from lotse_kit.naming import Naming
from lotse_kit.network import OrgDirectory
from lotse_kit.outbox import Outbox

from ..adapters.decision_cache import DecisionCache
from ..adapters.decision_reader import DecisionReader
from ..adapters.intake import IntakeDisclosures
from ..adapters.partner_topics import PartnerTopics
from ..adapters.receipt_texts import ReceiptTexts


@dataclass
class Deps:
    db: Database
    outbox: Outbox
    clock: Clock
    directory: OrgDirectory
    partner_topics: PartnerTopics
    receipt_texts: ReceiptTexts
    intake: IntakeDisclosures  # intake's internal disclosure API (the gate fetches the consented categories)
    naming: Naming
    cache: DecisionCache | None = None
    reader: DecisionReader | None = None  # dedicated connections for the decision API; None: the pool
    default_validity: timedelta = timedelta(days=365)
    max_validity: timedelta = timedelta(days=730)
    expiry_batch_size: int = 100
    ack_due_working_days: int = 5
    ack_overdue_batch_size: int = 100
