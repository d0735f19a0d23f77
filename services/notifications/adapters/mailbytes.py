"""A notification e-mail's bytes, written directly instead of through the `email` package's generator.

The shape is the one `SmtpSender` built with `email.mime` (compat32) before (issue 14: the generator was about a
sixth of the service's CPU): the text as `text/plain`, and the HTML, if any, as its `multipart/alternative` twin,
both UTF-8 in base64; headers in the same order, ASCII values as they are (folded at spaces to lines of at most
78 characters where possible, RFC 5322 2.2.3), a subject that is not plain ASCII on one line as RFC 2047 encoded
words. Every line ends with CRLF and has at most 998 octets. Dot-stuffing stays the SMTP client's (`smtp.dot_stuffed`).

It writes only the usual values: a plain ASCII address (dot-atom, no display name), a subject of one line, a
notification id and a language that are tokens. `writes` says whether it does; the sender builds anything else
with the `email` package (an internationalised address, SMTPUTF8, in particular).
services/notifications/tests/test_mailbytes.py parses both with `email.policy.default` and compares them.
"""

from __future__ import annotations

import base64
import re
from typing import Final

MAX_LINE: Final = 78  # RFC 5322 2.1.1: SHOULD
MAX_OCTETS: Final = 998  # RFC 5322 2.1.1: MUST (without CRLF)
WORD_BYTES: Final = 39  # UTF-8 octets per encoded word: 52 base64 characters, "Subject: =?utf-8?b?...?=" is 73
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# An address that needs no parsing: smtplib's getaddresses() returns it unchanged, and it is the envelope's too.
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_TOKEN = re.compile(r"[A-Za-z0-9-]{1,60}")
_FOLD_AT = re.compile(r" (?=[^ \t])")  # a space before a non-blank: no line of the folded header is blank (3.2.2)


def plain_address(address: str) -> bool:
    return len(address) <= 254 and _PLAIN_ADDRESS.fullmatch(address) is not None


def writes(*, to: str, subject: str, message_id: str, language: str) -> bool:
    """Whether `message_bytes` writes this message. A subject with a line break (templates make one line) is left to
    `email.header`, which turns each break into a fold."""
    return (
        plain_address(to)
        and subject.splitlines() in ([], [subject])
        and _TOKEN.fullmatch(message_id) is not None
        and _TOKEN.fullmatch(language) is not None
    )


def folded(name: str, value: str) -> bytes | None:
    """`name: value` CRLF, folded at spaces, for an ASCII value without line breaks; None if it is not one or a line
    would still be longer than 998 octets. Unfolding (removing the CRLFs) gives the value back."""
    if not value.isascii() or "\r" in value or "\n" in value:
        return None
    lines = _fold(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii") if all(len(line) <= MAX_OCTETS for line in lines) else None


def header(name: str, value: str) -> bytes:
    """An unstructured header (the subject): `folded`, else as encoded words. Decoding gives the value back."""
    return folded(name, value) or f"{name}: {encoded_words(value)}\r\n".encode("ascii")


def _fold(line: str) -> list[str]:
    """Greedy folding: each line as long as possible up to 78 characters, else up to the first place to fold."""
    lines = []
    first = line.index(":") + 2  # never between the name and its value
    while len(line) > MAX_LINE:
        cuts = [m.start() for m in _FOLD_AT.finditer(line, first)]
        if not cuts:
            break
        fitting = [c for c in cuts if c <= MAX_LINE]
        cut = fitting[-1] if fitting else cuts[0]
        lines.append(line[:cut])
        line, first = line[cut:], 1
    lines.append(line)
    return lines


def encoded_words(value: str) -> str:
    """RFC 2047 encoded words (UTF-8, base64), one a line, each of whole characters (6.3)."""
    data = value.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation octet: back to the character's start
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return "\r\n ".join(words)


def _base64(text: str) -> bytes:
    """UTF-8 in base64, 76 characters a line (RFC 2045 6.8), each ended by CRLF."""
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


_TEXT_HEAD: Final = b'Content-Type: text/plain; charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n'
_HTML_HEAD: Final = b'Content-Type: text/html; charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n'


def message_bytes(
    *, from_line: bytes, to: str, subject: str, date: str, message_id: str, language: str, text: str, html: str | None
) -> bytes:
    """The message, given `writes(...)` and the From line from `folded("From", ...)`. With HTML, the MIME boundary
    is `=_<message_id>`: "=_" never occurs in base64, so it cannot clash with the content (RFC 2045 6.7)."""
    fields = [
        from_line,
        f"To: {to}\r\n".encode("ascii"),
        header("Subject", subject),
        f"Date: {date}\r\nMessage-ID: <{message_id}@notifications.lotse>\r\nAuto-Submitted: auto-generated\r\n".encode("ascii"),
        f"Content-Language: {language}\r\n\r\n".encode("ascii"),
    ]
    if not html:
        return b"".join([_TEXT_HEAD, *fields, _base64(text)])
    delimiter = f"\r\n--=_{message_id}\r\n".encode("ascii")
    return b"".join(
        [
            f'Content-Type: multipart/alternative;\r\n boundary="=_{message_id}"\r\nMIME-Version: 1.0\r\n'.encode("ascii"),
            *fields,
            delimiter[2:],
            _TEXT_HEAD,
            b"\r\n",
            _base64(text),
            delimiter,
            _HTML_HEAD,
            b"\r\n",
            _base64(html),
            f"\r\n--=_{message_id}--\r\n".encode("ascii"),
        ]
    )
