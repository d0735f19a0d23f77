"""The three channels: SMTP e-mail, an HTTP SMS gateway and Standard Webhooks.

Each sender turns one attempt into an `Outcome`; none of them raises for a peer's
answer. Reasons are written by us (status codes, error classes), never copied from
the peer, whose text may echo an address or a phone number.

Webhooks carry two kinds of Standard Webhooks signature in `webhook-signature`: `v1` (HMAC-SHA256 with
the endpoint's secret; during a secret rotation one per secret) and `v1a` (Ed25519 with the service's
signing key, whose public key is published at GET /v1/webhooks/public-key). They go out through the
egress-guarded client (adapters/egress.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import formatdate, getaddresses
from typing import Any, Protocol

import httpx
from standardwebhooks import Webhook

from lotse_kit.clock import Clock, SystemClock

from ..domain.model import Outcome, parse_retry_after
from . import mailbytes
from .egress import RefusedDestination, Unresolvable, tls_failure
from .keys import SigningKey
from .smtp import Envelope, SmtpConnection, Unsent, envelope_of, normalise_eols
from .templates import Rendered

USER_AGENT = "Lotse-Notifications/1.0"


class EmailSender(Protocol):
    async def send(self, *, to: str, rendered: Rendered, message_id: str) -> Outcome: ...

    async def send_many(self, emails: Sequence[Email]) -> list[Outcome]: ...


class SmsSender(Protocol):
    async def send(self, *, to: str, rendered: Rendered, reference: str) -> Outcome: ...


# ---------------------------------------------------------------- e-mail
@dataclass(frozen=True)
class Email:
    """One message of a batch: the address (fetched for this send, never stored), the text, our notification id."""

    to: str
    rendered: Rendered
    message_id: str


class _FoldCachingCompat32(Compat32):
    """compat32, remembering how it folded a header value: most values repeat from message to message (Content-Type,
    MIME-Version, Content-Transfer-Encoding, From, Auto-Submitted, ...), and folding each through `email.header` was
    a third of an e-mail's CPU. Folding is a function of the policy's settings, the name and the value: the bytes are
    those of compat32 (services/notifications/tests/test_smtp.py compares them)."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if not isinstance(value, str):  # a Header object (a non-ASCII subject): folded each time
            return super().fold_binary(name, value)
        key = (self.linesep, self.max_line_length, self.cte_type, name, value)
        folded = _FOLDED.get(key)
        if folded is None:
            folded = super().fold_binary(name, value)
            if len(_FOLDED) >= 4096:  # To, Date and Message-ID vary: keep the cache bounded
                _FOLDED.clear()
            _FOLDED[key] = folded
        return folded


_FOLDED: dict[tuple[Any, ...], bytes] = {}
FOLD_CACHING_COMPAT32 = _FoldCachingCompat32()
_BOUNDARY_SAFE = re.compile(r"[A-Za-z0-9-]{1,60}")
BUILD_SLICE = 10  # messages built between two yields to the event loop


class SmtpSender:
    """Sends a batch of messages over one SMTP connection, and keeps up to `max_idle` connections open for the next
    batches (each batch takes one, so concurrent batches never share a connection). A connection that failed is
    dropped and the rest of the batch goes over a new one; the failed message gets its own outcome (retried on the
    schedule, as before). A connection idle for more than `check_idle_s` is checked with NOOP before it is used.
    The SMTP client is `adapters/smtp.py` (asyncio, pipelining when the relay offers it); it fails with smtplib's
    exception classes, so `_smtp_outcome` maps them as it did when smtplib sent."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        mail_from: str,
        starttls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 15.0,
        clock: Clock | None = None,
        max_idle: int = 4,
        idle_timeout_s: float = 60.0,
        check_idle_s: float = 5.0,
    ) -> None:
        self.clock = clock or SystemClock()
        self.host, self.port, self.mail_from = host, port, mail_from
        self.starttls, self.use_ssl = starttls, use_ssl
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self.max_idle, self.idle_timeout_s, self.check_idle_s = max_idle, idle_timeout_s, check_idle_s
        self.connections = 0  # connections opened (metrics, tests)
        self._idle: list[tuple[SmtpConnection, float]] = []  # (connection, monotonic time it was last used)
        self._ascii_from = mail_from.isascii() and not any(c in mail_from for c in "\r\n")
        # What `envelope_of` takes from the From header; the header line itself is written once.
        self._from_addr = getaddresses([mail_from])[0][1]
        self._from_line = mailbytes.folded("From", mail_from)  # None (never written directly): non-ASCII, CR/LF

    def envelope(self, *, to: str, rendered: Rendered, message_id: str) -> Envelope:
        """The message as it goes over the wire. The usual one (plain ASCII addresses) is written directly
        (adapters/mailbytes.py: no `email` generator, about a sixth of the service's CPU before); anything else is
        built with the `email` package and flattened as smtplib's `send_message` would (`envelope_of`)."""
        subject = rendered.subject or ""
        if self._from_line is not None and mailbytes.writes(to=to, subject=subject, message_id=message_id, language=rendered.language):
            data = mailbytes.message_bytes(
                from_line=self._from_line,
                to=to,
                subject=subject,
                date=formatdate(self.clock.now().timestamp(), usegmt=True),
                message_id=message_id,
                language=rendered.language,
                text=rendered.text,
                html=rendered.html,
            )
            return Envelope(self._from_addr, (to,), normalise_eols(data))  # CRLF already: a cheap guarantee
        return envelope_of(self.build(to=to, rendered=rendered, message_id=message_id))

    def build(self, *, to: str, rendered: Rendered, message_id: str) -> Message:
        """The MIME message: plain text and, if any, HTML alternatives, headers stable across retries where it matters.
        For what `envelope` does not write itself, and the shape it writes (tests compare the two)."""
        if to.isascii() and self._ascii_from and not any(c in to for c in "\r\n"):
            return self._build_compat32(to=to, rendered=rendered, message_id=message_id)
        return self._build_modern(to=to, rendered=rendered, message_id=message_id)

    def _build_compat32(self, *, to: str, rendered: Rendered, message_id: str) -> Message:
        # The legacy API (email.mime, compat32) writes the same message for about a third of the CPU of EmailMessage, whose
        # header registry parses every header; it is used when the addresses are plain ASCII (the usual case).
        subject = rendered.subject or ""
        text = MIMEText(rendered.text, "plain", "utf-8", policy=FOLD_CACHING_COMPAT32)
        msg: Message = text
        if rendered.html:
            # A boundary of our own: the generator's random one costs a regex compiled per message. "=_" never occurs
            # in base64 (both parts are base64: utf-8), so it cannot clash with the content (RFC 2045 6.7 uses it so).
            boundary = f"=_{message_id}" if _BOUNDARY_SAFE.fullmatch(message_id) else None
            msg = MIMEMultipart("alternative", boundary=boundary, policy=FOLD_CACHING_COMPAT32)
            msg.attach(text)
            msg.attach(MIMEText(rendered.html, "html", "utf-8", policy=FOLD_CACHING_COMPAT32))
        msg["From"] = self.mail_from
        msg["To"] = to
        # RFC 2047-encoded unless plain ASCII on one line (templates make it one line; encoding keeps any CR/LF harmless).
        msg["Subject"] = subject if subject.isascii() and not any(c in subject for c in "\r\n") else Header(subject, "utf-8")  # type: ignore[assignment]  # compat32 takes a Header
        msg["Date"] = formatdate(self.clock.now().timestamp(), usegmt=True)
        # Stable across retries, so a relay or mailbox can drop a duplicate.
        msg["Message-ID"] = f"<{message_id}@notifications.lotse>"
        msg["Auto-Submitted"] = "auto-generated"
        msg["Content-Language"] = rendered.language
        return msg

    def _build_modern(self, *, to: str, rendered: Rendered, message_id: str) -> EmailMessage:
        """For internationalised addresses (SMTPUTF8); refuses CR/LF in any header."""
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = rendered.subject or ""
        msg["Date"] = formatdate(self.clock.now().timestamp(), usegmt=True)
        msg["Message-ID"] = f"<{message_id}@notifications.lotse>"
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(rendered.text)
        if rendered.html:
            msg.add_alternative(rendered.html, subtype="html")
        # After the body: set_content and add_alternative move or drop Content-* headers.
        msg["Content-Language"] = rendered.language
        return msg

    async def send(self, *, to: str, rendered: Rendered, message_id: str) -> Outcome:
        [outcome] = await self.send_many([Email(to, rendered, message_id)])
        return outcome

    async def send_many(self, emails: Sequence[Email]) -> list[Outcome]:
        """One outcome per message, in order; (usually) no new connection and, with PIPELINING, about one round trip
        per message. Messages are written here, on the event loop: `envelope` makes that cheap."""
        outcomes: list[Outcome | None] = [None] * len(emails)
        todo: list[tuple[int, Envelope]] = []
        for i, e in enumerate(emails):
            if i and i % BUILD_SLICE == 0:
                await asyncio.sleep(0)  # let other tasks run between slices of a large batch
            try:
                todo.append((i, self.envelope(to=e.to, rendered=e.rendered, message_id=e.message_id)))
            except Exception as exc:  # e.g. a line break in an address: this message only
                outcomes[i] = _smtp_outcome(exc)
        conn = await self._take() if todo else None
        try:
            while todo:
                if conn is None:
                    try:
                        conn = await self._connect()
                    except Exception as exc:  # the relay is unreachable or refuses us: the same for the rest of the batch
                        failed = _smtp_outcome(exc)
                        for i, _ in todo:
                            outcomes[i] = failed
                        break
                results = await conn.transfer([env for _, env in todo])
                rest = []
                for (i, env), result in zip(todo, results, strict=True):
                    if isinstance(result, Unsent):  # its end of data never went out: over the next connection
                        rest.append((i, env))
                    else:
                        outcomes[i] = Outcome.delivered("accepted by the SMTP relay") if result is None else _smtp_outcome(result)
                if not conn.usable:
                    conn.abort()
                    conn = None  # the rest of the batch goes over a new connection
                elif rest:  # cannot happen (a usable connection sends all); never loop on it
                    raise RuntimeError("SMTP connection left messages unsent")
                todo = rest
        finally:
            if conn is not None:
                if conn.usable:
                    self._give_back(conn)
                else:
                    conn.abort()  # cancelled mid-transaction: its state is unknown
        return [o if o is not None else Outcome.technical("internal error (no outcome)") for o in outcomes]

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.quit() for conn, _ in idle))

    async def _connect(self) -> SmtpConnection:
        conn = await SmtpConnection.open(
            self.host,
            self.port,
            timeout_s=self.timeout_s,
            use_ssl=self.use_ssl,
            starttls=self.starttls,
            username=self.username,
            password=self.password,
        )
        self.connections += 1
        return conn

    async def _take(self) -> SmtpConnection | None:
        """An idle connection that still answers, or None (the caller connects)."""
        while self._idle:
            conn, last_used = self._idle.pop()
            idle_s = time.monotonic() - last_used
            if idle_s > self.idle_timeout_s:
                conn.quit_nowait()
                continue
            if not conn.usable:
                conn.abort()
                continue
            # Idle long enough for the relay to have closed it: ask before sending a message over it.
            if idle_s <= self.check_idle_s or await conn.noop():
                return conn
            conn.abort()
        return None

    def _give_back(self, conn: SmtpConnection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append((conn, time.monotonic()))
            return
        conn.quit_nowait()


def _smtp_outcome(exc: BaseException) -> Outcome:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code = next(iter(exc.recipients.values()))[0] if exc.recipients else 550
        return _smtp_code(code, "recipient refused")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return Outcome.technical(f"SMTP authentication failed ({exc.smtp_code})")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return (
            Outcome.retry(f"SMTP sender refused ({exc.smtp_code})", status_code=exc.smtp_code)
            if 400 <= exc.smtp_code < 500
            else Outcome.technical(f"SMTP sender refused ({exc.smtp_code})")
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return _smtp_code(exc.smtp_code, "SMTP error")
    if isinstance(exc, smtplib.SMTPException | OSError):
        return Outcome.retry(f"SMTP relay unreachable ({type(exc).__name__})")
    return Outcome.technical(f"internal error ({type(exc).__name__})")


def _smtp_code(code: int, what: str) -> Outcome:
    if 400 <= code < 500:
        return Outcome.retry(f"{what} ({code})", status_code=code)
    return Outcome.permanent(f"{what} ({code})", status_code=code)


# ---------------------------------------------------------------- SMS
# The gateway's answer (JSON `status`) mapped to ours.
SMS_GATEWAY_STATUS: dict[str, str] = {
    "accepted": "delivered",
    "queued": "delivered",
    "sent": "delivered",
    "delivered": "delivered",
    "invalid_number": "permanent",
    "rejected": "permanent",
    "blocked": "permanent",
    "unsubscribed": "permanent",
    "throttled": "retry",
    "failed": "retry",
    "temporary_error": "retry",
}


class HttpSmsGateway:
    """POST {to, text, sender, reference} as JSON; the answer's `status` decides (see SMS_GATEWAY_STATUS)."""

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient,
        token: str | None = None,
        sender: str = "Lotse",
        timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.url, self.client, self.token, self.sender, self.timeout_s = url, client, token, sender, timeout_s
        self.clock = clock or SystemClock()

    async def send(self, *, to: str, rendered: Rendered, reference: str) -> Outcome:
        headers = {"User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = {"to": to, "text": rendered.text, "sender": self.sender, "reference": reference, "language": rendered.language}
        try:
            r = await self.client.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException:
            return Outcome.retry("SMS gateway timed out")
        except httpx.TransportError as exc:
            return Outcome.retry(f"SMS gateway unreachable ({type(exc).__name__})")
        if r.status_code in (429, 503):
            return Outcome.retry(
                f"SMS gateway busy (HTTP {r.status_code})",
                status_code=r.status_code,
                retry_after_s=parse_retry_after(r.headers.get("retry-after"), self.clock.now()),
            )
        if r.status_code >= 500:
            return Outcome.retry(f"SMS gateway error (HTTP {r.status_code})", status_code=r.status_code)
        if r.status_code in (401, 403):
            return Outcome.technical(f"SMS gateway refused our credentials (HTTP {r.status_code})")
        if r.status_code >= 400:
            return Outcome.permanent(f"SMS gateway rejected the message (HTTP {r.status_code})", status_code=r.status_code)
        answer = _json(r)
        status = str(answer.get("status", "")).lower()
        mapped = SMS_GATEWAY_STATUS.get(status)
        reference_out = str(answer["id"]) if answer.get("id") is not None else None
        if mapped == "delivered":
            return Outcome.delivered(f"SMS gateway: {status}", status_code=r.status_code, reference=reference_out)
        if mapped == "permanent":
            return Outcome.permanent(f"SMS gateway: {status}", status_code=r.status_code)
        if mapped == "retry":
            return Outcome.retry(
                f"SMS gateway: {status}",
                status_code=r.status_code,
                retry_after_s=parse_retry_after(r.headers.get("retry-after"), self.clock.now()),
            )
        # An answer we do not understand: do not guess (a retry could send twice).
        return Outcome.technical(f"SMS gateway answered an unknown status {status[:40]!r}")


# ---------------------------------------------------------------- webhooks
def signed_content(msg_id: str, timestamp: datetime, body: bytes) -> bytes:
    """What Standard Webhooks signs: `{msg_id}.{timestamp}.{payload}`."""
    return f"{msg_id}.{int(timestamp.timestamp())}.".encode() + body


def sign(secrets: Sequence[str], msg_id: str, timestamp: datetime, body: bytes, signing_keys: Sequence[SigningKey] = ()) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per secret (a rotation signs with both), then one
    `v1a,<base64>` per signing key (the current one, and the previous one while it is being rotated out)."""
    data = body.decode("utf-8")
    symmetric = [Webhook(s).sign(msg_id, timestamp, data) for s in secrets]
    content = signed_content(msg_id, timestamp, body)
    asymmetric = [f"v1a,{k.sign(content)}" for k in signing_keys]
    return " ".join(symmetric + asymmetric)


class WebhookSender:
    """`client` is the egress-guarded webhook client (adapters.egress.webhook_client)."""

    def __init__(self, client: httpx.AsyncClient, timeout_s: float = 15.0, signing_keys: Sequence[SigningKey] = ()) -> None:
        self.client, self.timeout_s, self.signing_keys = client, timeout_s, tuple(signing_keys)

    async def send(self, *, url: str, secrets: Sequence[str], msg_id: str, body: bytes, now: datetime) -> Outcome:
        """`now` (the service's clock) signs the request and reads a Retry-After date."""
        ts = now.replace(microsecond=0)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(ts.timestamp())),
            "webhook-signature": sign(secrets, msg_id, ts, body, self.signing_keys),
        }
        try:
            r = await self.client.post(url, content=body, headers=headers, timeout=self.timeout_s, follow_redirects=False)
        except RefusedDestination as exc:
            # The address is not allowed (SSRF); retrying will not change that, the endpoint's URL or DNS must.
            return Outcome.permanent(f"destination refused: {exc}")
        except Unresolvable as exc:
            return Outcome.retry(f"endpoint unreachable: {exc}")
        except httpx.TimeoutException:
            return Outcome.retry("endpoint timed out")
        except httpx.TransportError as exc:
            tls = tls_failure(exc)
            if tls is not None:
                certificate, reason = tls
                # A certificate that does not verify is the endpoint's configuration, not a passing fault.
                return Outcome.permanent(reason) if certificate else Outcome.retry(reason)
            return Outcome.retry(f"endpoint unreachable ({type(exc).__name__})")
        except httpx.InvalidURL:
            return Outcome.permanent("the endpoint URL cannot be sent to")
        code = r.status_code
        if 200 <= code < 300:
            return Outcome.delivered(f"HTTP {code}", status_code=code)
        if code == 410:
            return Outcome.permanent("endpoint gone (HTTP 410); endpoint disabled", status_code=code, disable_endpoint=True)
        if code in (429, 503):
            return Outcome.retry(f"HTTP {code}", status_code=code, retry_after_s=parse_retry_after(r.headers.get("retry-after"), now))
        # Standard Webhooks: any other answer is a failed attempt and is retried on the schedule.
        return Outcome.retry(f"HTTP {code}", status_code=code)


def webhook_body(event_type: str, timestamp: datetime, data: dict[str, Any]) -> bytes:
    """The Standard Webhooks payload shape: {type, timestamp, data}."""
    return json.dumps(
        {"type": event_type, "timestamp": timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    ).encode("utf-8")


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
