"""The receipt text in the client's language, from the gettext catalogue in `services/consent/locale/`.

These are legal information to the client (§67b(2) SGB X, GDPR Art. 7 and 13): what the data is
shared for, with whom, which data, the right to withdraw and what refusing means. Which sections a
receipt has is decided in `domain/receipts.py`; this adapter words them. Every message below is a
literal `gettext`/`pgettext` call, so `pybabel extract` (and tests/test_i18n.py) finds it. When a
text changes, bump NOTICE_VERSION in domain/model.py: each consent records the version its client
was shown. Legal citations (GDPR Art. 6(1)(a), §67b SGB X) stay as they are in every language.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.lists import format_list

from contracts.vocab import DataCategory, Purpose
from lotse_kit.i18n import Catalogue

from ..domain.model import Consent, ConsentForm, ConsentStatus
from ..domain.receipts import Section, receipt_sections

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

OrgLabel = Callable[[str], str]


class ReceiptTexts:
    def __init__(self, catalogue: Catalogue | None = None) -> None:
        self.catalogue = catalogue or Catalogue(LOCALE_DIR)

    # ------------------------------------------------------------ the text
    def render(self, consent: Consent, *, lang: str, now: datetime, org_label: OrgLabel) -> str:
        """The receipt text: one line per section of `domain.receipts.receipt_sections`."""
        status = consent.status(now)
        values: dict[str, Any] = {
            "collecting_org": org_label(consent.collecting_org),
            "granted_at": _date(consent.granted_at, lang),
            "consent_id": str(consent.consent_id),
            "purposes": self._items(lang, [self.purpose(lang, p) for p in consent.purposes]),
            "recipients": format_list([org_label(r) for r in consent.recipients], locale=lang),
            "categories": self._items(lang, [self.category(lang, c) for c in consent.categories]),
            "legal_basis": ", ".join(consent.legal_basis),
            "valid_until": _date(consent.valid_until, lang),
            "form": self.form(lang, consent.form),
            "language": _language_name(consent.information_language, lang),
            "status": self.status(lang, status),
            "withdrawn_at": _date(consent.withdrawn_at, lang) if consent.withdrawn_at else "",
            "expired_at": _date(consent.expired_at or consent.valid_until, lang),
        }
        return "\n".join(self.sentence(lang, s, **values) for s in receipt_sections(consent, now))

    def sentence(self, lang: str, section: Section, **v: Any) -> str:
        c = self.catalogue
        match section:
            case Section.TITLE:
                return c.gettext(lang, "Receipt for your consent to data sharing")
            case Section.INTRO:
                return c.gettext(
                    lang,
                    "Your consent was recorded by %(collecting_org)s on %(granted_at)s. Consent number: %(consent_id)s.",
                    collecting_org=v["collecting_org"],
                    granted_at=v["granted_at"],
                    consent_id=v["consent_id"],
                )
            case Section.STATUS:
                return c.gettext(lang, "Status: %(status)s.", status=v["status"])
            case Section.WITHDRAWN_ON:
                return c.gettext(lang, "You withdrew this consent on %(withdrawn_at)s.", withdrawn_at=v["withdrawn_at"])
            case Section.EXPIRED_ON:
                return c.gettext(lang, "This consent expired on %(expired_at)s.", expired_at=v["expired_at"])
            case Section.PURPOSES:
                return c.gettext(lang, "Purpose: your data may be shared for the following purposes: %(purposes)s.", purposes=v["purposes"])
            case Section.RECIPIENTS:
                return c.gettext(lang, "Recipients: %(recipients)s.", recipients=v["recipients"])
            case Section.CATEGORIES:
                return c.gettext(lang, "Data that may be shared: %(categories)s.", categories=v["categories"])
            case Section.HEALTH:
                return c.gettext(
                    lang,
                    "This consent includes information about your health. These data are specially protected "
                    "(Art. 9 of the EU General Data Protection Regulation, GDPR); you consented to this explicitly.",
                )
            case Section.LEGAL_BASIS:
                return c.gettext(lang, "Legal basis: %(legal_basis)s.", legal_basis=v["legal_basis"])
            case Section.VALID_UNTIL:
                return c.gettext(lang, "This consent is valid until %(valid_until)s.", valid_until=v["valid_until"])
            case Section.FORM:
                return c.gettext(lang, "Form of consent: %(form)s.", form=v["form"])
            case Section.LANGUAGE:
                return c.gettext(lang, "Language in which you were informed: %(language)s.", language=v["language"])
            case Section.INTERPRETER:
                return c.gettext(lang, "An interpreter helped you when you were informed.")
            case Section.VOLUNTARY:
                return c.gettext(lang, "Your consent is voluntary.")
            case Section.REFUSAL:
                return c.gettext(
                    lang,
                    "If you do not consent or withdraw your consent, you will not lose any benefits or services "
                    "you are legally entitled to. The organisations may then not exchange your data with each "
                    "other, however: you may have to contact them yourself and give your information again, "
                    "and support may take longer.",
                )
            case Section.WITHDRAW:
                return c.gettext(
                    lang,
                    "You can withdraw this consent at any time without giving reasons, at %(collecting_org)s "
                    "or at any other organisation taking part. Withdrawing is as easy as consenting. It takes "
                    "effect from the moment you withdraw; data shared before then was shared lawfully.",
                    collecting_org=v["collecting_org"],
                )
            case Section.AFTER_WITHDRAWAL:
                return c.gettext(
                    lang,
                    "Organisations that already received your data will be told if you withdraw, and may no "
                    "longer use the data for this purpose.",
                )
            case Section.RIGHTS:
                return c.gettext(
                    lang,
                    "You also have the right to access your data, to have it corrected and erased, and to "
                    "complain to a data protection supervisory authority.",
                )
        raise AssertionError(f"unhandled receipt section {section}")

    # ------------------------------------------------------------ labels of the vocabulary
    def purpose(self, lang: str, purpose: Purpose) -> str:
        c = self.catalogue
        return {
            Purpose.REFERRAL: c.pgettext(lang, "purpose", "referral to a counselling or support service"),
            Purpose.CASE_COORDINATION: c.pgettext(lang, "purpose", "coordination of your case between the organisations taking part"),
            Purpose.CONTACT_FOR_NOTIFICATIONS: c.pgettext(
                lang, "purpose", "notifications to you (for example reminders of deadlines and appointments)"
            ),
            Purpose.INTERPRETER_BOOKING: c.pgettext(lang, "purpose", "booking an interpreter"),
        }[purpose]

    def category(self, lang: str, category: DataCategory) -> str:
        c = self.catalogue
        return {
            DataCategory.IDENTITY: c.pgettext(lang, "data category", "name and date of birth"),
            DataCategory.CONTACT: c.pgettext(lang, "data category", "contact details (e-mail, telephone, languages)"),
            DataCategory.RESIDENCE_STATUS: c.pgettext(lang, "data category", "residence status and how long it is valid"),
            DataCategory.NEEDS: c.pgettext(lang, "data category", "support needs"),
            DataCategory.EDUCATION_QUALIFICATIONS: c.pgettext(lang, "data category", "school and vocational education, qualifications"),
            DataCategory.HEALTH: c.pgettext(lang, "data category", "information about your health"),
        }[category]

    def form(self, lang: str, form: ConsentForm) -> str:
        c = self.catalogue
        return {
            ConsentForm.WRITTEN: c.pgettext(lang, "consent form", "written"),
            ConsentForm.ELECTRONIC: c.pgettext(lang, "consent form", "electronic"),
            ConsentForm.ORAL: c.pgettext(lang, "consent form", "oral (with a documented reason)"),
        }[form]

    def status(self, lang: str, status: ConsentStatus) -> str:
        c = self.catalogue
        return {
            ConsentStatus.ACTIVE: c.pgettext(lang, "consent status", "valid"),
            ConsentStatus.WITHDRAWN: c.pgettext(lang, "consent status", "withdrawn"),
            ConsentStatus.EXPIRED: c.pgettext(lang, "consent status", "expired"),
        }[status]

    def _items(self, lang: str, labels: list[str]) -> str:
        """Labels that may contain "and" themselves read better separated by semicolons (Arabic script: "؛")."""
        return self.catalogue.pgettext(lang, "list separator", "; ").join(labels)


def _date(value: datetime, lang: str) -> str:
    return format_date(value.date(), format="long", locale=lang)


def _language_name(tag: str, lang: str) -> str:
    try:
        name = Locale.parse(tag.replace("-", "_")).get_display_name(lang)
    except (ValueError, TypeError, UnknownLocaleError):  # a well-formed tag CLDR does not know, e.g. "zz": shown as it is
        name = None
    return name or tag
