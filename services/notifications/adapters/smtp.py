"""An asyncio SMTP client that pipelines (RFC 2920) a batch of messages over one connection.

With `PIPELINING` advertised a message costs about one round trip: its `MAIL FROM`, `RCPT TO` and `DATA` go in one
write, and the next message's three commands go in the same write as this message's content and end of data. Without
it, one command at a time, as smtplib does. Every reply is read in order and attributed to the command (and so the
message) it answers.

Failures are smtplib's exception classes with smtplib's codes, so the sender maps them to outcomes exactly as it did
when smtplib sent (`senders._smtp_outcome`). Nothing here logs; the password never leaves `_auth`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Final

CRLF: Final = b"\r\n"
MAX_LINE: Final = 8192  # smtplib's limit for a reply line
_MAX_CHALLENGES: Final = 5
_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_DOT = re.compile(rb"(?m)^\.")


class SMTPProtocolError(smtplib.SMTPException):
    """The server's answer is not SMTP (a malformed reply, data before the TLS handshake): the connection is dropped."""


class Unsent:
    """Marks a message whose transaction was not completed on this connection (it may go over another)."""

    def __repr__(self) -> str:
        return "UNSENT"


UNSENT: Final = Unsent()
Result = BaseException | None | Unsent  # None: accepted; an exception: refused or failed; UNSENT: send it again


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message as it goes over the wire: envelope addresses and the content (CRLF line ends, not dot-stuffed)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    smtputf8: bool = False


def envelope_of(msg: Message) -> Envelope:
    """What `smtplib.SMTP.send_message` sends for `msg`: the sender from `Sender`/`From`, the recipients from
    `To`/`Bcc`/`Cc` (the `Resent-` block if there is one), `Bcc` dropped, flattened by `BytesGenerator` with CRLF,
    with the message's policy cloned to `utf8=True` when an address is not ASCII (SMTPUTF8)."""
    resent = msg.get_all("Resent-Date")
    if resent is None:
        prefix = ""
    elif len(resent) == 1:
        prefix = "Resent-"
    else:
        raise ValueError("message has more than one 'Resent-' header block")
    sender = msg[prefix + "Sender"] if (prefix + "Sender") in msg else msg[prefix + "From"]
    from_addr = getaddresses([str(sender)])[0][1]
    fields = [str(f) for f in (msg[prefix + "To"], msg[prefix + "Bcc"], msg[prefix + "Cc"]) if f is not None]
    to_addrs = tuple(a[1] for a in getaddresses(fields))
    if "Bcc" in msg or "Resent-Bcc" in msg:  # copied only then: the usual message has neither
        msg = copy.copy(msg)
        del msg["Bcc"]
        del msg["Resent-Bcc"]
    international = not "".join([from_addr, *to_addrs]).isascii()
    with io.BytesIO() as out:
        # The same generators as smtplib (the plain one mangles "From " lines as compat32 says).
        g = BytesGenerator(out, policy=msg.policy.clone(utf8=True)) if international else BytesGenerator(out)  # type: ignore[call-arg]
        g.flatten(msg, linesep="\r\n")
        data = out.getvalue()
    return Envelope(from_addr, to_addrs, normalise_eols(data), international)


def normalise_eols(data: bytes) -> bytes:
    """Every line end CRLF (a bare LF or CR becomes CRLF), as smtplib does for text."""
    crlf = data.count(CRLF)
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data
    return _EOL.sub(CRLF, data)


def dot_stuffed(data: bytes) -> bytes:
    """The content as sent after DATA: lines starting with '.' doubled, ended by CRLF '.' CRLF (RFC 5321 4.5.2)."""
    if data.startswith(b".") or b"\n." in data:
        data = _DOT.sub(b"..", data)
    if data and not data.endswith(CRLF):
        data += CRLF
    return data + b"." + CRLF


def quoteaddr(address: str) -> str:
    """smtplib's `quoteaddr`: the address in angle brackets."""
    name, addr = parseaddr(address)
    if (name, addr) == ("", ""):
        return address if address.strip().startswith("<") else f"<{address}>"
    return f"<{addr}>"


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: bytes


_fqdn: str | None = None


async def _local_hostname(writer: asyncio.StreamWriter) -> str:
    """smtplib's EHLO name: the FQDN (looked up once, off the event loop: it may ask DNS), else an address literal."""
    global _fqdn
    if _fqdn is None:
        _fqdn = await asyncio.to_thread(socket.getfqdn)
    if "." in _fqdn:
        return _fqdn
    sockname = writer.get_extra_info("sockname")
    return f"[{sockname[0]}]" if sockname else "[127.0.0.1]"


class SmtpConnection:
    """One SMTP session. `usable` turns False after anything that leaves its state unknown (a lost connection, a
    timeout, 421, a malformed reply); such a connection is only closed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, timeout_s: float) -> None:
        self.reader, self.writer, self.host, self.timeout_s = reader, writer, host, timeout_s
        self.features: dict[str, str] = {}
        self.esmtp = False
        self.usable = True
        self._rset_pending = False  # a transaction may be open on the server: RSET before the next MAIL
        self._encoding = "ascii"

    # ---------------------------------------------------------------- opening
    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout_s: float,
        use_ssl: bool = False,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> SmtpConnection:
        tls = ssl.create_default_context() if use_ssl or starttls else None
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls if use_ssl else None, server_hostname=host if use_ssl else None, limit=2 * MAX_LINE
            )
        conn = cls(reader, writer, host, timeout_s)
        try:
            greeting = await conn.read_reply()
            if greeting.code != 220:
                raise smtplib.SMTPConnectError(greeting.code, greeting.text)
            await conn._hello()
            if starttls and not use_ssl:
                assert tls is not None
                await conn._starttls(tls)
            if username:
                await conn._auth(username, password or "")
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _hello(self) -> None:
        name = await _local_hostname(self.writer)
        reply = await self.command(f"EHLO {name}")
        if 200 <= reply.code <= 299:
            self.esmtp = True
            self.features = _parse_ehlo(reply.text)
            return
        reply = await self.command(f"HELO {name}")
        if not 200 <= reply.code <= 299:
            raise smtplib.SMTPHeloError(reply.code, reply.text)
        self.esmtp, self.features = False, {}

    async def _starttls(self, context: ssl.SSLContext) -> None:
        if "starttls" not in self.features:
            raise smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server.")
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise smtplib.SMTPResponseException(reply.code, reply.text)
        if self.reader._buffer:  # type: ignore[attr-defined]  # bytes sent before the handshake would be trusted as if after it
            raise SMTPProtocolError("data after the STARTTLS reply")
        async with asyncio.timeout(self.timeout_s):
            await self.writer.start_tls(context, server_hostname=self.host)
        await self._hello()  # RFC 3207: forget what was learnt before TLS

    async def _auth(self, username: str, password: str) -> None:
        if "auth" not in self.features:
            raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        advertised = self.features["auth"].upper().split()
        mechanisms = [m for m in ("PLAIN", "LOGIN") if m in advertised]
        if not mechanisms:
            raise smtplib.SMTPException("No suitable authentication method found.")
        last: smtplib.SMTPAuthenticationError | None = None
        for mechanism in mechanisms:  # as smtplib: the next one if the server refuses the credentials
            try:
                await self._auth_with(mechanism, username, password)
                return
            except smtplib.SMTPAuthenticationError as exc:
                last = exc
        assert last is not None
        raise last

    async def _auth_with(self, mechanism: str, username: str, password: str) -> None:
        def b64(text: str) -> str:
            return base64.b64encode(text.encode("utf-8")).decode("ascii")

        # PLAIN: everything in the initial response (RFC 4616); LOGIN: the user name first, the password on the
        # server's second challenge (smtplib's order).
        answers = [b64(f"\0{username}\0{password}")] if mechanism == "PLAIN" else [b64(username), b64(password)]
        reply = await self.command(f"AUTH {mechanism} {answers[0]}")
        sent = 1
        while reply.code == 334:
            if sent > _MAX_CHALLENGES:
                raise smtplib.SMTPException("Server AUTH mechanism infinite loop. Last response: ")
            reply = await self.command(answers[min(sent, len(answers) - 1)])
            sent += 1
        if reply.code not in (235, 503):  # 503: already authenticated
            raise smtplib.SMTPAuthenticationError(reply.code, reply.text)

    # ---------------------------------------------------------------- the wire
    async def read_reply(self) -> Reply:
        """One reply, all its lines (RFC 5321 4.2: `ddd-` continues, `ddd ` ends)."""
        lines: list[bytes] = []
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    line = await self.reader.readline()
            except ValueError as exc:  # longer than the stream's limit
                self.usable = False
                raise smtplib.SMTPResponseException(500, b"Line too long.") from exc
            except BaseException:
                self.usable = False
                raise
            if not line:
                self.usable = False
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            if len(line) > MAX_LINE:
                self.usable = False
                raise smtplib.SMTPResponseException(500, b"Line too long.")
            code = line[:3]
            if len(line) < 4 or not code.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                self.usable = False
                raise SMTPProtocolError("malformed reply")
            lines.append(line[4:].rstrip(b"\r\n"))
            if line[3:4] != b"-":
                reply = Reply(int(code), b"\n".join(lines))
                if reply.code == 421:  # the server is closing the connection (RFC 5321 3.8)
                    self.usable = False
                return reply

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout_s):
                await self.writer.drain()
        except BaseException:
            self.usable = False
            raise

    def _line(self, text: str) -> bytes:
        if "\r" in text or "\n" in text or "\0" in text:  # a command must never carry another one
            raise ValueError("command and arguments contain prohibited newline characters")
        return text.encode(self._encoding) + CRLF

    async def command(self, text: str) -> Reply:
        await self.write(self._line(text))
        return await self.read_reply()

    async def noop(self) -> bool:
        try:
            return (await self.command("NOOP")).code == 250
        except Exception:
            self.usable = False
            return False

    async def quit(self) -> None:
        """QUIT, waiting for the reply (RFC 5321 4.1.1.10) at most the timeout, then close."""
        try:
            if self.usable:
                await self.command("QUIT")
        except Exception:
            pass
        finally:
            self.abort()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.writer.wait_closed()
        except Exception:
            pass

    def quit_nowait(self) -> None:
        """QUIT and close without waiting for the reply (the transport still sends what is buffered): for a
        connection that is given up between batches, where waiting would hold up the batch."""
        if self.usable:
            self.writer.write(b"QUIT\r\n")
        self.abort()

    def lost(self) -> bool:
        """A method, not `not self.usable`: every await may have changed it."""
        return not self.usable

    def abort(self) -> None:
        self.usable = False
        self.writer.close()

    # ---------------------------------------------------------------- messages
    def _refusal(self, env: Envelope) -> BaseException | None:
        """What refuses a message before anything is sent for it (smtplib refuses the first two the same way)."""
        if env.smtputf8 and "smtputf8" not in self.features:
            return smtplib.SMTPNotSupportedError(
                "One or more source or delivery addresses require internationalized email support,"
                " but the server does not advertise the required SMTPUTF8 capability"
            )
        if not env.rcpt_tos:
            return smtplib.SMTPRecipientsRefused({})
        limit = self.features.get("size", "")
        if limit.isdigit() and 0 < int(limit) < len(env.data):  # RFC 1870: what the server would answer MAIL with
            return smtplib.SMTPSenderRefused(552, b"message size exceeds fixed maximum message size", env.mail_from)
        return None

    def _commands(self, env: Envelope) -> bytes:
        """MAIL FROM, one RCPT TO per recipient, DATA; with smtplib's MAIL parameters."""
        options = []
        if self.esmtp:
            if "size" in self.features:
                options.append(f"SIZE={len(env.data)}")
            if env.smtputf8:
                options += ["SMTPUTF8", "BODY=8BITMIME"]
        self._encoding = "utf-8" if env.smtputf8 else "ascii"
        try:
            mail = " ".join([f"MAIL FROM:{quoteaddr(env.mail_from)}", *options])
            parts = [self._line(mail), *(self._line(f"RCPT TO:{quoteaddr(r)}") for r in env.rcpt_tos), b"DATA\r\n"]
        finally:
            self._encoding = "ascii"
        return b"".join(parts)

    @staticmethod
    def _verdict(env: Envelope, mail: Reply, rcpts: Sequence[Reply], data: Reply | None) -> BaseException | None:
        """The message's failure from its replies, in smtplib's order: sender, then recipients (only if all were
        refused: a partly refused message is sent to the rest), then DATA."""
        if mail.code != 250:
            return smtplib.SMTPSenderRefused(mail.code, mail.text, env.mail_from)
        refused = {r: (reply.code, reply.text) for r, reply in zip(env.rcpt_tos, rcpts, strict=False) if reply.code not in (250, 251)}
        if len(rcpts) < len(env.rcpt_tos) or len(refused) == len(env.rcpt_tos):  # fewer: a 421 ended the reading
            return smtplib.SMTPRecipientsRefused(refused)
        if data is not None and data.code != 354:
            return smtplib.SMTPDataError(data.code, data.text)
        return None

    async def transfer(self, envelopes: Sequence[Envelope]) -> list[Result]:
        """Sends the messages in order; one result each. After the connection failed, the rest are UNSENT (never
        the first one: each call makes progress). A message is UNSENT only if its end of data was never sent."""
        results: list[Result] = [UNSENT] * len(envelopes)
        if self.esmtp and "pipelining" in self.features:
            await self._pipelined(envelopes, results)
        else:
            for i, env in enumerate(envelopes):
                if not self.usable:
                    break
                results[i] = await self._lockstep(env)
        return results

    async def _lockstep(self, env: Envelope) -> BaseException | None:
        """One command at a time, as smtplib."""
        if (refusal := self._refusal(env)) is not None:
            return refusal
        try:
            mail_cmd, *rcpt_cmds, data_cmd = self._commands(env).split(CRLF)[:-1]
        except Exception as exc:  # an address that cannot go in a command: this message only
            return exc
        try:
            if self._rset_pending:
                if (await self.command("RSET")).code != 250:
                    self.usable = False
                    return smtplib.SMTPServerDisconnected("RSET refused")
                self._rset_pending = False
            await self.write(mail_cmd + CRLF)
            mail = await self.read_reply()
            if mail.code != 250:
                self._rset_pending = True
                return self._verdict(env, mail, [], None)
            rcpts: list[Reply] = []
            for cmd in rcpt_cmds:
                await self.write(cmd + CRLF)
                rcpts.append(await self.read_reply())
                if not self.usable:
                    return self._verdict(env, mail, rcpts, None)
            if (failure := self._verdict(env, mail, rcpts, None)) is not None:
                self._rset_pending = True
                return failure
            await self.write(data_cmd + CRLF)
            data = await self.read_reply()
            if data.code != 354:
                self._rset_pending = True
                return self._verdict(env, mail, rcpts, data)
            await self.write(dot_stuffed(env.data))
            end = await self.read_reply()
            return None if end.code == 250 else smtplib.SMTPDataError(end.code, end.text)
        except Exception as exc:
            self.usable = False
            return exc

    async def _pipelined(self, envelopes: Sequence[Envelope], results: list[Result]) -> None:
        """RFC 2920: MAIL, RCPT and DATA of a message in one group (DATA must close a group); then its content and
        end of data together with the next message's MAIL, RCPT and DATA (the content may open a group)."""
        n = len(envelopes)

        def next_sendable(i: int) -> tuple[int, bytes]:
            """The first message from i on that is not refused before sending, and its commands; those refused get
            their result here."""
            while i < n:
                refusal = self._refusal(envelopes[i])
                if refusal is None:
                    try:
                        return i, self._commands(envelopes[i])
                    except Exception as exc:  # an address that cannot go in a command: this message only
                        refusal = exc
                results[i] = refusal
                i += 1
            return n, b""

        i, commands = next_sendable(0)
        if i == n:
            return
        rset = self._rset_pending
        try:
            await self.write(b"RSET\r\n" + commands if rset else commands)
        except Exception as exc:
            results[i] = exc
            return
        self._rset_pending = False
        while True:
            env = envelopes[i]
            # The replies to this message's group, in order: a failure to read one is this message's.
            rcpts: list[Reply] = []
            data: Reply | None = None
            try:
                if rset and (await self.read_reply()).code != 250:
                    self.usable = False  # the server's state is unknown: this message goes over another connection
                    return
                mail = await self.read_reply()
                if self.usable:
                    for _ in env.rcpt_tos:
                        rcpts.append(await self.read_reply())
                        if self.lost():
                            break
                    else:
                        data = await self.read_reply()
            except Exception as exc:
                results[i] = exc
                return
            failure = self._verdict(env, mail, rcpts, data)
            if not self.usable or data is None:  # 421: nothing more will be answered
                results[i] = failure
                return
            nxt, commands = next_sendable(i + 1)
            out = b""
            if data.code == 354:
                # RFC 2920 3.1: DATA accepted although the message must not go (a refused recipient): a lone dot.
                out = dot_stuffed(env.data) if failure is None else b"." + CRLF
            rset = data.code != 354  # MAIL may have opened a transaction that no end of data closed
            if nxt < n:
                out += b"RSET\r\n" + commands if rset else commands
            else:
                self._rset_pending = rset  # before the next transaction on this connection
            if out:
                try:
                    await self.write(out)
                except Exception as exc:
                    results[i] = failure if failure is not None else exc
                    return
            if data.code == 354:
                try:
                    end = await self.read_reply()
                except Exception as exc:  # the next message's commands went out, its content did not: UNSENT
                    results[i] = failure if failure is not None else exc
                    return
                if failure is None and end.code != 250:
                    failure = smtplib.SMTPDataError(end.code, end.text)
                if self.lost():
                    results[i] = failure
                    return
            results[i] = failure
            if nxt >= n:
                return
            i = nxt


def _parse_ehlo(text: bytes) -> dict[str, str]:
    """EHLO keywords (lower case) and their parameters; the first line is the server's name. `AUTH=` is the old
    form some servers still send, merged into `auth`."""
    features: dict[str, str] = {}
    for line in text.decode("latin-1").split("\n")[1:]:
        m = re.match(r"[A-Za-z0-9][A-Za-z0-9-]*", line)
        if not m:
            continue
        feature, params = m.group().lower(), line[m.end() :]
        if feature == "auth":
            features["auth"] = f"{features.get('auth', '')} {params.lstrip('= ')}".strip()
        else:
            features[feature] = params.strip()
    return features
