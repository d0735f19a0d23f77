"""The readable (HTML) form of the data-subject report, in the client's language."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..domain.i18n import RTL, list_separator, words
from ..domain.report import SubjectReport

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TIMEZONE = ZoneInfo("Europe/Berlin")

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


def render_html(report: SubjectReport, org_names: Mapping[str, str] | None = None) -> str:
    lang = report.language
    t = words(lang)
    names = org_names or {}
    sep = list_separator(lang)

    def date(value: str | None) -> str:
        if not value:
            return ""
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return format_datetime(dt, "medium", tzinfo=TIMEZONE, locale=lang)

    def date_ms(ms: int) -> str:
        return format_datetime(datetime.fromtimestamp(ms / 1000, UTC), "medium", tzinfo=TIMEZONE, locale=lang)

    def org(org_id: str | None) -> str:
        if not org_id:
            return ""
        return names.get(org_id, org_id)

    def cats(categories: Iterable[str]) -> str:
        return sep.join(t.get(f"cat_{c}", c) for c in categories)

    def purposes(ps: Iterable[str]) -> str:
        return sep.join(t.get(f"purpose_{p}", p) for p in ps)

    return _env.get_template("subject_report.html.j2").render(
        r=report, t=t, lang=lang, dir="rtl" if lang in RTL else "ltr",
        date=date, date_ms=date_ms, org=org, cats=cats, purposes=purposes,
    )
