"""Notification rules without I/O: status model, retry decisions, rate limiting, scrubbing.

Languages (which exist, how one is chosen, right-to-left) are the kit's: `lotse_kit.i18n`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from contracts.vocab import NotificationChannel as Channel
from contracts.vocab import NotificationFailure, RecipientKind

from .egress import EgressPolicy, parse_ip
from .errors import InvalidEndpointUrl

__all__ = ["Channel", "Decision", "Outcome", "RecipientKind", "Status", "TokenBucket", "check_endpoint_url", "decide"]


class Status(StrEnum):
    """GOV.UK Notify's model: `sending` covers the attempt in flight and the wait for the next retry."""

    CREATED = "created"
    SENDING = "sending"
    DELIVERED = "delivered"
    TEMPORARY_FAILURE = NotificationFailure.TEMPORARY.value  # retries exhausted on a temporary error
    PERMANENT_FAILURE = NotificationFailure.PERMANENT.value  # the recipient refused or cannot be reached
    TECHNICAL_FAILURE = NotificationFailure.TECHNICAL.value  # our side: configuration, template, bug

    @property
    def final(self) -> bool:
        return self not in (Status.CREATED, Status.SENDING)


class OutcomeKind(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # temporary: timeout, connection refused, 5xx, 429, SMTP 4xx
    PERMANENT = "permanent"
    TECHNICAL = "technical"


@dataclass(frozen=True)
class Outcome:
    """What one attempt achieved. `reason` is ours, never the peer's text (it may echo addresses)."""

    kind: OutcomeKind
    reason: str
    status_code: int | None = None
    retry_after_s: float | None = None
    disable_endpoint: bool = False
    reference: str | None = None

    @classmethod
    def delivered(cls, reason: str = "accepted", *, status_code: int | None = None, reference: str | None = None) -> Outcome:
        return cls(OutcomeKind.DELIVERED, reason, status_code, reference=reference)

    @classmethod
    def retry(cls, reason: str, *, status_code: int | None = None, retry_after_s: float | None = None) -> Outcome:
        return cls(OutcomeKind.RETRY, reason, status_code, retry_after_s)

    @classmethod
    def permanent(cls, reason: str, *, status_code: int | None = None, disable_endpoint: bool = False) -> Outcome:
        return cls(OutcomeKind.PERMANENT, reason, status_code, disable_endpoint=disable_endpoint)

    @classmethod
    def technical(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.TECHNICAL, reason)


@dataclass(frozen=True)
class Decision:
    status: Status
    next_attempt_at: datetime | None  # only while the status is `sending`

    @property
    def final(self) -> bool:
        return self.status.final


@dataclass(frozen=True)
class RetryPolicy:
    schedule_s: Sequence[float]  # delay before retry n (1-based); len(schedule) retries after the first attempt
    jitter: float = 0.2
    retry_after_max_s: float = 86400.0

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.schedule_s)

    def delay(self, attempts_made: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """Delay before the next attempt: the schedule's step with +/- jitter, so retries of many
        notifications that failed together do not arrive together."""
        base = self.schedule_s[attempts_made - 1]
        return max(0.0, base * rng(1 - self.jitter, 1 + self.jitter))


def decide(
    outcome: Outcome, attempts_made: int, policy: RetryPolicy, now: datetime, rng: Callable[[float, float], float] = random.uniform
) -> Decision:
    if outcome.kind is OutcomeKind.DELIVERED:
        return Decision(Status.DELIVERED, None)
    if outcome.kind is OutcomeKind.PERMANENT:
        return Decision(Status.PERMANENT_FAILURE, None)
    if outcome.kind is OutcomeKind.TECHNICAL:
        return Decision(Status.TECHNICAL_FAILURE, None)
    if attempts_made >= policy.max_attempts:
        return Decision(Status.TEMPORARY_FAILURE, None)
    delay = policy.delay(attempts_made, rng)
    if outcome.retry_after_s is not None:
        # 429 / 503: the peer told us when it can take more; never earlier, but not forever either.
        delay = max(delay, min(outcome.retry_after_s, policy.retry_after_max_s))
    return Decision(Status.SENDING, now + timedelta(seconds=delay))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as delta-seconds or HTTP-date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also holds for "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class TokenBucket:
    """Classic token bucket: `rate_per_s` tokens accrue up to `burst`; each send takes one."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> int:
        self._refill()
        return math.floor(self._tokens)

    def take(self, n: int = 1) -> bool:
        self._refill()
        if n > self._tokens:
            return False
        self._tokens -= n
        return True

    def give_back(self, n: int) -> None:
        """Returns tokens that were reserved but not used (fewer rows due than tokens taken)."""
        self._tokens = min(float(self.burst), self._tokens + n)

    def seconds_until(self, n: int = 1) -> float:
        self._refill()
        return max(0.0, (n - self._tokens) / self.rate)


# Why a notification to a client is not sent: final, never retried, shown in the status API and announced
# in lotse.notification.failed (status permanent-failure). Written by us; stable texts callers may match on.
NO_CONSENT = "no consent to contact the client for notifications"
DO_NOT_CONTACT = "do not contact: the client asked not to be contacted"
CLIENT_ERASED = "client erased: the client's personal data was erased"
CLIENT_UNKNOWN = "client unknown to intake or erased"


# Free-text fields may carry personal data; they are not stored with a notification nor sent in webhooks.
_FREE_TEXT: dict[str, frozenset[str]] = {
    "lotse.referral.declined": frozenset({"reason_text"}),
    "lotse.case.handed_over": frozenset({"reason"}),
}
_FREE_TEXT_ALWAYS = frozenset({"free_text", "outcome", "resolution"})


def scrub(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    drop = _FREE_TEXT_ALWAYS | _FREE_TEXT.get(event_type, frozenset())
    return {k: v for k, v in data.items() if k not in drop}


def client_ref(client_id: str | None) -> str:
    """A short, pseudonymous reference caseworkers can look up in their own system."""
    return (client_id or "")[:8]


PUBLIC_ONLY = "webhooks go only to public addresses unless the operator allow-lists the host"


def check_endpoint_url(url: str, *, allow_http: bool, policy: EgressPolicy | None = None) -> str:
    """A webhook endpoint URL: absolute, https (http only where allowed), without credentials, and not
    naming a refused address literally (loopback, private, link-local, ...: `EgressPolicy`). What a host
    name resolves to is checked by the adapters, at registration and at every delivery."""
    allowed = ("https", "http") if allow_http else ("https",)
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise InvalidEndpointUrl(f"the URL must be absolute and use {' or '.join(allowed)}") from None
    if parts.scheme not in allowed or not hostname:
        raise InvalidEndpointUrl(f"the URL must be absolute and use {' or '.join(allowed)}")
    if parts.username or parts.password:
        raise InvalidEndpointUrl("credentials in the URL are not accepted")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        raise InvalidEndpointUrl("the port must be a number between 0 and 65535") from None
    policy = policy if policy is not None else EgressPolicy()
    ip = parse_ip(hostname)
    if ip is not None and (why := policy.refusal(ip)) is not None:
        raise InvalidEndpointUrl(f"{hostname} is not a public address ({why}); {PUBLIC_ONLY}")
    return url
