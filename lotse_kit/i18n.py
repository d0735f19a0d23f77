"""Every text a client or caseworker reads, in their language: one mechanism for all services.

Texts live in gettext catalogues, one per service: `services/<name>/locale/<lang>/LC_MESSAGES/messages.po`,
with English source strings as message ids and python-format placeholders (`%(org_name)s`), so
translators work with standard tools (Poedit, Weblate) and Babel manages them:

    make i18n-extract   # pybabel extract -> services/<name>/locale/messages.pot
    make i18n-update    # pybabel update: new ids into every language's .po
    make i18n-compile   # pybabel compile --statistics (a check; the services read the .po directly)

Python code calls `catalogue.gettext(lang, "…")`; Jinja templates use the i18n extension
(`{% trans %}…{% endtrans %}`, `{{ _("…") }}`) through `catalogue.jinja_env(lang)`. Right-to-left
scripts are handled here once (`direction`). `check_catalogue` is what the tests use to fail when a
message is missing, untranslated or has other placeholders in any language.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import BaseLoader, Environment, StrictUndefined, select_autoescape

# The languages Lotse speaks to clients and caseworkers in (German first: the working language).
LANGUAGES: tuple[str, ...] = ("de", "en", "uk", "ar", "ru", "tr", "fa")
DEFAULT_LANGUAGE = "de"
# When none of a person's languages is available: English, then German.
FALLBACK_LANGUAGES: tuple[str, ...] = ("en", "de")
DOMAIN = "messages"

# What `pybabel extract` looks for (babel.cfg and `make i18n-extract` use the same): in Python the services
# call `catalogue.gettext(lang, "text")`, so the message is the 2nd argument; in templates `_("text")`,
# `gettext("text")` and `{% trans %}` blocks give it as the 1st. Keys by argument count tell the two apart.
EXTRACT_KEYWORDS: dict[str, Any] = {
    "_": None,
    "gettext": {None: (2,), 1: (1,)},
    "pgettext": {None: ((2, "c"), 3), 2: ((1, "c"), 2)},
    "ngettext": {None: (2, 3), 3: (1, 2)},
}
EXTRACT_METHODS = [("tests/**", "ignore"), ("**.py", "python"), ("templates/**.j2", "jinja2")]
EXTRACT_OPTIONS = {"templates/**.j2": {"extensions": "jinja2.ext.i18n"}}

_PLACEHOLDER = re.compile(r"%\((\w+)\)[sdifr]")


def primary(tag: str | None) -> str | None:
    """The primary language subtag, lower-case: `uk-UA` -> `uk`."""
    if not tag:
        return None
    return tag.replace("_", "-").split("-")[0].lower() or None


def choose_language(*preferred: str | Iterable[str] | None, supported: Sequence[str] = LANGUAGES) -> str:
    """The first supported language among `preferred` (tags or lists of tags, in order), else the fallback."""
    for item in preferred:
        for tag in [item] if item is None or isinstance(item, str) else item:
            lang = primary(tag)
            if lang is not None and lang in supported:
                return lang
    return next(lang for lang in FALLBACK_LANGUAGES if lang in supported)


def direction(language: str) -> str:
    """`rtl` for right-to-left scripts (Arabic, Farsi), else `ltr`: for HTML `dir` and PDF layout."""
    return "rtl" if Locale.parse(language).character_order == "right-to-left" else "ltr"


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


class Catalogue:
    """A service's gettext catalogue in every supported language, compiled in memory from the .po files."""

    def __init__(self, locale_dir: Path, *, domain: str = DOMAIN, languages: Sequence[str] = LANGUAGES) -> None:
        self.locale_dir = locale_dir
        self.domain = domain
        self.languages = tuple(languages)

    def po_path(self, language: str) -> Path:
        return self.locale_dir / language / "LC_MESSAGES" / f"{self.domain}.po"

    @functools.cache  # noqa: B019 - one catalogue per service, alive for the process
    def translations(self, language: str) -> Translations:
        if language not in self.languages:
            raise LookupError(f"unsupported language {language!r}")
        with self.po_path(language).open("rb") as f:
            catalog = read_po(f, locale=language, domain=self.domain)
        buf = io.BytesIO()
        write_mo(buf, catalog, use_fuzzy=False)
        buf.seek(0)
        return Translations(buf, domain=self.domain)

    def gettext(self, language: str, message: str, /, **params: Any) -> str:
        text = self.translations(language).gettext(message)
        return text % params if params else text

    def pgettext(self, language: str, context: str, message: str, /, **params: Any) -> str:
        # Babel types pgettext as `str | object`; it returns the translation or `message` itself.
        text = cast(str, self.translations(language).pgettext(context, message))
        return text % params if params else text

    def ngettext(self, language: str, singular: str, plural: str, n: int, /, **params: Any) -> str:
        text: str = self.translations(language).ngettext(singular, plural, n)
        return text % {"num": n, **params}

    @functools.cache  # noqa: B019
    def jinja_env(self, language: str, loader: BaseLoader | None = None, *, autoescape: bool = False) -> Environment:
        """A Jinja environment with the i18n extension bound to `language` (newstyle gettext: autoescaped
        and with keyword placeholders, so `{{ _("Hello %(name)s", name=n) }}` works like Python)."""
        env = Environment(
            loader=loader,
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html", "j2"], default=True) if autoescape else False,
            extensions=["jinja2.ext.i18n"],
            keep_trailing_newline=False,
        )
        env.install_gettext_translations(self.translations(language), newstyle=True)  # type: ignore[attr-defined]
        env.globals.update(lang=language, dir=direction(language))
        return env


@dataclass(frozen=True)
class CatalogueProblem:
    language: str
    msgid: str
    problem: str

    def __str__(self) -> str:
        return f"{self.language}: {self.msgid[:60]!r}: {self.problem}"


def check_catalogue(catalogue: Catalogue, template: Catalog) -> list[CatalogueProblem]:
    """Every message of `template` (the extracted .pot) translated in every language with the same placeholders."""
    out: list[CatalogueProblem] = []
    for lang in catalogue.languages:
        path = catalogue.po_path(lang)
        if not path.exists():
            out.append(CatalogueProblem(lang, "*", f"missing catalogue {path}"))
            continue
        with path.open("rb") as f:
            po = read_po(f, locale=lang)
        for msg in template:
            if not msg.id:
                continue
            got = po.get(msg.id, context=msg.context)
            ids: tuple[str, ...] = tuple(msg.id) if isinstance(msg.id, tuple | list) else (msg.id,)
            if got is None or got.fuzzy:
                out.append(CatalogueProblem(lang, ids[0], "missing" if got is None else "fuzzy"))
                continue
            strings = tuple(got.string) if isinstance(got.string, tuple | list) else (got.string,)
            if not all(strings):
                out.append(CatalogueProblem(lang, ids[0], "untranslated"))
                continue
            want = set().union(*(placeholders(i) for i in ids))
            for s in (s for s in strings if s):  # all are, checked above
                have = placeholders(s)
                if have != want - {"num"} and have != want:
                    out.append(CatalogueProblem(lang, ids[0], f"placeholders {sorted(have)} differ from {sorted(want)}"))
        obsolete = {m.id for m in po if m.id} - {m.id for m in template if m.id}
        for mid in sorted(map(str, obsolete)):
            out.append(CatalogueProblem(lang, mid, "not in the source any more (run make i18n-update)"))
    return out


def extract(service_dir: Path) -> Catalog:
    """A service's messages as `make i18n-extract` finds them (its .pot), from its Python code and templates."""
    from babel.messages.extract import extract_from_dir  # imported here: only tests and tooling extract

    pot = Catalog(domain=DOMAIN)
    for filename, lineno, message, comments, context in extract_from_dir(
        str(service_dir), EXTRACT_METHODS, options_map=EXTRACT_OPTIONS, keywords=EXTRACT_KEYWORDS
    ):
        pot.add(message, locations=[(filename, lineno)], auto_comments=comments, context=context)
    return pot
