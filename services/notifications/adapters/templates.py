"""The message catalog: one YAML file per message (all languages), a vocabulary file and the HTML layout.

Texts are Jinja2 templates rendered with StrictUndefined, so a placeholder the
context lacks fails loudly (a technical-failure) instead of sending a gap.
HTML is built from the rendered text: escaped, one <p> per paragraph, with
`lang` and `dir` set from the language (rtl for Arabic and Farsi, via Babel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from babel import Locale
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, meta, select_autoescape

from ..domain.model import SUPPORTED_LANGUAGES, Channel

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
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


def direction(language: str) -> str:
    return "rtl" if Locale.parse(language).character_order == "right-to-left" else "ltr"


@dataclass(frozen=True)
class Message:
    name: str
    placeholders: dict[str, list[str]]  # channel -> declared placeholders
    texts: dict[str, dict[str, str]]  # language -> field -> template source

    def channels(self) -> set[Channel]:
        return {Channel(c) for c in self.placeholders}


class Catalog:
    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        self.directory = directory
        self.env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self.html_env = Environment(
            loader=FileSystemLoader(str(directory)), undefined=StrictUndefined, autoescape=select_autoescape(["html", "j2"], default=True)
        )
        self.layout = self.html_env.get_template("layout.html.j2")
        self.vocab: dict[str, dict[str, dict[str, str]]] = yaml.safe_load((directory / "vocab.yaml").read_text(encoding="utf-8"))
        self.messages: dict[str, Message] = {}
        self._compiled: dict[tuple[str, str, str], Template] = {}
        for f in sorted((directory / "messages").glob("*.yaml")):
            doc = yaml.safe_load(f.read_text(encoding="utf-8"))
            name = f.name.removesuffix(".yaml")
            texts = {k: v for k, v in doc.items() if k not in ("description", "placeholders")}
            self.messages[name] = Message(name, {k: list(v) for k, v in doc["placeholders"].items()}, texts)

    # ---------------------------------------------------------------- introspection (tests, docs)
    def variables(self, message: str, language: str, field: str) -> set[str]:
        source = self.messages[message].texts[language][field]
        return set(meta.find_undeclared_variables(self.env.parse(source)))

    def term(self, vocabulary: str, value: str, language: str) -> str:
        entry = self.vocab[vocabulary][value]
        return entry.get(language) or entry["en"]

    # ---------------------------------------------------------------- rendering
    def _template(self, message: str, language: str, field: str) -> Template:
        key = (message, language, field)
        if key not in self._compiled:
            try:
                source = self.messages[message].texts[language][field]
            except KeyError as exc:
                raise TemplateMissing(f"no {field!r} for message {message!r} in {language!r}") from exc
            self._compiled[key] = self.env.from_string(source)
        return self._compiled[key]

    def render(self, message: str, channel: Channel, language: str, context: dict[str, Any]) -> Rendered:
        if language not in SUPPORTED_LANGUAGES:
            raise TemplateMissing(f"unsupported language {language!r}")
        if channel is Channel.SMS:
            return Rendered(language, _one_line(self._template(message, language, "sms").render(context)))
        if channel is not Channel.EMAIL:
            raise TemplateMissing(f"channel {channel} is not templated")
        subject = _one_line(self._template(message, language, "subject").render(context))
        paragraphs = _paragraphs(self._template(message, language, "body").render(context))
        footer = self.term("layout", "footer", language)
        text = "\n\n".join("\n".join(p) for p in paragraphs) + "\n\n-- \n" + footer + "\n"
        html = self.layout.render(lang=language, dir=direction(language), subject=subject, paragraphs=paragraphs, footer=footer)
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
