"""The receipt catalogues: every message of the source in every language, with the same placeholders.

The template is extracted from the service's source the way `pybabel extract` does it (the
language is gettext's first argument, hence the keyword specs), so a message added in code and
not translated, or removed from one language, fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from contracts.vocab import DataCategory, Purpose
from lotse_kit.i18n import LANGUAGES, Catalogue, check_catalogue
from services.consent.adapters.receipt_texts import LOCALE_DIR, ReceiptTexts
from services.consent.domain.model import ConsentForm, ConsentStatus
from services.consent.domain.receipts import Section

SERVICE_DIR = Path(__file__).resolve().parent.parent
KEYWORDS = {"gettext": (2,), "pgettext": ((2, "c"), 3), "ngettext": (2, 3), "_": None}
METHOD_MAP = [("tests/**", "ignore"), ("**.py", "python")]
# Translations that are rightly the same as the English source.
SAME_AS_ENGLISH = {("list separator", "; ")}


def extracted() -> Catalog:
    template = Catalog(domain="messages")
    for filename, lineno, message, comments, context in extract_from_dir(str(SERVICE_DIR), METHOD_MAP, keywords=KEYWORDS):
        template.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return template


def _ids(catalog: Catalog) -> set[tuple[str | None, str]]:
    return {(m.context, str(m.id)) for m in catalog if m.id}


def test_every_message_is_translated_in_every_language_with_the_same_placeholders() -> None:
    template = extracted()
    assert len(_ids(template)) > 30  # the extraction found the receipt texts at all
    assert check_catalogue(Catalogue(LOCALE_DIR), template) == []


def test_the_template_on_disk_is_the_extracted_one() -> None:
    with (LOCALE_DIR / "messages.pot").open("rb") as f:
        on_disk = read_po(f)
    assert _ids(on_disk) == _ids(extracted()), "run make i18n-extract and i18n-update"


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


def _without(src: Path, dst: Path, lang: str, msgid: str, *, replace_with: str | None = None) -> Catalogue:
    """A copy of the catalogues where one language lost `msgid` (or has it with another text)."""
    shutil.copytree(src, dst)
    path = Catalogue(dst).po_path(lang)
    with path.open("rb") as f:
        po = read_po(f, locale=lang)
    if replace_with is None:
        po.delete(msgid)
    else:
        po[msgid].string = replace_with
    with path.open("wb") as f:
        write_po(f, po)
    return Catalogue(dst)


def test_the_check_fails_when_a_message_is_missing_in_one_language(tmp_path: Path) -> None:
    msgid = "Recipients: %(recipients)s."
    broken = _without(LOCALE_DIR, tmp_path / "locale", "tr", msgid)
    problems = check_catalogue(broken, extracted())
    assert [(p.language, p.msgid, p.problem) for p in problems] == [("tr", msgid, "missing")]


def test_the_check_fails_when_a_placeholder_differs(tmp_path: Path) -> None:
    msgid = "Recipients: %(recipients)s."
    broken = _without(LOCALE_DIR, tmp_path / "locale", "fa", msgid, replace_with="گیرندگان: %(recipient)s.")
    [problem] = check_catalogue(broken, extracted())
    assert problem.language == "fa" and problem.msgid == msgid and "placeholders" in problem.problem
