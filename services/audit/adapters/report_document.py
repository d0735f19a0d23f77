"""The readable (HTML) form of the data-subject report, in the report's language.

Every word comes from the service's gettext catalogue (`services/audit/locale/`): the template's
through the Jinja i18n extension, the labels of codes (data categories, purposes, referral
statuses) and the list separator from here, with a message context for translators.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from jinja2 import FileSystemLoader

from lotse_kit.i18n import Catalogue
from lotse_kit.network import OrgDirectory

from ..domain.report import SubjectReport

HERE = Path(__file__).resolve().parent.parent
CATALOGUE = Catalogue(HERE / "locale")
TEMPLATES = FileSystemLoader(HERE / "templates")
TEMPLATE = "subject_report.html.j2"


def code_labels(lang: str) -> dict[tuple[str, str], str]:
    """Readable names of the codes a report shows, by (kind, code): data categories, purposes, referral statuses."""
    c = CATALOGUE
    return {
        ("category", "identity"): c.pgettext(lang, "data category", "Identity (name, date of birth)"),
        ("category", "contact"): c.pgettext(lang, "data category", "Contact details"),
        ("category", "residence_status"): c.pgettext(lang, "data category", "Residence status"),
        ("category", "needs"): c.pgettext(lang, "data category", "Support needs"),
        ("category", "education_qualifications"): c.pgettext(lang, "data category", "Education and qualifications"),
        ("category", "health"): c.pgettext(lang, "data category", "Health information"),
        ("purpose", "referral"): c.pgettext(lang, "purpose", "Referral to a support service"),
        ("purpose", "case_coordination"): c.pgettext(lang, "purpose", "Coordination of your case"),
        ("purpose", "contact_for_notifications"): c.pgettext(lang, "purpose", "Sending you notifications"),
        ("purpose", "interpreter_booking"): c.pgettext(lang, "purpose", "Booking an interpreter"),
        ("referral", "sent"): c.pgettext(lang, "referral status", "sent"),
        ("referral", "accepted"): c.pgettext(lang, "referral status", "accepted"),
        ("referral", "declined"): c.pgettext(lang, "referral status", "declined"),
        ("referral", "completed"): c.pgettext(lang, "referral status", "completed"),
        ("referral", "revoked"): c.pgettext(lang, "referral status", "withdrawn by the sender"),
    }


def category_label(lang: str, code: str) -> str:
    return code_labels(lang).get(("category", code), code)


def render_html(report: SubjectReport, directory: OrgDirectory) -> str:
    lang = report.language
    sep = CATALOGUE.pgettext(lang, "list separator", ", ")
    labels = code_labels(lang)
    zone = ZoneInfo(directory.timezone)

    def date(value: str | None) -> str:
        if not value:
            return ""
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return format_datetime(dt, "medium", tzinfo=zone, locale=lang)

    def date_ms(ms: int) -> str:
        return format_datetime(datetime.fromtimestamp(ms / 1000, UTC), "medium", tzinfo=zone, locale=lang)

    def org(org_id: str | None) -> str:
        return directory.name(org_id) if org_id else ""

    def cats(categories: Iterable[str]) -> str:
        return sep.join(labels.get(("category", c), c) for c in categories)

    def purposes(ps: Iterable[str]) -> str:
        return sep.join(labels.get(("purpose", p), p) for p in ps)

    def referral_status(status: str) -> str:
        return labels.get(("referral", status), status)

    env = CATALOGUE.jinja_env(lang, loader=TEMPLATES, autoescape=True)
    return env.get_template(TEMPLATE).render(
        r=report,
        date=date,
        date_ms=date_ms,
        org=org,
        cats=cats,
        purposes=purposes,
        referral_status=referral_status,
    )
