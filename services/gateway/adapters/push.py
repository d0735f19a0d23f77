"""Posting inbox records to a partner's webhook URL (Standard Webhooks, lotse_kit.webhooks), and the per-organisation secrets."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import httpx

from lotse_kit.kafka import write_secret_file
from lotse_kit.webhooks import InvalidSecret, WebhookSecret, webhook_headers

log = logging.getLogger(__name__)

USER_AGENT = "Lotse-Gateway/1.0"


@dataclass(frozen=True)
class PushResult:
    delivered: bool
    reason: str
    status_code: int | None = None


class Pusher(Protocol):
    async def post(self, url: str, *, msg_id: str, body: bytes, secrets: list[WebhookSecret], now: datetime) -> PushResult: ...

    async def aclose(self) -> None: ...


class HttpPusher:
    """Redirects are not followed (a 3xx is a failed attempt) and no proxy from the environment is used: the URL
    comes from the operator's network file and nothing should route around it."""

    def __init__(self, timeout_s: float = 15.0, client: httpx.AsyncClient | None = None) -> None:
        self.timeout_s = timeout_s
        self.client = client or httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=False, trust_env=False)

    async def post(self, url: str, *, msg_id: str, body: bytes, secrets: list[WebhookSecret], now: datetime) -> PushResult:
        headers = {"content-type": "application/cloudevents+json", **webhook_headers(secrets, msg_id, now, body)}
        try:
            r = await self.client.post(url, content=body, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException:
            return PushResult(False, "endpoint timed out")
        except httpx.HTTPError as exc:
            return PushResult(False, f"endpoint unreachable ({type(exc).__name__})")
        if 200 <= r.status_code < 300:
            return PushResult(True, f"HTTP {r.status_code}", r.status_code)
        return PushResult(False, f"HTTP {r.status_code}", r.status_code)

    async def aclose(self) -> None:
        await self.client.aclose()


class WebhookSecrets:
    """Each push organisation's secret: from `configured` (LOTSE_GATEWAY_WEBHOOK_KEYS), else the file `<dir>/<org>`,
    generated there (mode 0600) when `generate` is on. The operator hands the secret to the partner once."""

    def __init__(self, configured: Mapping[str, str], directory: Path, *, generate: bool) -> None:
        self.configured = {org: WebhookSecret(text) for org, text in configured.items()}  # InvalidSecret stops the start
        self.directory = directory
        self.generate = generate

    def for_org(self, org: str) -> list[WebhookSecret]:
        if org in self.configured:
            return [self.configured[org]]
        path = self.directory / org
        if path.exists():
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            return [WebhookSecret(t) for t in lines]  # several lines: a rotation, every one signs
        if not self.generate:
            raise InvalidSecret(f"no webhook secret for {org}: set LOTSE_GATEWAY_WEBHOOK_KEYS or create {path}")
        secret = WebhookSecret.generate()
        write_secret_file(path, secret.text + "\n")
        log.warning("generated a webhook secret (development only)", extra={"org": org, "file": str(path)})
        return [secret]
