"""When an inbox counts as unfetched, and when its organisation is told (again)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Backlog:
    pending: int  # records not acknowledged
    oldest_at: datetime | None  # when the oldest of them was written


@dataclass(frozen=True)
class LastNotice:
    oldest_at: datetime | None  # the oldest record the last notice was about
    at: datetime | None


def notice_due(backlog: Backlog, last: LastNotice, now: datetime, *, after: timedelta, repeat_after: timedelta) -> bool:
    """A notice is due when the oldest unacknowledged record is older than `after`, and either no notice was sent
    about it yet (a new backlog after progress counts as new) or the last one is `repeat_after` old."""
    if backlog.pending <= 0 or backlog.oldest_at is None or now - backlog.oldest_at < after:
        return False
    if last.at is None or last.oldest_at is None or backlog.oldest_at > last.oldest_at:
        return True
    return now - last.at >= repeat_after
