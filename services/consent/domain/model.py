"""Consent records and the decision rule. Pure: no I/O, the clock is a parameter.

The record follows the fields of ISO/IEC TS 27560 (consent record information
structure) as far as they matter here, and the conditions of §67b SGB X
(Zehntes Buch Sozialgesetzbuch, the Social Code's data protection part for
social data): consent in writing or electronically, or in another form when
special circumstances justify it, documented with a reason (§67b(2) sentence 1
and 2); the client must have been told the purpose, the consequences of
refusing, and the right to withdraw (§67b(2) sentence 3, GDPR Art. 7(3)).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from contracts.vocab import DataCategory, Purpose

from .errors import ConsentRuleViolation

GDPR_CONSENT = "GDPR Art. 6(1)(a)"
GDPR_EXPLICIT_SPECIAL = "GDPR Art. 9(2)(a)"
SGB_X_CONSENT = "§67b SGB X"
NOTICE_VERSION = "consent-notice-2025-1"  # the version of the receipt texts (locale/*/LC_MESSAGES/messages.po)


class ConsentForm(StrEnum):
    WRITTEN = "written"
    ELECTRONIC = "electronic"
    ORAL = "oral"  # only with a documented reason (§67b(2) sentence 2 SGB X)


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


@dataclass(frozen=True)
class InformationGiven:
    """What the client was told before consenting (§67b(2) SGB X); all three are required."""

    purpose: bool
    consequences_of_refusal: bool
    right_to_withdraw: bool

    def missing(self) -> list[str]:
        return [name for name in ("purpose", "consequences_of_refusal", "right_to_withdraw") if not getattr(self, name)]


@dataclass(frozen=True)
class Consent:
    consent_id: UUID
    client_id: UUID
    collecting_org: str
    recipients: tuple[str, ...]
    purposes: tuple[Purpose, ...]
    categories: tuple[DataCategory, ...]
    legal_basis: tuple[str, ...]
    form: ConsentForm
    form_reason: str | None
    information: InformationGiven
    information_language: str
    interpreter_used: bool
    granted_at: datetime
    valid_until: datetime
    recorded_by: str | None = None
    notice_version: str = NOTICE_VERSION
    stored_status: ConsentStatus = ConsentStatus.ACTIVE
    withdrawn_at: datetime | None = None
    withdrawal_recorded_by_org: str | None = None
    expired_at: datetime | None = None
    disclosed_to: tuple[str, ...] = field(default=())

    def status(self, now: datetime) -> ConsentStatus:
        """The status in effect at `now`: a consent past valid_until is expired even before the expiry job ran."""
        if self.stored_status is ConsentStatus.ACTIVE and now >= self.valid_until:
            return ConsentStatus.EXPIRED
        return self.stored_status

    def covers(self, recipient: str, purpose: Purpose) -> bool:
        return recipient in self.recipients and purpose in self.purposes


def legal_basis_for(categories: Iterable[DataCategory]) -> tuple[str, ...]:
    """Consent is the legal basis; health data (a special category) needs explicit consent as well."""
    basis = [GDPR_CONSENT]
    if any(DataCategory(c).is_special_category for c in categories):
        basis.append(GDPR_EXPLICIT_SPECIAL)
    basis.append(SGB_X_CONSENT)
    return tuple(basis)


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def new_consent(
    *,
    consent_id: UUID,
    client_id: UUID,
    collecting_org: str,
    recipients: Sequence[str],
    purposes: Sequence[Purpose],
    categories: Sequence[DataCategory],
    form: ConsentForm,
    form_reason: str | None,
    information: InformationGiven,
    information_language: str,
    interpreter_used: bool,
    valid_until: datetime | None,
    now: datetime,
    default_validity: timedelta,
    max_validity: timedelta,
    recorded_by: str | None = None,
) -> Consent:
    """Validates a consent against §67b SGB X and the configured validity, and returns the record."""
    missing = information.missing()
    if missing:
        raise ConsentRuleViolation(
            "information",
            "§67b(2) SGB X: the client must be told the purpose, the consequences of refusing and the right to withdraw; "
            f"not confirmed: {', '.join(missing)}",
        )
    if form is ConsentForm.ORAL and not (form_reason and form_reason.strip()):
        raise ConsentRuleViolation(
            "form_reason", "§67b(2) SGB X: an oral consent needs the special circumstances documented in form_reason"
        )
    if not recipients:
        raise ConsentRuleViolation("recipients", "at least one recipient is required")
    if not purposes:
        raise ConsentRuleViolation("purposes", "at least one purpose is required")
    if not categories:
        raise ConsentRuleViolation("categories", "at least one data category is required")
    if valid_until is None:
        valid_until = now + default_validity
    if valid_until.tzinfo is None:
        raise ConsentRuleViolation("valid_until", "valid_until needs a UTC offset")
    if valid_until <= now:
        raise ConsentRuleViolation("valid_until", "valid_until lies in the past")
    if valid_until > now + max_validity:
        raise ConsentRuleViolation("valid_until", f"valid_until may be at most {max_validity.days} days ahead")
    cats = tuple(DataCategory(c) for c in _unique([DataCategory(c).value for c in categories]))
    return Consent(
        consent_id=consent_id,
        client_id=client_id,
        collecting_org=collecting_org,
        recipients=_unique(recipients),
        purposes=tuple(Purpose(p) for p in _unique([Purpose(p).value for p in purposes])),
        categories=cats,
        legal_basis=legal_basis_for(cats),
        form=form,
        form_reason=form_reason.strip() if form_reason else None,
        information=information,
        information_language=information_language,
        interpreter_used=interpreter_used,
        granted_at=now,
        valid_until=valid_until,
        recorded_by=recorded_by,
    )


# ---------------------------------------------------------------- decisions
@dataclass(frozen=True)
class Decision:
    allowed: bool
    consent_id: UUID | None
    reason: str
    missing_categories: tuple[DataCategory, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "consent_id": str(self.consent_id) if self.consent_id else None,
            "reason": self.reason,
            "missing_categories": [c.value for c in self.missing_categories],
        }


def _ordered(categories: Iterable[DataCategory]) -> tuple[DataCategory, ...]:
    wanted = set(categories)
    return tuple(c for c in DataCategory if c in wanted)


def decide(
    consents: Iterable[Consent],
    *,
    recipient: str,
    purpose: Purpose,
    categories: Iterable[DataCategory],
    now: datetime,
    erased_at: datetime | None = None,
) -> Decision:
    """May `recipient` receive these categories for `purpose` now?

    One consent must cover the recipient, the purpose and every category: a
    disclosure happens under one consent, which the client can see on one
    receipt and withdraw as a whole. Reasons start with a stable code
    (`granted`, `missing-categories`, `withdrawn`, `expired`, `no-consent`, `erased`).
    """
    purpose = Purpose(purpose)
    requested = _ordered(DataCategory(c) for c in categories)
    if erased_at is not None:
        return Decision(False, None, f"erased: the client's data was erased at {erased_at.isoformat()}", requested)
    relevant = sorted((c for c in consents if c.covers(recipient, purpose)), key=lambda c: c.granted_at, reverse=True)
    active = [c for c in relevant if c.status(now) is ConsentStatus.ACTIVE]
    for c in active:
        if set(requested) <= set(c.categories):
            return Decision(True, c.consent_id, f"granted: consent {c.consent_id} covers {recipient} for {purpose.value}", ())
    if active:
        # The consent that covers most of what was asked names what is missing.
        best = max(active, key=lambda c: (len(set(requested) & set(c.categories)), c.granted_at))
        missing = _ordered(set(requested) - set(best.categories))
        return Decision(
            False,
            best.consent_id,
            f"missing-categories: consent {best.consent_id} does not cover {', '.join(m.value for m in missing)}",
            missing,
        )
    if relevant:
        latest = relevant[0]
        if latest.status(now) is ConsentStatus.WITHDRAWN:
            assert latest.withdrawn_at is not None
            reason = f"withdrawn: consent {latest.consent_id} was withdrawn at {latest.withdrawn_at.isoformat()}"
        else:
            reason = f"expired: consent {latest.consent_id} expired at {latest.valid_until.isoformat()}"
        return Decision(False, latest.consent_id, reason, requested)
    return Decision(False, None, f"no-consent: no consent covers {recipient} for {purpose.value}", requested)
