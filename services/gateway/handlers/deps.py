"""What the handlers need; `bootstrap` builds it, tests swap adapters through bootstrap's keyword overrides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from lotse_kit.clock import Clock
from lotse_kit.db import Database
from lotse_kit.naming import Naming
from lotse_kit.network import OrgDirectory
from lotse_kit.outbox import Outbox

from ..adapters.inbox import Inbox
from ..adapters.push import Pusher, WebhookSecrets


@dataclass
class Deps:
    db: Database
    outbox: Outbox
    naming: Naming
    clock: Clock
    directory: OrgDirectory
    inbox: Inbox
    pusher: Pusher
    secrets: WebhookSecrets
    page_max: int = 500
    page_default: int = 100
    wait_max_s: float = 30.0
    batch_max: int = 100
    push_batch: int = 50
    push_retry_base_s: float = 5.0
    push_retry_max_s: float = 3600.0
    push_allow_http: bool = False
    unfetched_after: timedelta = timedelta(days=3)
    unfetched_repeat_after: timedelta = timedelta(days=1)
