"""The receipt catalogues: every message of the source in every language, with the same placeholders.

The template is extracted from the service's source the way `make i18n-extract` does it
(`lotse_kit.i18n.extract`), so a message added in code and not translated, or removed from one
language, fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from contracts.vocab import DataCategory, Purpose
from lotse_kit.i18n import LANGUAGES, Catalogue, check_catalogue, extract
from services.consent.adapters.receipt_texts import LOCALE_DIR, ReceiptTexts
from services.consent.domain.model import ConsentForm, ConsentStatus
from services.consent.domain.receipts import Section
from tests.fixtures import catalogue_with, committed_template, message_ids

POT = extract(Path(__file__).resolve().parents[1])
# Translations that are rightly the same as the English source.
SAME_AS_ENGLISH = {("list separator", "; ")}


def test_every_message_is_translated_in_every_language_with_the_same_placeholders() -> None:
    assert len(message_ids(POT)) > 30  # the extraction found the receipt texts at all
    assert check_catalogue(Catalogue(LOCALE_DIR), POT) == []


def test_the_template_on_disk_is_the_extracted_one() -> None:
    assert message_ids(committed_template(LOCALE_DIR)) == message_ids(POT), "run make i18n-extract and i18n-update"


def test_every_language_is_there() -> None:
    assert Catalogue(LOCALE_DIR).languages == LANGUAGES
    for lang in LANGUAGES:
        assert Catalogue(LOCALE_DIR).po_path(lang).is_file(), lang


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_no_language_keeps_the_english_text(lang: str) -> None:
    with Catalogue(LOCALE_DIR).po_path(lang).open("rb") as f:
        po = read_po(f, locale=lang)
    same = {(m.context, m.id) for m in po if m.id and m.string == m.id} - SAME_AS_ENGLISH
    assert not same, f"{lang}: untranslated English {sorted(same)}"


def test_every_vocabulary_value_and_section_has_a_text() -> None:
    texts = ReceiptTexts()
    for lang in LANGUAGES:
        for p in Purpose:
            assert texts.purpose(lang, p)
        for c in DataCategory:
            assert texts.category(lang, c)
        for f in ConsentForm:
            assert texts.form(lang, f)
        for s in ConsentStatus:
            assert texts.status(lang, s)
        values = dict.fromkeys(
            (
                "collecting_org",
                "granted_at",
                "consent_id",
                "purposes",
                "recipients",
                "categories",
                "legal_basis",
                "valid_until",
                "form",
                "language",
                "status",
                "withdrawn_at",
                "expired_at",
            ),
            "X",
        )
        for section in Section:
            assert "%(" not in texts.sentence(lang, section, **values), (lang, section)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_date_that_ends_in_a_full_stop_does_not_get_a_second_one(lang: str) -> None:
    """Ukrainian and Russian long dates end in an abbreviation ("3 травня 2027 р."): its full stop ends the sentence."""
    from datetime import date

    from babel.dates import format_date

    texts = ReceiptTexts()
    day = format_date(date(2027, 5, 3), format="long", locale=lang)
    values = dict.fromkeys(
        ("collecting_org", "consent_id", "purposes", "recipients", "categories", "legal_basis", "form", "language", "status"), "X"
    )
    values |= dict.fromkeys(("granted_at", "valid_until", "withdrawn_at", "expired_at"), day)
    for section in Section:
        sentence = texts.sentence(lang, section, **values)
        assert ".." not in sentence, (lang, section, sentence)


RECIPIENTS = "Recipients: %(recipients)s."


def test_the_check_fails_when_a_message_is_missing_in_one_language(tmp_path: Path) -> None:
    broken = catalogue_with(LOCALE_DIR, tmp_path, "tr", lambda po: po.delete(RECIPIENTS))
    problems = check_catalogue(broken, POT)
    assert [(p.language, p.msgid, p.problem) for p in problems] == [("tr", RECIPIENTS, "missing")]


def test_the_check_fails_when_a_placeholder_differs(tmp_path: Path) -> None:
    def misspell(po: Catalog) -> None:
        po[RECIPIENTS].string = "گیرندگان: %(recipient)s."

    [problem] = check_catalogue(catalogue_with(LOCALE_DIR, tmp_path, "fa", misspell), POT)
    assert problem.language == "fa" and problem.msgid == RECIPIENTS and "placeholders" in problem.problem
