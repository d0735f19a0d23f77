"""The consent receipt: a JSON document after ISO/IEC TS 27560 plus a text in the client's language."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from babel import Locale
from babel.dates import format_date
from babel.lists import format_list

from contracts.vocab import DataCategory

from .model import Consent, ConsentStatus
from .receipt_texts import SUPPORTED_LANGUAGES, TEXTS

RECEIPT_SCHEMA = "urn:lotse:consent-receipt:v1"

OrgName = Callable[[str], str]


class UnsupportedLanguage(ValueError):
    pass


def receipt_language(requested: str | None, information_language: str) -> str:
    """The requested language; else the language the client was informed in, where we have it; else German."""
    if requested:
        lang = requested.split("-")[0].lower()
        if lang not in SUPPORTED_LANGUAGES:
            raise UnsupportedLanguage(f"no receipt text in {requested!r}; available: {', '.join(SUPPORTED_LANGUAGES)}")
        return lang
    base = information_language.split("-")[0].lower()
    return base if base in SUPPORTED_LANGUAGES else "de"


def _date(value: datetime, lang: str) -> str:
    return format_date(value.date(), format="long", locale=lang)


def _items(labels: list[str], lang: str) -> str:
    """Labels that may contain "and" themselves read better separated by semicolons."""
    return ("؛ " if lang in ("ar", "fa") else "; ").join(labels)


def _language_name(tag: str, lang: str) -> str:
    try:
        name = Locale.parse(tag.replace("-", "_")).get_display_name(lang)
    except (ValueError, TypeError):
        name = None
    return name or tag


def render_text(consent: Consent, *, lang: str, now: datetime, org_name: OrgName) -> str:
    t = TEXTS[lang]
    status = consent.status(now)

    def org(o: str) -> str:
        return org_name(o)

    values: dict[str, Any] = {
        "collecting_org": org(consent.collecting_org),
        "granted_at": _date(consent.granted_at, lang),
        "consent_id": str(consent.consent_id),
        "purposes": _items([t[f"purpose.{p.value}"] for p in consent.purposes], lang),
        "recipients": format_list([org(r) for r in consent.recipients], locale=lang),
        "categories": _items([t[f"category.{c.value}"] for c in consent.categories], lang),
        "legal_basis": ", ".join(consent.legal_basis),
        "valid_until": _date(consent.valid_until, lang),
        "form": t[f"form.{consent.form.value}"],
        "language": _language_name(consent.information_language, lang),
        "status": t[f"status.{status.value}"],
        "withdrawn_at": _date(consent.withdrawn_at, lang) if consent.withdrawn_at else "",
        "expired_at": _date(consent.expired_at or consent.valid_until, lang),
    }
    keys = ["title", "intro", "status"]
    if status is ConsentStatus.WITHDRAWN:
        keys.append("withdrawn_on")
    elif status is ConsentStatus.EXPIRED:
        keys.append("expired_on")
    keys += ["purposes", "recipients", "categories"]
    if DataCategory.HEALTH in consent.categories:
        keys.append("health")
    keys += ["legal_basis", "valid_until", "form", "language"]
    if consent.interpreter_used:
        keys.append("interpreter")
    keys += ["voluntary", "refusal", "withdraw", "after_withdrawal", "rights"]
    return "\n".join(t[k].format(**values) for k in keys)


def receipt(consent: Consent, *, lang: str, now: datetime, org_name: OrgName) -> dict[str, Any]:
    status = consent.status(now)
    return {
        "schema": RECEIPT_SCHEMA,
        "language": lang,
        "record": {
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
        },
        "text": render_text(consent, lang=lang, now=now, org_name=org_name),
    }
