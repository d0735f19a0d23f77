"""The consent receipt, without its wording: which sections a receipt has and the record it documents.

A receipt is a JSON record after ISO/IEC TS 27560 plus a text for the client in their language.
This module decides what the receipt says (the sections, in order, and the record); the words
come from the gettext catalogue and are put together by `adapters/receipt_texts.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from contracts.vocab import DataCategory
from lotse_kit.i18n import DEFAULT_LANGUAGE, LANGUAGES, choose_language, primary

from .errors import UnsupportedLanguage
from .model import Consent, ConsentStatus

RECEIPT_SCHEMA = "urn:lotse:consent-receipt:v1"

OrgName = Callable[[str], str]


class Section(StrEnum):
    """One sentence or paragraph of the receipt text."""

    TITLE = "title"
    INTRO = "intro"
    STATUS = "status"
    WITHDRAWN_ON = "withdrawn_on"
    EXPIRED_ON = "expired_on"
    PURPOSES = "purposes"
    RECIPIENTS = "recipients"
    CATEGORIES = "categories"
    HEALTH = "health"
    LEGAL_BASIS = "legal_basis"
    VALID_UNTIL = "valid_until"
    FORM = "form"
    LANGUAGE = "language"
    INTERPRETER = "interpreter"
    VOLUNTARY = "voluntary"
    REFUSAL = "refusal"
    WITHDRAW = "withdraw"
    AFTER_WITHDRAWAL = "after_withdrawal"
    RIGHTS = "rights"


def receipt_language(requested: str | None, information_language: str) -> str:
    """The requested language; else the language the client was informed in, where we have it; else German."""
    if requested:
        lang = primary(requested)
        if lang not in LANGUAGES:
            raise UnsupportedLanguage(f"no receipt text in {requested!r}; available: {', '.join(LANGUAGES)}")
        return lang
    return choose_language(information_language, DEFAULT_LANGUAGE)


def receipt_sections(consent: Consent, now: datetime) -> list[Section]:
    """The sections of this consent's receipt, in order: status notes and the health and interpreter notes only where they apply."""
    status = consent.status(now)
    sections = [Section.TITLE, Section.INTRO, Section.STATUS]
    if status is ConsentStatus.WITHDRAWN:
        sections.append(Section.WITHDRAWN_ON)
    elif status is ConsentStatus.EXPIRED:
        sections.append(Section.EXPIRED_ON)
    sections += [Section.PURPOSES, Section.RECIPIENTS, Section.CATEGORIES]
    if DataCategory.HEALTH in consent.categories:
        sections.append(Section.HEALTH)
    sections += [Section.LEGAL_BASIS, Section.VALID_UNTIL, Section.FORM, Section.LANGUAGE]
    if consent.interpreter_used:
        sections.append(Section.INTERPRETER)
    sections += [Section.VOLUNTARY, Section.REFUSAL, Section.WITHDRAW, Section.AFTER_WITHDRAWAL, Section.RIGHTS]
    return sections


def receipt_record(consent: Consent, *, now: datetime, org_name: OrgName) -> dict[str, Any]:
    """The machine-readable part of the receipt (ISO/IEC TS 27560 fields)."""
    status = consent.status(now)
    return {
        "consent_id": str(consent.consent_id),
        "client_id": str(consent.client_id),
        "status": status.value,
        "notice_version": consent.notice_version,
        "collecting_org": {"id": consent.collecting_org, "name": org_name(consent.collecting_org)},
        "recipients": [{"id": r, "name": org_name(r)} for r in consent.recipients],
        "purposes": [p.value for p in consent.purposes],
        "data_categories": [c.value for c in consent.categories],
        "special_categories": [c.value for c in consent.categories if c.is_special_category],
        "legal_basis": list(consent.legal_basis),
        "form": consent.form.value,
        "form_reason": consent.form_reason,
        "information_given": {
            "purpose": consent.information.purpose,
            "consequences_of_refusal": consent.information.consequences_of_refusal,
            "right_to_withdraw": consent.information.right_to_withdraw,
        },
        "information_language": consent.information_language,
        "interpreter_used": consent.interpreter_used,
        "granted_at": consent.granted_at.isoformat(),
        "valid_until": consent.valid_until.isoformat(),
        "withdrawn_at": consent.withdrawn_at.isoformat() if consent.withdrawn_at else None,
        "expired_at": (consent.expired_at or consent.valid_until).isoformat() if status is ConsentStatus.EXPIRED else None,
        "disclosed_to": [{"id": o, "name": org_name(o)} for o in consent.disclosed_to],
        "withdrawal": {
            "how": f"at any organisation taking part, or POST /v1/consents/{consent.consent_id}/withdraw",
            "effective": "immediately, for every later disclosure",
        },
    }
