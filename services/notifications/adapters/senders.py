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
import smtplib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import httpx
from standardwebhooks import Webhook

from lotse_kit.clock import Clock, SystemClock

from ..domain.model import Outcome, parse_retry_after
from .egress import RefusedDestination, Unresolvable, tls_failure
from .keys import SigningKey
from .templates import Rendered

USER_AGENT = "Lotse-Notifications/1.0"


class EmailSender(Protocol):
    async def send(self, *, to: str, rendered: Rendered, message_id: str) -> Outcome: ...


class SmsSender(Protocol):
    async def send(self, *, to: str, rendered: Rendered, reference: str) -> Outcome: ...


# ---------------------------------------------------------------- e-mail
class SmtpSender:
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
    ) -> None:
        self.clock = clock or SystemClock()
        self.host, self.port, self.mail_from = host, port, mail_from
        self.starttls, self.use_ssl = starttls, use_ssl
        self.username, self.password = username, password
        self.timeout_s = timeout_s

    def build(self, *, to: str, rendered: Rendered, message_id: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = rendered.subject or ""
        msg["Date"] = formatdate(self.clock.now().timestamp(), usegmt=True)
        # Stable across retries, so a relay or mailbox can drop a duplicate.
        msg["Message-ID"] = f"<{message_id}@notifications.lotse>"
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(rendered.text)
        if rendered.html:
            msg.add_alternative(rendered.html, subtype="html")
        # After the body: set_content and add_alternative move or drop Content-* headers.
        msg["Content-Language"] = rendered.language
        return msg

    async def send(self, *, to: str, rendered: Rendered, message_id: str) -> Outcome:
        msg = self.build(to=to, rendered=rendered, message_id=message_id)
        return await asyncio.to_thread(self._send_sync, msg)

    def _send_sync(self, msg: EmailMessage) -> Outcome:
        try:
            smtp_cls = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
            with smtp_cls(self.host, self.port, timeout=self.timeout_s) as s:
                if self.starttls and not self.use_ssl:
                    s.starttls(context=ssl.create_default_context())
                if self.username:
                    s.login(self.username, self.password or "")
                s.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0] if exc.recipients else 550
            return _smtp_code(code, "recipient refused")
        except smtplib.SMTPAuthenticationError as exc:
            return Outcome.technical(f"SMTP authentication failed ({exc.smtp_code})")
        except smtplib.SMTPSenderRefused as exc:
            return (
                Outcome.retry(f"SMTP sender refused ({exc.smtp_code})", status_code=exc.smtp_code)
                if 400 <= exc.smtp_code < 500
                else Outcome.technical(f"SMTP sender refused ({exc.smtp_code})")
            )
        except smtplib.SMTPResponseException as exc:
            return _smtp_code(exc.smtp_code, "SMTP error")
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome.retry(f"SMTP relay unreachable ({type(exc).__name__})")
        return Outcome.delivered("accepted by the SMTP relay")


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
