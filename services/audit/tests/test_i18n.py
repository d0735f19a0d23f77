"""Every text of the readable report is in the gettext catalogue of every language, with the same placeholders.

The messages are extracted from the service's source (Python and the Jinja template) the way
`make i18n-extract` does; the test fails when one is missing, fuzzy or untranslated in any of the
seven languages, or when a translation has other placeholders than its English message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog

from lotse_kit.i18n import LANGUAGES, check_catalogue, extract
from services.audit.adapters.report_document import CATALOGUE
from tests.fixtures import catalogue_with, committed_template, message_ids

LOCALE_DIR = CATALOGUE.locale_dir
POT = extract(Path(__file__).resolve().parents[1])


def test_every_message_is_translated_in_every_language():
    sources = {loc for m in POT for loc, _ in m.locations}
    # Jinja extraction silently yields nothing for a template it cannot parse: make sure both sources were read.
    assert "templates/subject_report.html.j2" in sources and "adapters/report_document.py" in sources
    assert len(message_ids(POT)) >= 50
    assert CATALOGUE.languages == LANGUAGES
    assert [str(p) for p in check_catalogue(CATALOGUE, POT)] == []


def test_the_committed_template_catalogue_is_current():
    assert message_ids(committed_template(LOCALE_DIR)) == message_ids(POT), "run make i18n-extract and make i18n-update"


@pytest.mark.parametrize("lang", ["uk", "fa"])
def test_a_missing_message_fails(tmp_path, lang):
    catalogue = catalogue_with(LOCALE_DIR, tmp_path, lang, lambda po: po.delete("Your consents"))
    problems = check_catalogue(catalogue, POT)
    assert [(p.language, p.msgid, p.problem) for p in problems] == [(lang, "Your consents", "missing")]


def test_a_changed_placeholder_fails(tmp_path):
    def rename(po: Catalog) -> None:
        msg = po.get("withdrawn on %(date)s")
        msg.string = msg.string.replace("%(date)s", "%(datum)s")

    problems = check_catalogue(catalogue_with(LOCALE_DIR, tmp_path, "de", rename), POT)
    assert [(p.language, p.msgid) for p in problems] == [("de", "withdrawn on %(date)s")]
    assert "placeholders" in problems[0].problem


def test_a_message_with_context_is_checked_in_its_context(tmp_path):
    catalogue = catalogue_with(LOCALE_DIR, tmp_path, "ar", lambda po: po.delete(", ", context="list separator"))
    problems = check_catalogue(catalogue, POT)
    assert [(p.language, p.msgid, p.problem) for p in problems] == [("ar", ", ", "missing")]
