"""The demo mail sink (`lotse_cli.mailsink`) as a subprocess on a free port: what standard clients and raw pipelined
or fragmented input get, and that its maildir files are those `aiosmtpd.handlers.Mailbox` wrote, for the readers
(`lotse_cli.demo.find_mail`, `bench.chaos.checker.maildir_ids`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import re
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

import bench.chaos.checker as checker
from lotse_cli.demo import find_mail
from tests.peers import free_port

MAX_SIZE = 64 * 1024
NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.(.+)$")


@dataclass
class Sink:
    proc: subprocess.Popen[bytes]
    port: int
    maildir: Path
    log: Path

    def files(self) -> list[Path]:
        """Files in new/, in delivery order (the name's sequence number)."""
        return sorted((self.maildir / "new").iterdir(), key=lambda p: int(NAME.match(p.name).group(4)))  # type: ignore[union-attr]

    def contents(self) -> list[bytes]:
        return [p.read_bytes() for p in self.files()]


def _start(cmd: list[str], port: int, maildir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc
        assert time.monotonic() < deadline, "the sink did not listen"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_sink(tmp_path: Path, name: str = "sink", *extra: str) -> Iterator[Sink]:
    port, maildir, log = free_port(), tmp_path / name / "mail", tmp_path / f"{name}.log"
    cmd = [sys.executable, "-m", "lotse_cli.mailsink", "--host", "127.0.0.1", "--port", str(port), "--maildir", str(maildir)]
    proc = _start([*cmd, "--max-size", str(MAX_SIZE), *extra], port, maildir, log)
    try:
        yield Sink(proc, port, maildir, log)
    finally:
        _stop(proc)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    with running_sink(tmp_path) as s:
        yield s
    # No connection's input made the sink log a failure.
    assert "mailsink_session_failed" not in s.log.read_text()


class Raw:
    """A plain socket client: sends bytes as given, reads whole (multi-line) replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220

    def reply(self) -> tuple[int, bytes]:
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            assert line.endswith(b"\r\n"), f"connection closed after {lines!r}: {line!r}"
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines)

    def codes(self, n: int) -> list[int]:
        return [self.reply()[0] for _ in range(n)]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str | bytes) -> int:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()[0]

    def closed(self) -> bool:
        return self.file.readline() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _transaction(n: int, body: bytes) -> bytes:
    return b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b%d@y.org>\r\nDATA\r\n" % n + body + b".\r\n"


def _messages() -> list[Message]:
    """What the notifications service sends: compat32 multipart (ASCII addresses) and EmailMessage (SMTPUTF8)."""
    plain = MIMEText("Hallo,\nIhre Überweisung an die Caritas wurde versandt.\n.Punkt am Zeilenanfang\n..zwei\n", "plain", "utf-8")
    multi = MIMEMultipart("alternative")
    multi.attach(plain)
    multi.attach(MIMEText("<p>Grüße aus Paderborn</p>\n" * 40, "html", "utf-8"))
    multi["From"], multi["To"], multi["Subject"] = "noreply@lotse.example", "olena@example.org", "Ihre Überweisung"
    multi["Message-ID"] = "<m1@notifications.lotse>"
    utf8 = EmailMessage()
    utf8["From"], utf8["To"], utf8["Subject"] = "noreply@lotse.example", "jörg@bücher.example", "Grüße"
    utf8["Message-ID"] = "<m2@notifications.lotse>"
    utf8.set_content("Hallo Jörg,\n.\n..\nbis bald\n")
    utf8.add_alternative("<p>Hallo Jörg</p>", subtype="html")
    for m in (multi, utf8):
        m.as_bytes()  # fixes the MIME boundaries, so that both sinks get the same bytes
    return [multi, utf8]


def _send_all(port: int, messages: list[Message]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(messages[0])
        smtp.send_message(messages[1])  # smtplib asks for SMTPUTF8 itself (a non-ASCII address)
        smtp.sendmail(
            "ops@lotse.example", ["a@x.org", "b@y.org"], b"Subject: plain\r\nMessage-ID: <m3@notifications.lotse>\r\n\r\nbody\r\n"
        )
        smtp.sendmail("", ["bounce@x.org"], b"Subject: null sender, headers only\r\n")


def test_files_are_those_aiosmtpd_mailbox_wrote_and_the_readers_find_them(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _messages()
    mailbox_port, mailbox_dir = free_port(), tmp_path / "aiosmtpd-mail"
    cmd = [
        sys.executable,
        "-m",
        "aiosmtpd",
        "-n",
        "-u",
        "-l",
        f"127.0.0.1:{mailbox_port}",
        "-c",
        "aiosmtpd.handlers.Mailbox",
        str(mailbox_dir),
    ]
    mailbox = _start(cmd, mailbox_port, mailbox_dir, tmp_path / "aiosmtpd.log")
    try:
        since = int(time.time())
        _send_all(sink.port, messages)
        _send_all(mailbox_port, messages)
    finally:
        _stop(mailbox)
    until = time.time()

    ours = sink.files()
    assert len(ours) == 4
    assert not list((sink.maildir / "tmp").iterdir())
    for seq, path in enumerate(ours, start=1):
        stamp, usec, pid, q, host = NAME.match(path.name).groups()  # type: ignore[union-attr]
        assert since <= int(stamp) <= until and int(usec) < 1_000_000
        assert (int(pid), int(q), host) == (sink.proc.pid, seq, socket.gethostname())
    # Byte for byte what aiosmtpd's Mailbox handler wrote, up to the client's port in X-Peer.
    theirs = sorted((mailbox_dir / "new").iterdir(), key=lambda p: int(NAME.match(p.name).group(4)))  # type: ignore[union-attr]
    peer = re.compile(rb"^X-Peer: \('127\.0\.0\.1', \d+\)\n", re.M)
    assert [peer.subn(b"X-Peer\n", p.read_bytes()) for p in ours] == [peer.subn(b"X-Peer\n", p.read_bytes()) for p in theirs]
    first = ours[0].read_bytes()
    assert b"\r" not in first and b"\n.Punkt" not in first  # LF line ends; base64 body, so no dot line to unstuff here
    assert first.split(b"\n\n", 1)[0].endswith(b"X-MailFrom: noreply@lotse.example\nX-RcptTo: olena@example.org")
    assert b"X-MailFrom: <>\nX-RcptTo: bounce@x.org\n\n" in sink.contents()[3]

    # The readers: the demo's lookup by Message-ID (files older than `since` skipped by name) and the fault suite's.
    found = find_mail([sink.maildir], "m2", since)
    assert found is not None and found[0] == sink.maildir
    assert found[1]["To"] == "jörg@bücher.example"
    assert "Hallo Jörg,\n.\n..\nbis bald" in found[1].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert find_mail([sink.maildir], "m1", until + 1) is None
    monkeypatch.setattr(checker, "MAILDIR", sink.maildir)
    ids, names = checker.maildir_ids()
    assert ids["<m1@notifications.lotse>"] == ids["<m2@notifications.lotse>"] == ids["<m3@notifications.lotse>"] == 1
    assert names == {p.name for p in ours}


def test_pipelined_messages_in_one_write_with_dot_stuffing(sink: Sink) -> None:
    c = Raw(sink.port)
    c.send(b"EHLO client.example\r\n")
    code, text = c.reply()
    assert code == 250
    for ext in (b"PIPELINING", b"8BITMIME", b"SMTPUTF8", b"SIZE %d" % MAX_SIZE):
        assert b"250-" + ext + b"\r\n" in text or b"250 " + ext + b"\r\n" in text
    bodies = [
        b"Subject: one\r\n\r\n..leading dot\r\n...\r\n..\r\nend\r\n",
        b"..first line is dotted\r\nno headers\r\n",
        b"Subject: three\r\n\r\n\xc3\xbc 8bit\r\n",
    ]
    # Every command of three messages and QUIT in one write, as a pipelining client may send them.
    c.send(b"".join(_transaction(n, body) for n, body in enumerate(bodies)) + b"QUIT\r\n")
    assert c.codes(13) == [250, 250, 354, 250] * 3 + [221]
    assert c.closed()
    got = sink.contents()
    assert [g.split(b"X-Peer:")[0] for g in got[:1]] == [b"Subject: one\n"]
    assert got[0].endswith(b"X-MailFrom: a@x.org\nX-RcptTo: b0@y.org\n\n.leading dot\n..\n.\nend\n")
    # No header block: the headers Mailbox added come first, then a blank line.
    assert got[1].startswith(b"X-Peer: ") and got[1].endswith(b"X-RcptTo: b1@y.org\n\n.first line is dotted\nno headers\n")
    assert got[2].endswith(b"X-RcptTo: b2@y.org\n\n\xc3\xbc 8bit\n")


def test_commands_and_data_split_byte_by_byte(sink: Sink) -> None:
    c = Raw(sink.port)
    stream = b"HELO client.example\r\n" + _transaction(7, b"Subject: split\r\n\r\nbyte\r\n..by byte\r\n") + b"NOOP\r\n"
    for i in range(len(stream)):
        c.send(stream[i : i + 1])
        time.sleep(0.0005)  # pacing, so that most bytes arrive in reads of their own
    assert c.codes(6) == [250, 250, 250, 354, 250, 250]
    [got] = sink.contents()
    assert got.startswith(b"Subject: split\nX-Peer: ") and got.endswith(b"X-RcptTo: b7@y.org\n\nbyte\n.by byte\n")


def test_oversize_message_is_refused_with_552_and_the_connection_stays_usable(sink: Sink) -> None:
    # Declared too big: refused at MAIL (smtplib declares the size because the sink advertises SIZE).
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail("a@x.org", ["b@y.org"], b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 1000)
        assert refused.value.smtp_code == 552
        assert smtp.sendmail("a@x.org", ["b@y.org"], b"Subject: small\r\n\r\nok\r\n") == {}
    # Not declared: the whole message is read (and dropped), then 552; the next message on the connection is filed.
    c = Raw(sink.port)
    assert c.cmd("EHLO client.example") == 250
    assert c.cmd("MAIL FROM:<a@x.org> SIZE=99999999") == 552
    big = b"Subject: big\r\n\r\n" + (b"y" * 900 + b"\r\n") * 200  # 180 kB, beyond the 64 KiB limit
    c.send(_transaction(1, big))
    assert c.codes(4) == [250, 250, 354, 552]
    c.send(_transaction(2, b"Subject: after\r\n\r\nstill here\r\n"))
    assert c.codes(4) == [250, 250, 354, 250]
    got = sink.contents()
    assert len(got) == 2 and got[0].startswith(b"Subject: small\n") and got[1].startswith(b"Subject: after\n")


def test_bad_sequences_unknown_commands_and_long_lines(sink: Sink) -> None:
    c = Raw(sink.port)
    assert c.cmd("MAIL FROM:<a@x.org>") == 503  # before HELO
    assert c.cmd("EHLO client.example") == 250
    assert c.cmd("RCPT TO:<b@y.org>") == 503  # before MAIL
    assert c.cmd("DATA") == 503
    assert c.cmd("MAIL FROM:<a@x.org>") == 250
    assert c.cmd("MAIL FROM:<a@x.org>") == 503  # nested
    assert c.cmd("DATA") == 503  # before RCPT
    assert c.cmd("RSET") == 250
    assert c.cmd("RCPT TO:<b@y.org>") == 503  # the transaction is gone
    assert c.cmd("MAIL FROM:<jörg@bücher.example>") == 553  # non-ASCII without SMTPUTF8
    assert c.cmd("MAIL FROM:<a@x.org> FOO=1") == 555
    assert c.cmd("MAIL FROM:<a@x.org> BODY=9BIT") == 501
    assert c.cmd("MAIL FROM") == 501
    assert c.cmd("FROBNICATE") == 500
    assert c.cmd("EXPN staff") == 502
    assert c.cmd("VRFY someone") == 252
    assert c.cmd("HELP") == 214
    assert c.cmd("NOOP") == 250
    assert c.cmd(b"\xff\xfe\x00") == 500
    assert c.cmd("NOOP " + "x" * 1000) == 500  # command line too long
    assert c.cmd("MAIL FROM:<a@x.org> SIZE=10 BODY=8BITMIME") == 250
    assert c.cmd("RCPT TO:<b@y.org>") == 250
    assert c.cmd("DATA") == 354
    c.send(b"Subject: long line\r\n\r\n" + b"z" * 999 + b"\r\n.\r\n")  # RFC 5321: 998 octets and CRLF at most
    assert c.reply()[0] == 500
    assert c.cmd("QUIT") == 221
    assert sink.contents() == []


def test_garbage_never_takes_the_sink_down(sink: Sink) -> None:
    rnd = random.Random(14)
    words = [b"EHLO x", b"HELO", b"MAIL FROM:<a@b>", b"MAIL FROM:", b"RCPT TO:<c@d>", b"DATA", b".", b"..", b"RSET", b"SIZE=",
             b"MAIL FROM:<a@b> SIZE=99999999999999999999", b"RCPT TO:<>", b"\x00", b"\xff", b"<", b">", b"\r", b"\n", b"\r\n", b" "]  # fmt: skip
    for _ in range(40):
        chunks = [rnd.choice(words) if rnd.random() < 0.7 else rnd.randbytes(rnd.randint(1, 700)) for _ in range(rnd.randint(1, 60))]
        with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as s:
            for chunk in chunks:
                s.sendall(chunk + (b"\r\n" if rnd.random() < 0.5 else b""))
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # the sink answers, then closes on our end of input
                pass
    assert sink.proc.poll() is None
    assert "mailsink_session_failed" not in sink.log.read_text()  # no input made a session fail
    before = len(sink.files())
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
        assert smtp.sendmail("a@x.org", ["b@y.org"], b"Subject: after the garbage\r\n\r\nok\r\n") == {}
    assert len(sink.files()) == before + 1


IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100


def _inotify_events(fd: int) -> list[tuple[int, str]]:
    """(mask, name) of every queued event (struct inotify_event: wd, mask, cookie, len, name)."""
    events, data = [], b""
    with contextlib.suppress(BlockingIOError):
        while True:
            data += os.read(fd, 65536)
    while data:
        _wd, mask, _cookie, size = struct.unpack_from("iIII", data)
        events.append((mask, data[16 : 16 + size].rstrip(b"\0").decode()))
        data = data[16 + size :]
    return events


def test_a_file_appears_in_new_only_complete(sink: Sink) -> None:
    # inotify on new/: a file written there would show as created and modified; a finished one moved in from tmp/
    # shows only as moved in.
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, str(sink.maildir / "new").encode(), IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO) >= 0
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
            for i in range(3):
                smtp.sendmail("a@x.org", ["b@y.org"], b"Subject: %d\r\n\r\n" % i + b"line\r\n" * 5000)
        events = _inotify_events(fd)
    finally:
        os.close(fd)
    names = [p.name for p in sink.files()]
    assert events == [(IN_MOVED_TO, name) for name in names]
    assert all(p.read_bytes().endswith(b"\n\n" + b"line\n" * 5000) for p in sink.files())


def test_sigterm_finishes_the_message_in_progress_then_exits(tmp_path: Path) -> None:
    with running_sink(tmp_path) as sink:
        busy, idle = Raw(sink.port), Raw(sink.port)
        assert idle.cmd("EHLO idle.example") == 250
        assert busy.cmd("EHLO busy.example") == 250
        busy.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\nSubject: in flight\r\n\r\nfirst half\r\n")
        assert busy.codes(3) == [250, 250, 354]
        os.kill(sink.proc.pid, signal.SIGTERM)
        assert idle.reply()[0] == 421 and idle.closed()  # between transactions: closed at once
        with pytest.raises(OSError):  # no longer listening
            socket.create_connection(("127.0.0.1", sink.port), timeout=2).close()
        busy.send(b"second half\r\n.\r\nMAIL FROM:<a@x.org>\r\n")
        assert busy.codes(2) == [250, 421] and busy.closed()
        assert sink.proc.wait(10) == 0
        [got] = sink.contents()
        assert got.startswith(b"Subject: in flight\n") and got.endswith(b"\n\nfirst half\nsecond half\n")
        assert not list((sink.maildir / "tmp").iterdir())
