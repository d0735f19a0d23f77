"""The asyncio SMTP client (adapters/smtp.py) behind `SmtpSender`, against a real SMTP server in this process
(aiosmtpd on loopback, which handles pipelined commands but does not advertise PIPELINING: the relay here adds it
to its EHLO answer when asked to). The server records every chunk it reads, so the tests count round trips."""

from __future__ import annotations

import asyncio
import base64
import email.policy
import io
import logging
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.generator import BytesGenerator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from lotse_kit.clock import ManualClock
from services.notifications.adapters.senders import Email, SmtpSender
from services.notifications.adapters.smtp import (
    Envelope,
    SmtpConnection,
    SMTPProtocolError,
    dot_stuffed,
    envelope_of,
    normalise_eols,
)
from services.notifications.adapters.templates import Rendered
from tests.peers import MailSink, free_port

from .conftest import make_ca, make_server_cert

FROM = "Lotse <no-reply@lotse.invalid>"
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)


# ---------------------------------------------------------------- the relay
class Relay(MailSink):
    """The mail sink with knobs: PIPELINING advertised or not, replies per address, a DATA that never answers; keeps
    every envelope and every SMTP command it was sent."""

    def __init__(self, *, pipelining: bool) -> None:
        super().__init__()
        self.pipelining = pipelining
        self.rcpt_reply: dict[str, str] = {}  # address -> the RCPT reply instead of 250
        self.data_reply: dict[str, str] = {}  # address -> the end-of-data reply instead of 250
        self.hang_data: set[str] = set()  # addresses whose end of data is never answered
        self.drop_data: set[str] = set()  # addresses at whose end of data the connection is closed, unanswered
        # Refused at RCPT, yet kept, so that DATA is answered 354 (RFC 2920 3.1: the client must then send a lone dot)
        self.refuse_yet_keep: set[str] = set()
        self.empty_contents: list[list[str]] = []
        self.envelopes: list[Any] = []
        self.commands: list[str] = []

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.commands.append("EHLO")
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]) -> str:
        self.commands.append("MAIL")
        envelope.mail_from, envelope.mail_options = address, list(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        self.commands.append("RCPT")
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        if address in self.refuse_yet_keep:
            envelope.rcpt_tos.append(address)
            return "550 5.1.1 mailbox unavailable"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 OK"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        self.commands.append("NOOP")
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("DATA")
        to = envelope.rcpt_tos[0]
        if not envelope.original_content:
            self.empty_contents.append(list(envelope.rcpt_tos))
            return "554 5.6.0 no content"
        if to in self.drop_data:
            server.transport.close()  # the client cannot know whether the relay kept the message
            return "421 4.3.0 gone"
        if to in self.hang_data:
            await asyncio.sleep(3600)  # cancelled when the server stops
        if to in self.data_reply:
            return self.data_reply[to]
        self.envelopes.append(envelope)
        return await super().handle_DATA(server, session, envelope)


class RecordingSMTP(SMTP):
    """aiosmtpd's protocol, recording what each read from the socket brought (one chunk per read)."""

    def __init__(self, handler: Any, chunks: list[bytes], sessions: list[RecordingSMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._chunks = chunks
        sessions.append(self)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        super().data_received(data)


@dataclass
class Server:
    relay: Relay
    port: int
    chunks: list[bytes] = field(default_factory=list)
    sessions: list[RecordingSMTP] = field(default_factory=list)
    controller: Any = None

    @property
    def connections(self) -> int:
        return len(self.sessions)

    def sender(self, **kwargs: Any) -> SmtpSender:
        return SmtpSender(host="127.0.0.1", port=self.port, mail_from=FROM, clock=ManualClock(T0), **kwargs)

    def close_connections(self) -> None:
        """The relay closes every open connection (as after its own idle timeout)."""
        loop = self.controller.loop
        for s in self.sessions:
            if s.transport is not None:
                loop.call_soon_threadsafe(s.transport.close)


@contextmanager
def smtp_server(*, pipelining: bool = True, **smtp_kwargs: Any) -> Iterator[Server]:
    relay = Relay(pipelining=pipelining)
    server = Server(relay, free_port())

    class RecordingController(Controller):
        def factory(self) -> SMTP:
            return RecordingSMTP(self.handler, server.chunks, server.sessions, **self.SMTP_kwargs)

    ssl_context = smtp_kwargs.pop("ssl_context", None)
    controller = RecordingController(relay, hostname="127.0.0.1", port=server.port, ssl_context=ssl_context, **smtp_kwargs)
    controller.start()
    server.controller = controller
    server.sessions.clear()  # the controller's own check that the server is up
    server.chunks.clear()
    try:
        yield server
    finally:
        controller.stop()


def _email(to: str, n: int = 0, text: str | None = None) -> Email:
    return Email(to=to, rendered=Rendered("de", text or f"Text {n}\n", subject=f"Betreff {n}"), message_id=str(uuid.uuid4()))


def _batch(n: int) -> list[Email]:
    return [_email(f"c{i}@client.test", i) for i in range(n)]


def kinds(outcomes: list[Any]) -> list[str]:
    return [o.kind.value for o in outcomes]


# ---------------------------------------------------------------- pipelining
async def test_a_pipelined_batch_costs_about_one_round_trip_per_message() -> None:
    with smtp_server(pipelining=True) as server:
        sender = server.sender()
        try:
            outcomes = await sender.send_many(_batch(10))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered"] * 10
    assert [o.reason for o in outcomes] == ["accepted by the SMTP relay"] * 10
    assert sorted(m["To"] for m in server.relay.messages) == sorted(f"c{i}@client.test" for i in range(10))
    assert server.connections == 1
    # Lockstep would need 4 reads a message (MAIL, RCPT, DATA, content); pipelined: the first group, then one read
    # per message carrying its content, its end of data and the next message's MAIL, RCPT and DATA.
    assert len(server.chunks) < 2 * 10, server.chunks
    assert any(b"MAIL FROM" in c and b"RCPT TO" in c and c.endswith(b"DATA\r\n") for c in server.chunks)
    assert sum(1 for c in server.chunks if b"\r\n.\r\nMAIL FROM:" in c) == 9  # end of data + the next message


async def test_without_pipelining_the_client_sends_one_command_at_a_time() -> None:
    with smtp_server(pipelining=False) as server:
        sender = server.sender()
        try:
            outcomes = await sender.send_many(_batch(5))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered"] * 5 and server.connections == 1
    # Each MAIL, RCPT and DATA alone in its read: it was sent after the previous reply came.
    assert sum(1 for c in server.chunks if c.startswith((b"MAIL", b"RCPT", b"DATA")) and c.count(b"\r\n") == 1) == 3 * 5


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_refused_recipient_mid_batch_fails_that_message_only_on_the_same_connection(pipelining: bool) -> None:
    with smtp_server(pipelining=pipelining) as server:
        server.relay.refuse.add("c2@client.test")  # 550
        server.relay.rcpt_reply["c4@client.test"] = "450 4.2.1 mailbox busy"
        sender = server.sender()
        try:
            outcomes = await sender.send_many(_batch(6))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered", "delivered", "permanent", "delivered", "retry", "delivered"]
    assert (outcomes[2].reason, outcomes[2].status_code) == ("recipient refused (550)", 550)
    assert (outcomes[4].reason, outcomes[4].status_code) == ("recipient refused (450)", 450)
    assert sorted(m["To"] for m in server.relay.messages) == ["c0@client.test", "c1@client.test", "c3@client.test", "c5@client.test"]
    assert server.connections == 1
    # The open transaction (MAIL accepted) is reset before the next MAIL (RFC 5321 4.1.1.5): no "nested MAIL".
    assert server.relay.commands.count("RSET") == 2


async def test_data_accepted_after_a_refused_recipient_gets_a_lone_dot_and_no_content() -> None:
    with smtp_server(pipelining=True) as server:
        server.relay.refuse_yet_keep.add("c1@client.test")
        sender = server.sender()
        try:
            outcomes = await sender.send_many(_batch(3))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered", "permanent", "delivered"] and outcomes[1].reason == "recipient refused (550)"
    assert server.relay.empty_contents == [["c1@client.test"]]  # the transaction was ended without the message
    assert sorted(m["To"] for m in server.relay.messages) == ["c0@client.test", "c2@client.test"]
    assert server.connections == 1 and "RSET" not in server.relay.commands  # the dot ended that transaction


async def test_a_refused_last_recipient_is_reset_before_the_next_batch_on_the_kept_connection() -> None:
    with smtp_server(pipelining=True) as server:
        server.relay.refuse.add("c2@client.test")
        sender = server.sender()
        try:
            first = await sender.send_many(_batch(3))
            second = await sender.send_many([_email("d0@client.test"), _email("d1@client.test")])
        finally:
            await sender.aclose()
    assert kinds(first) == ["delivered", "delivered", "permanent"] and kinds(second) == ["delivered", "delivered"]
    assert server.connections == 1 and server.relay.commands.count("RSET") == 1


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("where", ["rcpt", "end of data"])
async def test_421_mid_batch_drops_the_connection_and_the_rest_goes_over_a_new_one(pipelining: bool, where: str) -> None:
    with smtp_server(pipelining=pipelining) as server:
        if where == "rcpt":
            server.relay.rcpt_reply["c2@client.test"] = "421 4.3.2 closing"
        else:
            server.relay.data_reply["c2@client.test"] = "421 4.3.2 closing"
        sender = server.sender()
        try:
            outcomes = await sender.send_many(_batch(5))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered", "delivered", "retry", "delivered", "delivered"]
    assert outcomes[2].reason == ("recipient refused (421)" if where == "rcpt" else "SMTP error (421)")
    assert outcomes[2].status_code == 421
    assert sorted(m["To"] for m in server.relay.messages) == ["c0@client.test", "c1@client.test", "c3@client.test", "c4@client.test"]
    assert server.connections == 2


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_connection_lost_at_end_of_data_fails_that_message_and_the_rest_goes_over_a_new_one(pipelining: bool) -> None:
    with smtp_server(pipelining=pipelining) as server:
        server.relay.drop_data.add("c2@client.test")
        sender = server.sender()
        try:
            outcomes = await sender.send_many(_batch(5))
        finally:
            await sender.aclose()
    # The next message's MAIL, RCPT and DATA went out with c2's end of data, its content did not: it is sent again.
    assert kinds(outcomes) == ["delivered", "delivered", "retry", "delivered", "delivered"]
    assert outcomes[2].reason == "SMTP relay unreachable (SMTPServerDisconnected)"
    assert sorted(m["To"] for m in server.relay.messages) == ["c0@client.test", "c1@client.test", "c3@client.test", "c4@client.test"]
    assert server.connections == 2


async def test_a_refused_message_content_fails_that_message_and_the_next_goes_over_the_same_connection() -> None:
    with smtp_server(pipelining=True) as server:
        server.relay.data_reply["c1@client.test"] = "554 5.6.0 content refused"
        sender = server.sender()
        try:
            outcomes = await sender.send_many(_batch(3))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered", "permanent", "delivered"] and outcomes[1].reason == "SMTP error (554)"
    assert server.connections == 1


# ---------------------------------------------------------------- timeouts, idle connections
@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_relay_that_does_not_answer_times_out_and_the_rest_goes_over_a_new_connection(pipelining: bool) -> None:
    with smtp_server(pipelining=pipelining) as server:
        server.relay.hang_data.add("c1@client.test")
        sender = server.sender(timeout_s=0.5)
        try:
            outcomes = await sender.send_many(_batch(3))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered", "retry", "delivered"]
    assert outcomes[1].reason == "SMTP relay unreachable (TimeoutError)"
    assert server.connections == 2


async def test_an_idle_connection_the_relay_closed_is_found_by_noop_and_replaced() -> None:
    with smtp_server(pipelining=True) as server:
        sender = server.sender(check_idle_s=0.0)  # every reuse asks first
        try:
            assert kinds(await sender.send_many(_batch(2))) == ["delivered"] * 2
            assert kinds(await sender.send_many(_batch(2))) == ["delivered"] * 2  # NOOP answered: the same connection
            assert server.connections == 1 and server.relay.commands.count("NOOP") == 1
            server.close_connections()
            for _ in range(100):
                if all(s.transport is None or s.transport.is_closing() for s in server.sessions):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the close reaches our side
            assert kinds(await sender.send_many(_batch(2))) == ["delivered"] * 2
        finally:
            await sender.aclose()
    assert server.connections == 2 and sender.connections == 2


async def test_a_relay_that_cannot_be_reached_fails_every_message_of_the_batch() -> None:
    sender = SmtpSender(host="127.0.0.1", port=free_port(), mail_from=FROM)
    outcomes = await sender.send_many(_batch(3))
    assert kinds(outcomes) == ["retry"] * 3 and outcomes[0].reason == "SMTP relay unreachable (ConnectionRefusedError)"


# ---------------------------------------------------------------- TLS
@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The server's contexts: one with a certificate from a CA the client trusts (ssl.create_default_context() reads
    SSL_CERT_FILE), one self-signed."""
    ca, ca_key, ca_cert = make_ca(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    trusted = make_server_cert(tmp_path, "relay", ca=(ca_key, ca_cert), ips=("127.0.0.1",))
    untrusted = make_server_cert(tmp_path, "self-signed", ca=None, ips=("127.0.0.1",))
    contexts = []
    for cert in (trusted, untrusted):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert.cert, cert.key)
        contexts.append(ctx)
    return contexts[0], contexts[1]


async def test_starttls_with_a_verified_certificate(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    trusted, _ = tls
    with smtp_server(tls_context=trusted, require_starttls=True) as server:
        sender = server.sender(starttls=True)
        try:
            outcomes = await sender.send_many(_batch(3))
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered"] * 3 and server.connections == 1
    assert server.sessions[0]._tls_protocol is not None  # the messages went over TLS
    assert server.relay.commands[:2] == ["EHLO", "EHLO"]  # EHLO again after the handshake (RFC 3207)


async def test_starttls_refuses_a_certificate_that_does_not_verify(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    _, untrusted = tls
    with smtp_server(tls_context=untrusted, require_starttls=True) as server:
        sender = server.sender(starttls=True)
        outcomes = await sender.send_many(_batch(2))
        await sender.aclose()
    assert kinds(outcomes) == ["retry"] * 2 and outcomes[0].reason == "SMTP relay unreachable (SSLCertVerificationError)"
    assert server.relay.messages == []


async def test_starttls_not_offered_by_the_relay_is_not_skipped() -> None:
    with smtp_server() as server:
        sender = server.sender(starttls=True)
        outcomes = await sender.send_many(_batch(1))
    assert kinds(outcomes) == ["retry"] and outcomes[0].reason == "SMTP relay unreachable (SMTPNotSupportedError)"
    assert server.relay.messages == []


async def test_implicit_tls(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    trusted, untrusted = tls
    for ctx, expected in ((trusted, "delivered"), (untrusted, "retry")):
        with smtp_server(ssl_context=ctx) as server:
            sender = server.sender(use_ssl=True)
            try:
                outcomes = await sender.send_many(_batch(2))
            finally:
                await sender.aclose()
        assert kinds(outcomes) == [expected] * 2


# ---------------------------------------------------------------- AUTH
PASSWORD = "s3cret-Pässwort"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    assert isinstance(auth_data, LoginPassword)
    server.event_handler.commands.append(f"AUTH {mechanism}")
    ok = auth_data.login == b"lotse" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself


@pytest.mark.parametrize(("offered", "used"), [((), "AUTH PLAIN"), (("PLAIN",), "AUTH LOGIN")])
async def test_auth_uses_what_the_relay_offers_and_never_logs_the_password(
    offered: tuple[str, ...], used: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server(authenticator=_authenticator, auth_require_tls=False, auth_exclude_mechanism=offered) as server:
        good = server.sender(username="lotse", password=PASSWORD)
        bad = server.sender(username="lotse", password="wrong")
        try:
            ok = await good.send_many(_batch(2))
            refused = await bad.send_many(_batch(1))
        finally:
            await good.aclose()
            await bad.aclose()
    assert kinds(ok) == ["delivered"] * 2 and server.relay.commands.count(used) == 2  # the good one and the bad one
    assert kinds(refused) == ["technical"] and refused[0].reason == "SMTP authentication failed (535)"
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(), base64.b64encode(f"\0lotse\0{PASSWORD}".encode()).decode()):
        assert secret not in ours


async def test_auth_not_offered_by_the_relay_is_not_skipped() -> None:
    with smtp_server() as server:  # AUTH is offered over TLS only (aiosmtpd's default), and there is no TLS here
        sender = server.sender(username="lotse", password=PASSWORD)
        outcomes = await sender.send_many(_batch(1))
    assert kinds(outcomes) == ["retry"] and outcomes[0].reason == "SMTP relay unreachable (SMTPNotSupportedError)"


# ---------------------------------------------------------------- SMTPUTF8, content
@pytest.mark.parametrize("pipelining", [True, False])
async def test_an_internationalised_address_goes_with_smtputf8_and_is_refused_where_it_is_not_offered(pipelining: bool) -> None:
    batch = [_email("c0@client.test"), _email("amira@bücher.test"), _email("c2@client.test")]
    with smtp_server(pipelining=pipelining, enable_SMTPUTF8=True) as server:
        sender = server.sender()
        try:
            outcomes = await sender.send_many(batch)
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered"] * 3
    [intl] = [e for e in server.relay.envelopes if e.rcpt_tos == ["amira@bücher.test"]]
    assert "SMTPUTF8" in intl.mail_options and "BODY=8BITMIME" in intl.mail_options
    assert [m["To"] for m in server.relay.messages] == ["c0@client.test", "amira@bücher.test", "c2@client.test"]

    with smtp_server(pipelining=pipelining, enable_SMTPUTF8=False) as server:
        sender = server.sender()
        try:
            outcomes = await sender.send_many(batch)
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered", "retry", "delivered"]
    assert outcomes[1].reason == "SMTP relay unreachable (SMTPNotSupportedError)"
    assert server.connections == 1  # nothing was sent for it: the connection goes on


async def test_dot_stuffing_and_bare_line_feeds_arrive_as_written() -> None:
    raw = b"Subject: dots\r\n\r\n.\r\n..two\n.three\r\nbare\rCR\r\nlast line without end"
    with smtp_server(pipelining=True) as server:
        sender = server.sender()
        conn = await SmtpConnection.open("127.0.0.1", server.port, timeout_s=5.0)
        try:
            envs = [Envelope("a@lotse.invalid", (f"c{i}@client.test",), normalise_eols(raw)) for i in range(3)]
            assert await conn.transfer(envs) == [None, None, None]
        finally:
            await conn.quit()
        # Through the sender: an internationalised address takes EmailMessage, whose 7bit text body is not encoded.
        outcomes = await sender.send_many([_email("amira@bücher.test", text=".\n.. zwei\nText\n")])
        await sender.aclose()
    expected = b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\nbare\r\nCR\r\nlast line without end\r\n"
    assert [e.original_content for e in server.relay.envelopes[:3]] == [expected] * 3
    assert kinds(outcomes) == ["delivered"]
    assert server.relay.messages[3].get_content().replace("\r\n", "\n") == ".\n.. zwei\nText\n"


def test_dot_stuffing_and_line_ends_unit() -> None:
    assert dot_stuffed(b".a\r\nb\r\n..c\r\n.\r\n") == b"..a\r\nb\r\n...c\r\n..\r\n.\r\n"
    assert dot_stuffed(b"no end") == b"no end\r\n.\r\n"
    assert normalise_eols(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"


async def test_the_bytes_on_the_wire_are_what_smtplib_send_message_sends() -> None:
    """The same built messages (compat32 and, for an internationalised address, EmailMessage) through smtplib and
    through our client arrive identical: envelope, MAIL parameters and content. A Bcc is dropped by both."""
    sender = SmtpSender(host="127.0.0.1", port=1, mail_from=FROM, clock=ManualClock(T0))
    html = Rendered("de", "Hallo\n.\nFrom here\n", subject="Frist läuft ab", html="<p>Hallo</p>")
    messages = [
        sender.build(to="c0@client.test", rendered=html, message_id="m-0"),
        sender.build(to="amira@bücher.test", rendered=html, message_id="m-1"),
    ]
    with_bcc = sender.build(to="c1@client.test", rendered=html, message_id="m-2")
    with_bcc["Bcc"] = "hidden@client.test"
    messages.append(with_bcc)
    for i, m in enumerate(messages):
        m.set_boundary(f"b{i}")  # else each flattening draws its own
    with smtp_server(pipelining=True, enable_SMTPUTF8=True) as server:

        def via_smtplib() -> None:
            with smtplib.SMTP("127.0.0.1", server.port) as s:
                for m in messages:
                    s.send_message(m)

        await asyncio.to_thread(via_smtplib)
        conn = await SmtpConnection.open("127.0.0.1", server.port, timeout_s=5.0)
        try:
            assert await conn.transfer([envelope_of(m) for m in messages]) == [None] * 3
        finally:
            await conn.quit()
    theirs, ours = server.relay.envelopes[:3], server.relay.envelopes[3:]
    for a, b in zip(theirs, ours, strict=True):
        assert (a.mail_from, a.rcpt_tos, a.mail_options, a.original_content) == (
            b.mail_from,
            b.rcpt_tos,
            b.mail_options,
            b.original_content,
        )
    assert b"hidden@" not in ours[2].original_content and ours[2].rcpt_tos == ["c1@client.test", "hidden@client.test"]


def _flatten(msg: Any, policy: Any) -> bytes:
    out = io.BytesIO()
    BytesGenerator(out, policy=policy).flatten(msg, linesep="\r\n")
    return out.getvalue()


def test_remembered_header_folding_writes_the_bytes_of_compat32() -> None:
    sender = SmtpSender(host="127.0.0.1", port=1, mail_from=FROM, clock=ManualClock(T0))
    subjects = ["Frist", "Ihre Frist " * 12, "Frist läuft ab", "موعد نهائي يقترب", "a" * 120, " two  spaces ", ""]
    for i, subject in enumerate(subjects):
        for html in (None, "<p>Hallo</p>"):
            rendered = Rendered("de", "Text\nFrom here\n", subject=subject, html=html)
            msg = sender.build(to=f"c{i}@client.test", rendered=rendered, message_id=f"m-{i}")
            msg.as_bytes()  # folded once with LF line ends: remembered per line end, never mixed up
            ours = [_flatten(msg, None) for _ in range(2)]  # the message's own policy; the second time from memory
            assert ours[0] == ours[1] == _flatten(msg, email.policy.compat32), subject
            if html:
                assert msg.get_boundary() == f"=_m-{i}" and b"\r\n--=_m-" in ours[0]


# ---------------------------------------------------------------- replies
async def _reply(data: bytes) -> Any:
    reader = asyncio.StreamReader(limit=1 << 14)
    reader.feed_data(data)
    reader.feed_eof()
    conn = SmtpConnection(reader, writer=None, host="x", timeout_s=1.0)  # type: ignore[arg-type]
    return await conn.read_reply()


async def test_a_multi_line_reply_is_one_reply() -> None:
    reply = await _reply(b"250-relay.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 HELP\r\n220 next\r\n")
    assert reply.code == 250 and reply.text == b"relay.test\nPIPELINING\nSIZE 1000\nHELP"
    assert (await _reply(b"354\r\n")).code == 354
    with pytest.raises(smtplib.SMTPServerDisconnected):
        await _reply(b"250-half\r\n")
    with pytest.raises(SMTPProtocolError):
        await _reply(b"hello\r\n")


async def test_a_message_over_the_advertised_size_is_not_sent() -> None:
    with smtp_server(pipelining=True, data_size_limit=2000) as server:
        sender = server.sender()
        try:
            outcomes = await sender.send_many(
                [_email("c0@client.test"), _email("c1@client.test", text="x" * 5000), _email("c2@client.test")]
            )
        finally:
            await sender.aclose()
    assert kinds(outcomes) == ["delivered", "technical", "delivered"] and outcomes[1].reason == "SMTP sender refused (552)"
    assert all(e.mail_options[0].startswith("SIZE=") for e in server.relay.envelopes)
    assert not any(b"<c1@client.test>" in c for c in server.chunks) and server.connections == 1  # never offered
