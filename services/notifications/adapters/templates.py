"""The messages: one Jinja template per message (`templates/messages/<name>.j2`), texts in gettext catalogues.

A message template has a block per field: `subject` and `body` (e-mail), `sms`. Every text in it is
a `{% trans %}` block, so translators only touch `locale/<lang>/LC_MESSAGES/messages.po`; the
templates hold the structure (paragraphs, conditional lines). Terms of the shared vocabularies
(deadline kinds, decline reasons, purposes, data categories) are msgctxt-qualified entries below.

Templates render with StrictUndefined, so a placeholder the context lacks fails loudly (a
technical-failure) instead of sending a gap. HTML is built from the rendered text: escaped, one
<p> per paragraph, with `lang` and `dir` from the kit (`lotse_kit.i18n.direction`: rtl for Arabic
and Farsi).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, Template, TemplateNotFound

from lotse_kit.i18n import LANGUAGES, Catalogue, direction

from ..domain.model import Channel

SERVICE_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = SERVICE_DIR / "templates"
LOCALE_DIR = SERVICE_DIR / "locale"
CHANNEL_FIELDS: dict[Channel, tuple[str, ...]] = {Channel.EMAIL: ("subject", "body"), Channel.SMS: ("sms",)}


class TemplateMissing(LookupError):
    pass


@dataclass(frozen=True)
class Rendered:
    language: str
    text: str
    subject: str | None = None
    html: str | None = None

    @property
    def direction(self) -> str:
        return direction(self.language)


def vocabulary(c: Catalogue, lang: str) -> dict[str, dict[str, str]]:
    """The shared vocabularies in `lang`: vocabulary -> wire value -> text (msgctxt: the vocabulary)."""
    return {
        "deadline_kind": {
            "residence_title_expiry": c.pgettext(lang, "deadline_kind", "Residence permit expires"),
            "chancen_aufenthalt_end": c.pgettext(
                lang, "deadline_kind", "End of the opportunity residence right (Chancen-Aufenthaltsrecht, § 104c AufenthG)"
            ),
            "integration_course_eligibility": c.pgettext(lang, "deadline_kind", "Deadline to register for the integration course"),
            "referral_answer_due": c.pgettext(lang, "deadline_kind", "Answer to a referral due"),
            "appointment": c.pgettext(lang, "deadline_kind", "Appointment"),
        },
        "decline_reason": {
            "no_capacity": c.pgettext(lang, "decline_reason", "no free places"),
            "not_eligible": c.pgettext(lang, "decline_reason", "eligibility requirements not met"),
            "client_unreachable": c.pgettext(lang, "decline_reason", "contact was not possible"),
            "other": c.pgettext(lang, "decline_reason", "other reason"),
        },
        "purpose": {
            "referral": c.pgettext(lang, "purpose", "referral to counselling and support services"),
            "case_coordination": c.pgettext(lang, "purpose", "coordination between the organisations involved"),
            "contact_for_notifications": c.pgettext(lang, "purpose", "contact for notifications"),
            "interpreter_booking": c.pgettext(lang, "purpose", "booking interpreters"),
        },
        "data_category": {
            "identity": c.pgettext(lang, "data_category", "name and date of birth"),
            "contact": c.pgettext(lang, "data_category", "contact details"),
            "residence_status": c.pgettext(lang, "data_category", "residence status"),
            "needs": c.pgettext(lang, "data_category", "support needs"),
            "education_qualifications": c.pgettext(lang, "data_category", "school and vocational qualifications"),
            "health": c.pgettext(lang, "data_category", "health data"),
        },
    }


def footer(c: Catalogue, lang: str) -> str:
    return c.gettext(lang, "This message was sent automatically through the Lotse network. Please do not reply to this e-mail.")


class Catalog:
    """Renders a message in a language. `templates_dir`/`locale_dir` default to the service's own."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR, locale_dir: Path = LOCALE_DIR) -> None:
        self.templates_dir = templates_dir
        self.catalogue = Catalogue(locale_dir)
        self.loader = FileSystemLoader(str(templates_dir))  # one instance: the kit caches an environment per (language, loader)
        self._terms: dict[str, dict[str, dict[str, str]]] = {}
        self._compiled: dict[tuple[str, str], Template] = {}

    # ---------------------------------------------------------------- introspection (tests, docs)
    @property
    def messages(self) -> list[str]:
        return sorted(p.name.removesuffix(".j2") for p in (self.templates_dir / "messages").glob("*.j2"))

    def fields(self, message: str) -> set[str]:
        return set(self._template(message, LANGUAGES[0]).blocks)

    def term(self, vocabulary_name: str, value: str, language: str) -> str:
        if language not in self._terms:
            self._terms[language] = vocabulary(self.catalogue, language)
        return self._terms[language][vocabulary_name][value]

    # ---------------------------------------------------------------- rendering
    def _template(self, message: str, language: str) -> Template:
        key = (message, language)
        if key not in self._compiled:
            try:
                self._compiled[key] = self.catalogue.jinja_env(language, self.loader).get_template(f"messages/{message}.j2")
            except TemplateNotFound as exc:
                raise TemplateMissing(f"no message {message!r}") from exc
        return self._compiled[key]

    def _layout(self, language: str) -> Template:
        key = ("layout.html.j2", language)
        if key not in self._compiled:
            self._compiled[key] = self.catalogue.jinja_env(language, self.loader, autoescape=True).get_template("layout.html.j2")
        return self._compiled[key]

    def _field(self, message: str, language: str, field: str, context: dict[str, Any]) -> str:
        template = self._template(message, language)
        block = template.blocks.get(field)
        if block is None:
            raise TemplateMissing(f"no {field!r} for message {message!r}")
        return "".join(block(template.new_context(context)))

    def render(self, message: str, channel: Channel, language: str, context: dict[str, Any]) -> Rendered:
        if language not in self.catalogue.languages:
            raise TemplateMissing(f"unsupported language {language!r}")
        if channel is Channel.SMS:
            return Rendered(language, _one_line(self._field(message, language, "sms", context)))
        if channel is not Channel.EMAIL:
            raise TemplateMissing(f"channel {channel} is not templated")
        subject = _one_line(self._field(message, language, "subject", context))
        paragraphs = _paragraphs(self._field(message, language, "body", context))
        end = footer(self.catalogue, language)
        text = "\n\n".join("\n".join(p) for p in paragraphs) + "\n\n-- \n" + end + "\n"
        html = self._layout(language).render(subject=subject, paragraphs=paragraphs, footer=end)
        return Rendered(language, text, subject=subject, html=html)


def _one_line(s: str) -> str:
    return re.sub(r"[ \t\r\n]+", " ", s).strip(" \t\r\n")


def _paragraphs(text: str) -> list[list[str]]:
    """Blank-line separated paragraphs of non-empty lines (conditionals may leave empty lines)."""
    out: list[list[str]] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if lines:
            out.append(lines)
    return out
