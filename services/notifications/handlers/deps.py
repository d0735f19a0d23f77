"""What the handlers need; `bootstrap` builds it, tests swap adapters through bootstrap's keyword overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from lotse_kit.clock import Clock
from lotse_kit.db import Database
from lotse_kit.network import OrgDirectory
from lotse_kit.outbox import Outbox

from ..adapters.contacts import Contacts
from ..adapters.egress import EgressGuard
from ..adapters.keys import Keyring, SigningKey
from ..adapters.senders import EmailSender, SmsSender, WebhookSender
from ..adapters.templates import Catalog
from ..domain.model import Channel, RetryPolicy


@dataclass
class Deps:
    db: Database
    outbox: Outbox
    clock: Clock
    directory: OrgDirectory
    catalog: Catalog
    contacts: Contacts
    email: EmailSender
    sms: SmsSender | None
    webhooks: WebhookSender
    policy: RetryPolicy
    secrets: Keyring  # the KEKs that seal and open webhook secrets (adapters.keys: seal_secret, open_secret)
    signing_keys: list[SigningKey]  # v1a: the current key first, then one being rotated out
    egress: EgressGuard  # where webhooks may go (SSRF)
    secret_rotation_overlap_s: float = 86400.0
    webhook_allow_http: bool = False
    operator_orgs: frozenset[str] = field(default_factory=frozenset)
    intake_concurrency: int = 8  # contact lookups of one batch in flight at once (single lookups: the fallback)
    intake_batch_lookups: bool = True  # a batch's contacts in one request to intake (POST /internal/v1/contacts)

    def channel_enabled(self, channel: Channel) -> bool:
        return channel is not Channel.SMS or self.sms is not None
