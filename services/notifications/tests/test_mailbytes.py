"""The e-mail bytes `SmtpSender.envelope` writes (adapters/mailbytes.py) read back as the message the `email`
package built and flattened (`SmtpSender.build` + `envelope_of`, the sender's path before issue 14 and still its
fallback): the same headers (decoded), parts, decoded bodies and envelope, parsed with `email.policy.default`;
CRLF line ends, lines of at most 998 octets; dot-stuffing is the SMTP client's, on the wire."""

from __future__ import annotations

import asyncio
import email.header
import email.policy
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from lotse_kit.clock import ManualClock
from lotse_kit.i18n import LANGUAGES
from services.notifications.adapters import mailbytes
from services.notifications.adapters.senders import SmtpSender
from services.notifications.adapters.smtp import Envelope, SmtpConnection, dot_stuffed, envelope_of
from services.notifications.adapters.templates import Rendered
from services.notifications.domain.model import Channel, scrub
from services.notifications.domain.routing import ROUTES
from services.notifications.handlers.deliveries import render
from tests.peers import free_port

from .test_i18n import CATALOG, DIRECTORY, SAMPLES

FROM = "Lotse <no-reply@lotse.invalid>"
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
PARSER = BytesParser(policy=email.policy.default)
REPO = Path(__file__).resolve().parents[3]


def _sender(mail_from: str = FROM) -> SmtpSender:
    return SmtpSender(host="127.0.0.1", port=1, mail_from=mail_from, clock=ManualClock(T0))


def _read(data: bytes) -> list[tuple[Any, ...]]:
    """Every part: its headers (decoded values), type, parameters, transfer encoding, decoded content, defects.
    The MIME boundary is left out (the `EmailMessage` fallback draws a random one)."""
    msg = PARSER.parsebytes(data)
    boundary = msg.get_boundary() or "\0"
    return [
        (
            [(k, str(v).replace(boundary, "<b>")) for k, v in part.items()],
            part.get_content_type(),
            [(k, v) for k, v in part.get_params() or [] if k != "boundary"],
            part.get("Content-Transfer-Encoding"),
            None if part.is_multipart() else part.get_content(),
            [type(d) for d in part.defects],
        )
        for part in msg.walk()
    ]


def _both(sender: SmtpSender, to: str, rendered: Rendered, message_id: str) -> tuple[Envelope, Envelope]:
    """Today's (built and flattened by the `email` package) and ours."""
    return envelope_of(sender.build(to=to, rendered=rendered, message_id=message_id)), sender.envelope(
        to=to, rendered=rendered, message_id=message_id
    )


def _wire_ok(data: bytes, *, fold_to: int = mailbytes.MAX_OCTETS) -> None:
    assert data.count(b"\r\n") == data.count(b"\n") == data.count(b"\r"), "every line end CRLF"
    head, _, _ = data.partition(b"\r\n\r\n")
    assert all(len(line) <= mailbytes.MAX_OCTETS for line in data.split(b"\r\n"))
    # Longer only where there is no place to fold (a single word longer than 78 characters).
    assert all(len(line) <= fold_to or b" " not in line.strip() for line in head.split(b"\r\n")), head


def _same(old: Envelope, new: Envelope) -> None:
    assert (new.mail_from, new.rcpt_tos, new.smtputf8) == (old.mail_from, old.rcpt_tos, old.smtputf8)
    assert _read(new.data) == _read(old.data)


# ---------------------------------------------------------------- every template
def _emails() -> Iterator[Any]:
    for route in ROUTES:
        if Channel.EMAIL not in route.channels:
            continue
        payload = scrub(route.trigger, SAMPLES[route.trigger].model_dump(mode="json"))
        for lang in LANGUAGES:
            yield pytest.param(route, lang, payload, id=f"{route.template}-{lang}")


@pytest.mark.parametrize(("route", "lang", "payload"), list(_emails()))
def test_every_template_in_every_language_reads_back_as_the_email_package_wrote_it(route: Any, lang: str, payload: Any) -> None:
    rendered = render(CATALOG, DIRECTORY, route.template, Channel.EMAIL, lang, route.trigger, payload, "jobcenter-pb")
    sender = _sender()
    for to, r in (("client.name+tag@client.test", rendered), ("ca@ca.example", Rendered(lang, rendered.text, rendered.subject))):
        message_id = str(uuid.uuid4())
        old, new = _both(sender, to, r, message_id)
        _same(old, new)
        _wire_ok(new.data, fold_to=mailbytes.MAX_LINE)
        assert new.data.isascii() and not new.smtputf8
        msg = PARSER.parsebytes(new.data)
        assert msg["Subject"] == r.subject and msg["Message-ID"] == f"<{message_id}@notifications.lotse>"
        assert msg["Date"].datetime == T0 and msg["Content-Language"] == lang
        assert msg.get_body(preferencelist=("plain",)).get_content() == r.text  # type: ignore[union-attr]
        if r.subject and r.subject.isascii():  # the very bytes compat32 wrote (non-ASCII: other encoded words)
            assert new.data == old.data


# ---------------------------------------------------------------- headers
SUBJECTS = [
    "",
    "Frist",
    " two  spaces ",
    "tab\there",
    "Ihre Frist " * 12,
    "x " * 600,
    "a  " + "b" * 100,
    "Frist läuft ab \u2013 Ihre Überweisung an die Caritas Paderborn (Migrationsberatung) wurde versandt",
    "Ümit Çelik-Öztürk, Ваше направлення до Caritasverband Paderborn прийнято " * 4,
    "موعد نهائي يقترب: " + "سطر " * 60,
    "🎉" * 40,
    "a🎉" * 40,
    " Ümit",
    "=?utf-8?q?a?=",
]


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("html", [None, "<p>Hallo</p>"])
def test_long_and_non_ascii_subjects_read_back_the_same_on_short_lines(subject: str, html: str | None) -> None:
    rendered = Rendered("de", "Hallo\n", subject=subject, html=html)
    old, new = _both(_sender(), "c0@client.test", rendered, "m-1")
    _same(old, new)
    _wire_ok(new.data, fold_to=mailbytes.MAX_LINE)
    for line in new.data.split(b"\r\n"):
        for word in line.split():
            if word.startswith(b"=?utf-8?b?"):
                assert len(word) <= 75  # RFC 2047 2


def test_a_subject_that_cannot_be_folded_is_encoded_where_the_email_package_wrote_an_overlong_line() -> None:
    subject = "a" * 1200
    old, new = _both(_sender(), "c0@client.test", Rendered("de", "x\n", subject=subject), "m-1")
    assert max(len(line) for line in old.data.split(b"\r\n")) > 998  # today's: refused by a strict relay
    _wire_ok(new.data, fold_to=78)
    assert PARSER.parsebytes(new.data)["Subject"] == subject  # today's reads back with a leading blank


def test_header_folding_and_encoded_words_unit() -> None:
    assert mailbytes.folded("From", "Lotse <a@b.test>") == b"From: Lotse <a@b.test>\r\n"
    assert mailbytes.folded("From", "Lötse <a@b.test>") is None and mailbytes.folded("From", "a\r\nBcc: x@y.test") is None
    assert mailbytes.folded("From", "x" * 1000 + " <a@b.test>") is None  # never as encoded words: an address header
    assert mailbytes.header("Subject", "Frist") == b"Subject: Frist\r\n"
    folded = mailbytes.header("Subject", "word " * 30).decode()
    assert folded.replace("\r\n", "") == "Subject: " + "word " * 30 and all(len(x) <= 78 for x in folded.split("\r\n"))
    assert "\r\n \r\n" not in folded and not folded.startswith("Subject:\r\n")  # no blank line, never before the value
    for value in ("€" * 30, "a€" * 30, "🎉" * 30, "ä"):
        words = mailbytes.encoded_words(value).split("\r\n ")
        assert all(len(w) <= 75 for w in words)
        assert "".join(str(email.header.make_header(email.header.decode_header(w))) for w in words) == value


@pytest.mark.parametrize(
    "mail_from",
    [
        FROM,
        "no-reply@lotse.invalid",
        "Kommunales Integrationszentrum Kreis Paderborn, Benachrichtigungsdienst der Lotse-Plattform <no-reply@ki.test>",
        "Kommunales Integrationszentrum Kreis Paderborn \u2013 Benachrichtigungen <no-reply@ki.test>",  # non-ASCII: fallback
    ],
)
def test_sender_names_read_back_the_same(mail_from: str) -> None:
    rendered = Rendered("de", "Hallo\n", subject="Frist läuft ab", html="<p>Hallo</p>")
    old, new = _both(_sender(mail_from), "c0@client.test", rendered, "m-1")
    _same(old, new)
    _wire_ok(new.data)


# ---------------------------------------------------------------- what stays with the email package
@pytest.mark.parametrize(
    "to",
    [
        "amira@bücher.test",  # SMTPUTF8: EmailMessage, 8bit
        "Amira Haddad <amira@client.test>",  # a display name
        '"amira haddad"@client.test',  # a quoted local part
        "amira@[192.0.2.1]",  # an address literal
    ],
)
def test_unusual_addresses_keep_the_email_package(to: str) -> None:
    rendered = Rendered("ar", "سطر أول\n.\nFrom here\n", subject="موعد نهائي يقترب", html="<p>سطر</p>")
    assert not mailbytes.plain_address(to)
    old, new = _both(_sender(), to, rendered, "m-1")
    _same(old, new)
    assert new.smtputf8 == (not to.isascii())


@pytest.mark.parametrize("to", ["o'brien+tag@sub.client.test", "a/b=c@x.test", "{x}|~@y-z.test", "A.B.C@x", "x@-y.test"])
def test_plain_addresses_are_the_envelope_recipient_as_smtplib_parses_them(to: str) -> None:
    assert mailbytes.plain_address(to)
    old, new = _both(_sender(), to, Rendered("de", "x\n", subject="s"), "m-1")
    assert new.rcpt_tos == old.rcpt_tos == (to,) and new.data == old.data


def test_subjects_with_line_breaks_and_odd_ids_keep_the_email_package() -> None:
    for subject in ("Line\nbreak", "a\u2028b", "a\r\nb"):
        assert not mailbytes.writes(to="c0@client.test", subject=subject, message_id="m-1", language="de")
        _same(*_both(_sender(), "c0@client.test", Rendered("de", "x\n", subject=subject), "m-1"))
    assert not mailbytes.writes(to="c0@client.test", subject="s", message_id="m 1", language="de")
    assert not mailbytes.writes(to="c0@client.test", subject="s", message_id="m-1", language="de\r\nBcc: x@y")


# ---------------------------------------------------------------- bodies and the wire
BODIES = [
    "",
    "Hallo\n",
    ".\n.. zwei\nFrom here\n.",
    "no end of line",
    "Zeile\r\nmit CRLF\rund CR\n",
    "Guten Tag Frau Koval,\n\n" + "Ihre Überweisung an die Caritas Paderborn wurde versandt. " * 40 + "\n",
    "x" * 5000,
    "سطر أول\n\nسطر ثان\n🎉\n",
]


@pytest.mark.parametrize("text", BODIES)
def test_bodies_decode_to_the_same_text(text: str) -> None:
    rendered = Rendered("uk", text, subject="s", html=f"<p>{text}</p>")
    old, new = _both(_sender(), "c0@client.test", rendered, "m-1")
    _same(old, new)
    _wire_ok(new.data, fold_to=78)
    assert PARSER.parsebytes(new.data).get_body(preferencelist=("plain",)).get_content() == text  # type: ignore[union-attr]
    # Nothing is dot-stuffed in the message (base64 lines never start with "."): the client does it on the wire.
    assert dot_stuffed(new.data) == new.data + b".\r\n"
    # CRLF as written, not only after the sender's `normalise_eols`.
    from_line = mailbytes.folded("From", FROM)
    assert from_line is not None
    written = mailbytes.message_bytes(
        from_line=from_line,
        to="c0@client.test",
        subject="s",
        date="Mon, 03 Mar 2031 09:00:00 GMT",
        message_id="m-1",
        language="uk",
        text=text,
        html=rendered.html,
    )
    assert written == new.data
    _wire_ok(written, fold_to=mailbytes.MAX_LINE)


def _maildir_messages(maildir: Path, n: int) -> list[bytes]:
    deadline = time.monotonic() + 10
    while len(files := sorted((maildir / "new").glob("*"))) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return [f.read_bytes() for f in files]


async def test_through_the_local_mail_sink_both_arrive_the_same() -> None:
    """The project's own sink (lotse_cli.mailsink, as in the local stack: its own process, port and maildir here),
    over our SMTP client with pipelining: today's bytes and ours, with dots, "From " lines and a long subject."""
    port, maildir = free_port(), Path(f"/tmp/lotse-mailbytes-{uuid.uuid4().hex[:8]}")
    sink = subprocess.Popen(
        [sys.executable, "-m", "lotse_cli.mailsink", "--host", "127.0.0.1", "--port", str(port), "--maildir", str(maildir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sender = _sender()
        pairs: list[Envelope] = []
        for i, (subject, text) in enumerate(
            [("Frist läuft ab \u2013 " * 8, ".\n.. zwei\nFrom here\n."), ("Ihre Frist " * 12, "Hallo\n"), ("", "x" * 3000)]
        ):
            pairs += _both(sender, f"c{i}@client.test", Rendered("de", text, subject=subject, html=f"<p>{text}</p>"), f"m-{i}")
        for _ in range(100):
            try:
                conn = await SmtpConnection.open("127.0.0.1", port, timeout_s=5.0)
                break
            except OSError:
                await asyncio.sleep(0.1)
        assert "pipelining" in conn.features
        try:
            assert await conn.transfer(pairs) == [None] * len(pairs)
        finally:
            await conn.quit()
        files = await asyncio.to_thread(_maildir_messages, maildir, len(pairs))
        assert len(files) == len(pairs)
        by_id: dict[str, list[list[tuple[Any, ...]]]] = {}
        for raw in files:
            parts = _read(raw)
            by_id.setdefault(str(PARSER.parsebytes(raw)["Message-ID"]), []).append(_without_sink_headers(parts))
        assert len(by_id) == 3 and all(len(v) == 2 and v[0] == v[1] for v in by_id.values())
        for i in range(3):  # and what arrived is what was sent
            assert by_id[f"<m-{i}@notifications.lotse>"][0] == _read(pairs[2 * i + 1].data)
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(maildir, ignore_errors=True)


def _without_sink_headers(parts: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The sink adds X-Peer, X-MailFrom and X-RcptTo to the message's own headers."""
    (headers, *rest), *others = parts
    return [([h for h in headers if h[0] not in ("X-Peer", "X-MailFrom", "X-RcptTo")], *rest), *others]
