"""Every text of the readable report is in the gettext catalogue of every language, with the same placeholders.

The messages are extracted from the service's source (Python and the Jinja template) the way
`make i18n-extract` does; the test fails when one is missing, fuzzy or untranslated in any of the
seven languages, or when a translation has other placeholders than its English message.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from lotse_kit.i18n import LANGUAGES, Catalogue, check_catalogue
from services.audit.adapters.report_document import CATALOGUE

SERVICE = Path(__file__).resolve().parents[1]
METHOD_MAP = [("tests/**", "ignore"), ("templates/**.j2", "jinja2"), ("**.py", "python")]
OPTIONS = {"templates/**.j2": {"extensions": "jinja2.ext.i18n"}}
# Python code passes the language first: catalogue.gettext(lang, "text"), catalogue.pgettext(lang, "context", "text").
KEYWORDS = {"gettext": (2,), "pgettext": ((2, "c"), 3), "ngettext": (2, 3), "_": None}


def extracted() -> Catalog:
    catalog = Catalog(domain="messages")
    for filename, lineno, message, _comments, context in extract_from_dir(str(SERVICE), METHOD_MAP, OPTIONS, KEYWORDS):
        catalog.add(message, None, [(filename, lineno)], context=context)
    return catalog


def ids(catalog: Catalog) -> set[tuple[str | None, str]]:
    return {(m.context, m.id) for m in catalog if m.id}


def test_every_message_is_translated_in_every_language():
    template = extracted()
    sources = {loc for m in template for loc, _ in m.locations}
    # Jinja extraction silently yields nothing for a template it cannot parse: make sure both sources were read.
    assert "templates/subject_report.html.j2" in sources and "adapters/report_document.py" in sources
    assert len(ids(template)) >= 50
    assert CATALOGUE.languages == LANGUAGES
    assert [str(p) for p in check_catalogue(CATALOGUE, template)] == []


def test_the_committed_template_catalogue_is_current():
    with (SERVICE / "locale" / "messages.pot").open("rb") as f:
        pot = read_po(f)
    assert ids(pot) == ids(extracted()), "run make i18n-extract and make i18n-update"


def _copy_with(tmp_path: Path, lang: str, change) -> Catalogue:
    locale = tmp_path / "locale"
    shutil.copytree(SERVICE / "locale", locale)
    po_path = locale / lang / "LC_MESSAGES" / "messages.po"
    with po_path.open("rb") as f:
        po = read_po(f, locale=lang)
    change(po)
    with po_path.open("wb") as f:
        write_po(f, po)
    return Catalogue(locale)


@pytest.mark.parametrize("lang", ["uk", "fa"])
def test_a_missing_message_fails(tmp_path, lang):
    catalogue = _copy_with(tmp_path, lang, lambda po: po.delete("Your consents"))
    problems = check_catalogue(catalogue, extracted())
    assert [(p.language, p.msgid, p.problem) for p in problems] == [(lang, "Your consents", "missing")]


def test_a_changed_placeholder_fails(tmp_path):
    def rename(po: Catalog) -> None:
        msg = po.get("withdrawn on %(date)s")
        msg.string = msg.string.replace("%(date)s", "%(datum)s")

    problems = check_catalogue(_copy_with(tmp_path, "de", rename), extracted())
    assert [(p.language, p.msgid) for p in problems] == [("de", "withdrawn on %(date)s")]
    assert "placeholders" in problems[0].problem


def test_a_message_with_context_is_checked_in_its_context(tmp_path):
    catalogue = _copy_with(tmp_path, "ar", lambda po: po.delete(", ", context="list separator"))
    problems = check_catalogue(catalogue, extracted())
    assert [(p.language, p.msgid, p.problem) for p in problems] == [("ar", ", ", "missing")]
