"""What callers ask the consent service to do. Each command has one handler (handlers.COMMAND_HANDLERS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from contracts.vocab import DataCategory, Purpose

from .model import ConsentForm, InformationGiven


@dataclass(frozen=True)
class RecordConsent:
    """A consent the acting organisation collected (ISO/IEC TS 27560 fields, §67b SGB X)."""

    client_id: UUID
    acting_org: str
    collecting_org: str | None  # None: the acting organisation; any other is refused
    recipients: Sequence[str]
    purposes: Sequence[Purpose]
    categories: Sequence[DataCategory]
    form: ConsentForm
    form_reason: str | None
    information: InformationGiven
    information_language: str
    interpreter_used: bool
    valid_until: datetime | None
    recorded_by: str | None = None


@dataclass(frozen=True)
class WithdrawConsent:
    """The client's withdrawal (GDPR Art. 7(3)), recorded by the collecting organisation, a recipient or
    a responsible organisation of the client (`lotse_kit.access.may_withdraw`)."""

    consent_id: UUID
    by_org: str


@dataclass(frozen=True)
class ExpireDueConsents:
    """Marks consents past valid_until as expired; `limit` consents per transaction."""

    limit: int


@dataclass(frozen=True)
class RegisterKey:
    """An organisation registers one of its public keys (its own caseworker or partner system)."""

    org: str
    acting_org: str
    kid: str
    use: str
    jwk: dict[str, object]
    registered_by: str | None = None


@dataclass(frozen=True)
class RetireKey:
    """An organisation retires one of its keys: it no longer seals or verifies anything."""

    org: str
    acting_org: str
    kid: str
    retired_by: str | None = None


@dataclass(frozen=True)
class RaiseOverdueAcknowledgements:
    """Raises lotse.acknowledgement.overdue for acknowledgements past due; `limit` per transaction."""

    limit: int
