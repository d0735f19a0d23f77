"""The local network's demo mail sink: an SMTP server that files every message it accepts as a maildir file.

    .venv/bin/python -m lotse_cli.mailsink --host 127.0.0.1 --port 8025 --maildir .run/mail [--max-size BYTES]

It replaces `python -m aiosmtpd -c aiosmtpd.handlers.Mailbox DIR`, which parsed every message with the `email`
package and generated it again (~1.4 ms CPU per e-mail, more than any Lotse service spends on it). This sink does
no e-mail parsing: one asyncio `Protocol` (on uvloop when installed) per connection, a byte-level state machine,
and one file per message. The files are what the Mailbox handler wrote for a well-formed message, so that every
reader keeps working (`lotse_cli.demo.find_mail`, `bench.chaos.checker.maildir_ids`, the tests):

- written under `tmp/`, then renamed into `new/`: a reader never sees a half-written file in `new/`;
- named like Python's `mailbox.Maildir`, `<int time>.M<usec>P<pid>Q<seq>.<host>`: readers skip files delivered
  before a point in time by the name's first field;
- the message bytes as received, dot-unstuffed, CRLF turned into LF, with the three headers Mailbox added at the
  end of the header block: `X-Peer` (the client's address as Python prints the tuple), `X-MailFrom`, `X-RcptTo`
  (the recipients joined by ", ").

Mailbox wrote the headers again through the `email` generator (compat32), so where a message's headers were unusual
(an empty value, blanks at the end of a folded line, non-ASCII in a folded header) its file differed from what the
client sent; this sink keeps the client's bytes there.

ESMTP: EHLO/HELO, MAIL (SIZE, BODY, SMTPUTF8), RCPT, DATA, RSET, NOOP, QUIT, VRFY (252), HELP; advertises and
honours PIPELINING, 8BITMIME, SMTPUTF8 and SIZE. No authentication, no TLS: it listens on the loopback interface
for a demo. A message is written (without fsync: a demo sink) before its 250 goes out; on SIGTERM the sink stops
listening, lets a transaction in progress finish (a grace period), answers 421 on every connection and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

DEFAULT_MAX_SIZE = 32 * 1024 * 1024  # as aiosmtpd's default
# RFC 5321 4.5.3.1.4: 512 octets per command line with CRLF, plus what the advertised extensions' MAIL parameters
# may add (RFC 1870 SIZE 26, RFC 6152 BODY 14, RFC 6531 SMTPUTF8 10).
COMMAND_LIMIT = 512 + 26 + 14 + 10
# RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
TEXT_LINE_LIMIT = 998
MAX_RECIPIENTS = 1000
IDLE_TIMEOUT_S = 300.0
GRACE_S = 5.0

_CMD, _DATA = 0, 1
# Header lines as `email.feedparser` tells them from the body (its headerRE, without the mbox "From " line).
_HEADERS = re.compile(rb"(?:(?:[\041-\071\073-\176]*:|[\t ])[^\n]*\n)*")
_END = b"\r\n.\r\n"


def _reply(text: str) -> bytes:
    return text.encode() + b"\r\n"


R_OK = _reply("250 OK")
R_DATA = _reply("354 End data with <CR><LF>.<CR><LF>")
R_BYE = _reply("221 Bye")
R_SHUTDOWN = _reply("421 Service shutting down, closing connection")
R_IDLE = _reply("421 Timeout, closing connection")
R_BAD_SYNTAX = _reply("500 Error: bad syntax")
R_LINE_TOO_LONG = _reply("500 Command line too long")
R_TEXT_TOO_LONG = _reply("500 Line too long (see RFC5321 4.5.3.1.6)")
R_TOO_MUCH = _reply("552 Error: Too much mail data")
R_NOT_IMPLEMENTED = _reply("502 Command not implemented")
R_HELO_FIRST = _reply("503 Error: send HELO first")
R_NESTED = _reply("503 Error: nested MAIL command")
R_NEED_MAIL = _reply("503 Error: need MAIL command")
R_NEED_RCPT = _reply("503 Error: need RCPT command")
R_VRFY = _reply("252 Cannot VRFY user, but will accept message and attempt delivery")
R_PARAMS = _reply("555 MAIL FROM/RCPT TO parameters not recognized or not implemented")
R_SIZE = _reply("552 Error: message size exceeds fixed maximum message size")
R_UTF8 = _reply("553 5.6.7 Non-ASCII address requires SMTPUTF8")
R_TOO_MANY = _reply("452 Error: too many recipients")
R_FAILED = _reply("451 Requested action aborted: local error in processing")
R_HELP = _reply("214 Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP")
NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "SEND", "SOML", "SAML", "STARTTLS", "AUTH", "BDAT"})


def log(event: str, **fields: object) -> None:
    print(json.dumps({"ts": time.time(), "event": event, "service": "mailsink", **fields}), file=sys.stderr, flush=True)


class Maildir:
    """Files messages like `mailbox.Maildir.add`: a unique name under tmp/, then a rename into new/."""

    def __init__(self, root: Path) -> None:
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.tmp, self.new = str(root / "tmp") + os.sep, str(root / "new") + os.sep
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self.pid = os.getpid()
        self.seq = 0

    def deliver(self, parts: list[bytes | memoryview]) -> str:
        """Writes the concatenation of `parts` as one new message; returns its file name."""
        while True:
            now = time.time()
            self.seq += 1
            name = f"{int(now)}.M{int(now % 1 * 1e6)}P{self.pid}Q{self.seq}.{self.host}"
            try:
                fd = os.open(self.tmp + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            break
        try:
            try:
                total = sum(len(p) for p in parts)
                written = os.writev(fd, parts)
                if written < total:  # a short write (a signal, a full disk): write the rest
                    rest = memoryview(b"".join(parts))[written:]
                    while rest:
                        rest = rest[os.write(fd, rest) :]
            finally:
                os.close(fd)
            os.rename(self.tmp + name, self.new + name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp + name)
            raise
        return name


def _path_and_params(arg: str, keyword: str) -> tuple[str, list[str]] | None:
    """`FROM:<a@b> SIZE=1` (keyword "FROM:") → ("a@b", ["SIZE=1"]); None if it does not parse."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].lstrip(" ")
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        addr, params = rest[1:end], rest[end + 1 :].split()
    else:  # lenient: a bare address, as some clients send it
        addr, _, tail = rest.partition(" ")
        params = tail.split()
        if not addr:
            return None
    if addr.startswith("@") and ":" in addr:  # an RFC 821 source route: ignored (RFC 5321 C)
        addr = addr.split(":", 1)[1]
    return addr, params


def _compat32_headers(*headers: tuple[str, str]) -> bytes:
    from email.policy import compat32

    return b"".join(compat32.fold_binary(name, value).replace(b"\r\n", b"\n") for name, value in headers)


class Session(asyncio.Protocol):
    """One SMTP connection. Input is buffered; every complete command line or message in it is handled in order
    (pipelining), and the replies to one read go out in one write."""

    def __init__(self, sink: MailSink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buf = bytearray()
        self.scan = 0  # where the next search for LF (or the end of data) starts
        self.state = _CMD
        self.skip_line = False  # inside a command line that was too long: drop it up to its LF
        self.too_much = False  # the message being received passed the size limit: drop it up to its end
        self.greeted = False
        self.extended = False
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.utf8 = False
        self.closing = False
        self.last = time.monotonic()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peer = str(transport.get_extra_info("peername"))
        self.sink.sessions.add(self)
        if self.sink.stopping:
            self._close_with(R_SHUTDOWN)
            return
        transport.write(self.sink.greeting)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.sessions.discard(self)
        self.closing = True
        if self.sink.stopping and not self.sink.sessions:
            self.sink.all_closed.set()

    def pause_writing(self) -> None:  # a client that does not read its replies: stop reading its commands
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last = time.monotonic()
        self.buf += data
        out: list[bytes] = []
        try:
            self._process(out)
        except Exception as e:  # never let one connection's input take the sink down
            log("mailsink_session_failed", peer=self.peer, error=repr(e))
            out.append(R_FAILED)
            self.closing = True
        transport = self.transport
        if transport is not None:
            if out:
                transport.write(b"".join(out))
            if self.closing:
                transport.close()

    def eof_received(self) -> bool | None:
        return None  # close the connection

    # the state machine

    def _close_with(self, reply: bytes) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(reply)
            self.transport.close()

    def _reset(self) -> None:
        self.mail_from, self.rcpts, self.utf8 = None, [], False

    def _process(self, out: list[bytes]) -> None:
        buf = self.buf
        while not self.closing:
            if self.state == _DATA:
                if not self._data(out):
                    return
                continue
            if self.sink.stopping and self.mail_from is None:
                out.append(R_SHUTDOWN)
                self.closing = True
                return
            i = buf.find(b"\n", self.scan)
            if i < 0:
                if len(buf) > COMMAND_LIMIT:
                    if not self.skip_line:
                        out.append(R_LINE_TOO_LONG)
                        self.skip_line = True
                    del buf[:]
                    self.scan = 0
                else:
                    self.scan = len(buf)
                return
            line = bytes(buf[:i])
            del buf[: i + 1]
            self.scan = 0
            if self.skip_line:
                self.skip_line = False
                continue
            if len(line) >= COMMAND_LIMIT:  # with its LF, over the limit
                out.append(R_LINE_TOO_LONG)
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            out.append(self._command(line))

    def _data(self, out: list[bytes]) -> bool:
        """Consumes message data from the buffer; True when the message ended (and was answered)."""
        buf = self.buf
        # The buffer starts with a CRLF put there at DATA, so that the end (and a dot to unstuff) on the first line
        # looks like on any other.
        idx = buf.find(_END, self.scan)
        if idx < 0:
            if len(buf) > self.sink.max_size + 5:  # keep only what may be the start of the end marker
                del buf[:-4]
                self.too_much = True
            self.scan = max(0, len(buf) - 4)
            return False
        if self.too_much or idx > self.sink.max_size:
            out.append(R_TOO_MUCH)
        else:
            out.append(self._deliver(bytes(buf[: idx + 2])))
        del buf[: idx + 5]
        self.scan = 0
        self.state = _CMD
        self.too_much = False
        self._reset()
        return True

    def _deliver(self, raw: bytes) -> bytes:
        # RFC 5321 4.5.2: the first dot of a line starting with one is removed; then LF line ends, as Mailbox wrote.
        body = raw.replace(b"\r\n.", b"\r\n").replace(b"\r\n", b"\n")[1:]
        if len(body) > TEXT_LINE_LIMIT and max(map(len, body.split(b"\n"))) > TEXT_LINE_LIMIT:
            return R_TEXT_TOO_LONG
        assert self.mail_from is not None
        rcpt_to = ", ".join(self.rcpts)
        if self.mail_from.isascii() and rcpt_to.isascii():
            extra = f"X-Peer: {self.peer}\nX-MailFrom: {self.mail_from}\nX-RcptTo: {rcpt_to}\n".encode()
        else:  # SMTPUTF8 addresses: RFC 2047-encoded, as Mailbox's generator (compat32) wrote them
            extra = _compat32_headers(("X-Peer", self.peer), ("X-MailFrom", self.mail_from), ("X-RcptTo", rcpt_to))
        # At the end of the header block, where `email.message.Message.__setitem__` appended them; the block ends, as
        # for the `email` parser, at the first line that is no header (RFC 5322 field or continuation).
        end = _HEADERS.match(body).end()  # type: ignore[union-attr]  # (matches any input, if only the empty string)
        view = memoryview(body)
        if body[end : end + 1] == b"\n":
            parts: list[bytes | memoryview] = [view[:end], extra, view[end:]]
        else:  # no blank line after the headers (or an empty message): the generator wrote one
            parts = [view[:end], extra, b"\n", view[end:]]
        try:
            self.sink.maildir.deliver(parts)
        except OSError as e:
            log("mailsink_delivery_failed", error=repr(e))
            return R_FAILED
        self.sink.delivered += 1
        return R_OK

    def _command(self, line: bytes) -> bytes:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return R_BAD_SYNTAX
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        arg = arg.strip(" ")
        handler = _COMMANDS.get(verb)
        if handler is not None:
            return handler(self, arg)
        if verb in NOT_IMPLEMENTED:
            return R_NOT_IMPLEMENTED
        if not verb:
            return R_BAD_SYNTAX
        return _reply(f'500 Error: command "{verb[:32]}" not recognized')

    def _helo(self, arg: str) -> bytes:
        if not arg:
            return _reply("501 Syntax: HELO hostname")
        self.greeted, self.extended = True, False
        self._reset()
        return _reply(f"250 {self.sink.hostname}")

    def _ehlo(self, arg: str) -> bytes:
        if not arg:
            return _reply("501 Syntax: EHLO hostname")
        self.greeted, self.extended = True, True
        self._reset()
        return self.sink.ehlo_reply

    def _mail(self, arg: str) -> bytes:
        if not self.greeted:
            return R_HELO_FIRST
        if self.mail_from is not None:
            return R_NESTED
        parsed = _path_and_params(arg, "FROM:")
        if parsed is None:
            return _reply("501 Syntax: MAIL FROM: <address>" + (" [SP <mail-parameters>]" if self.extended else ""))
        addr, params = parsed
        if params and not self.extended:
            return R_PARAMS
        utf8 = False
        for p in params:
            key, eq, value = p.partition("=")
            key = key.upper()
            if key == "SIZE" and eq and value.isascii() and value.isdigit():
                if int(value) > self.sink.max_size:
                    return R_SIZE
            elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                pass
            elif key == "SMTPUTF8" and not eq:
                utf8 = True
            elif key in ("SIZE", "BODY", "SMTPUTF8"):
                return _reply("501 Error: bad syntax in MAIL parameter " + key)
            else:
                return R_PARAMS
        if not utf8 and not addr.isascii():
            return R_UTF8
        # The null reverse-path as aiosmtpd recorded it.
        self.mail_from, self.rcpts, self.utf8 = addr or "<>", [], utf8
        return R_OK

    def _rcpt(self, arg: str) -> bytes:
        if not self.greeted:
            return R_HELO_FIRST
        if self.mail_from is None:
            return R_NEED_MAIL
        parsed = _path_and_params(arg, "TO:")
        if parsed is None or not parsed[0]:
            return _reply("501 Syntax: RCPT TO: <address>")
        addr, params = parsed
        if params:
            return R_PARAMS
        if not self.utf8 and not addr.isascii():
            return R_UTF8
        if len(self.rcpts) >= MAX_RECIPIENTS:
            return R_TOO_MANY
        self.rcpts.append(addr)
        return R_OK

    def _data_command(self, arg: str) -> bytes:
        if not self.greeted:
            return R_HELO_FIRST
        if arg:
            return _reply("501 Syntax: DATA")
        if not self.rcpts:
            return R_NEED_RCPT
        self.state = _DATA
        self.buf[0:0] = b"\r\n"
        self.scan = 0
        return R_DATA

    def _rset(self, arg: str) -> bytes:
        if arg:
            return _reply("501 Syntax: RSET")
        self._reset()
        return R_OK

    def _noop(self, arg: str) -> bytes:
        return R_OK

    def _quit(self, arg: str) -> bytes:
        if arg:
            return _reply("501 Syntax: QUIT")
        self.closing = True
        return R_BYE

    def _vrfy(self, arg: str) -> bytes:
        return R_VRFY if arg else _reply("501 Syntax: VRFY <address>")

    def _help(self, arg: str) -> bytes:
        return R_HELP


_COMMANDS: dict[str, Callable[[Session, str], bytes]] = {
    "HELO": Session._helo,
    "EHLO": Session._ehlo,
    "MAIL": Session._mail,
    "RCPT": Session._rcpt,
    "DATA": Session._data_command,
    "RSET": Session._rset,
    "NOOP": Session._noop,
    "QUIT": Session._quit,
    "VRFY": Session._vrfy,
    "HELP": Session._help,
}


class MailSink:
    def __init__(self, maildir: Path, *, max_size: int = DEFAULT_MAX_SIZE, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.maildir = Maildir(maildir)
        self.max_size = max_size
        self.idle_timeout_s = idle_timeout_s
        self.hostname = socket.gethostname()  # not getfqdn(): no DNS lookup at start
        self.greeting = _reply(f"220 {self.hostname} Lotse demo mail sink ESMTP")
        self.ehlo_reply = b"".join(
            _reply(line)
            for line in (f"250-{self.hostname}", f"250-SIZE {max_size}", "250-8BITMIME", "250-SMTPUTF8", "250-PIPELINING", "250 HELP")
        )
        self.sessions: set[Session] = set()
        self.stopping = False
        self.all_closed = asyncio.Event()  # set when the last session closed after stop_listening()
        self.delivered = 0
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Session(self), host, port, reuse_address=True)

    def stop_listening(self) -> None:
        """Stops accepting connections; idle sessions get 421 now, others after the message they are receiving."""
        self.stopping = True
        if self.server is not None:
            self.server.close()
        for s in list(self.sessions):
            if s.state == _CMD and s.mail_from is None:
                s._close_with(R_SHUTDOWN)

    async def drain(self, grace_s: float) -> None:
        """Waits up to `grace_s` for the sessions still in a transaction, then closes what is left."""
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), timeout=grace_s)
        for s in list(self.sessions):
            s._close_with(R_SHUTDOWN)
        await asyncio.sleep(0.01)  # lets the transports write their last reply

    def close_idle(self) -> None:
        limit = time.monotonic() - self.idle_timeout_s
        for s in list(self.sessions):
            if s.last < limit:
                s._close_with(R_IDLE)


async def serve(host: str, port: int, maildir: Path, *, max_size: int = DEFAULT_MAX_SIZE, grace_s: float = GRACE_S) -> None:
    sink = MailSink(maildir, max_size=max_size)
    await sink.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log("mailsink_started", host=host, port=port, maildir=str(maildir), max_size=max_size, pid=os.getpid())
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=min(30.0, sink.idle_timeout_s))
        except TimeoutError:
            sink.close_idle()
    sink.stop_listening()
    await sink.drain(grace_s)
    log("mailsink_stopped", delivered=sink.delivered)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lotse_cli.mailsink", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8025)
    p.add_argument("--maildir", type=Path, required=True)
    p.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, help="message size limit in bytes (advertised as SIZE)")
    p.add_argument("--grace", type=float, default=GRACE_S, help="seconds a transaction in progress may take to finish on SIGTERM")
    args = p.parse_args(argv)
    coro = serve(args.host, args.port, args.maildir, max_size=args.max_size, grace_s=args.grace)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
