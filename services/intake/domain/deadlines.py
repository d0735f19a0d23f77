"""Deadline rules: §104c end dates, lead times and which notices are due. Pure, no I/O."""

from __future__ import annotations

import calendar as _cal
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from contracts import dates
from contracts.vocab import DeadlineKind, ResidenceTitle

from .errors import Invalid

CHANCEN_MONTHS = 18

CHANCEN_NOTE = (
    "§104c AufenthG Chancen-Aufenthaltsrecht: granted for 18 months and cannot be extended. "
    "Before its last valid day ({last}) the requirements for a residence permit under §25a or §25b AufenthG "
    "(identity clarified, livelihood largely secured, language skills) must be met and applied for."
)
LEGAL_NOTES: dict[DeadlineKind, str] = {
    DeadlineKind.RESIDENCE_TITLE_EXPIRY: "Residence title expires after {last}: an extension must be applied for at the Ausländerbehörde before then.",
    DeadlineKind.INTEGRATION_COURSE_ELIGIBILITY: "Eligibility for a BAMF integration course ends after {last}.",
    DeadlineKind.REFERRAL_ANSWER_DUE: "The receiving organisation must answer the referral by {last} (process plan).",
}


def add_months_bgb(start: date, months: int, *, field: str) -> date:
    """Last day of a period of `months` months that begins at the start of `start` (§187(2), §188(2), §188(3) BGB).

    The period ends with the day before the day that corresponds in number to `start`; where the last month
    has no such day, it ends with that month's last day (§188(3)). A period that would end after the last
    supported date (`contracts.dates.LATEST`) is refused with `Invalid` naming `field`, the input it came from.
    """
    if months < 1:
        raise ValueError("months must be at least 1")
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    try:
        days_in_month = _cal.monthrange(year, month)[1]
        last = date(year, month, days_in_month) if start.day > days_in_month else date(year, month, start.day) - timedelta(days=1)
        return dates.check_supported(last)
    except ValueError:  # DateOutOfRange, or past Python's own last date
        raise Invalid(
            field, f"a period of {months} months from {start.isoformat()} ends after {dates.LATEST.isoformat()}, the last supported date"
        ) from None


def chancen_aufenthalt_last_day(valid_from: date, *, field: str = "residence_valid_from") -> date:
    """Last valid day of a §104c title valid from `valid_from`: 18 months, not extendable."""
    return add_months_bgb(valid_from, CHANCEN_MONTHS, field=field)


def residence_deadline(title: ResidenceTitle | None, valid_until: date | None, valid_from: date | None) -> tuple[DeadlineKind, date] | None:
    """The automatic deadline for a residence title: (kind, last valid day), or None."""
    if title is None:
        return None
    if title is ResidenceTitle.CHANCEN_104C:
        last = chancen_aufenthalt_last_day(valid_from) if valid_from else valid_until
        return (DeadlineKind.CHANCEN_AUFENTHALT_END, last) if last else None
    return (DeadlineKind.RESIDENCE_TITLE_EXPIRY, valid_until) if valid_until else None


RESIDENCE_KINDS = (DeadlineKind.RESIDENCE_TITLE_EXPIRY, DeadlineKind.CHANCEN_AUFENTHALT_END)


def check_104c(
    title: ResidenceTitle | None, valid_until: date | None, valid_from: date | None, field: str = "residence_valid_until"
) -> date | None:
    """For a §104c title given with its first day, the last day is computed; a contradicting valid_until is refused."""
    if title is ResidenceTitle.CHANCEN_104C and valid_from:
        last = chancen_aufenthalt_last_day(valid_from)
        if valid_until and valid_until != last:
            raise Invalid(field, f"a §104c title valid from {valid_from} ends on {last} (18 months, §188(2) BGB), not {valid_until}")
        return last
    return valid_until


def legal_note(kind: DeadlineKind, last_day: date | None) -> str | None:
    if kind is DeadlineKind.CHANCEN_AUFENTHALT_END:
        return CHANCEN_NOTE.format(last=last_day.isoformat() if last_day else "the end date")
    template = LEGAL_NOTES.get(kind)
    if template is None or last_day is None:
        return None
    return template.format(last=last_day.isoformat())


# ---------------------------------------------------------------- notices
MISSED = "missed"


def approaching_key(lead_days: int) -> str:
    return f"approaching:{lead_days}"


@dataclass(frozen=True)
class Notice:
    key: str  # "approaching:<days>" or "missed": one row per deadline and key, ever
    lead_time_days: int | None  # None for "missed"
    emit: bool  # False: superseded by a more urgent notice, recorded so it never fires later


@dataclass(frozen=True)
class NoticePlan:
    notices: list[Notice]
    next_check_at: datetime | None  # None: nothing left to emit


def plan_notices(due_at: datetime, lead_times_days: list[int], now: datetime, done: set[str]) -> NoticePlan:
    """Which notices of one deadline are due at `now`, given those already recorded in `done`.

    - After the due time: "missed" once; approaching notices not yet sent are superseded.
    - Otherwise, of the lead times whose window has opened and that were not yet recorded, the most urgent
      (smallest) one is emitted and the larger ones are superseded: a deadline registered 10 days ahead
      gets one "7 days" notice later, not three at once.
    """
    leads = sorted(set(lead_times_days))
    if now > due_at:
        notices = [Notice(approaching_key(lt), lt, False) for lt in leads if approaching_key(lt) not in done]
        if MISSED not in done:
            notices.append(Notice(MISSED, None, True))
        return NoticePlan(notices, None)
    opened = [lt for lt in leads if approaching_key(lt) not in done and due_at - timedelta(days=lt) <= now]
    notices = []
    if opened:
        notices = [Notice(approaching_key(opened[0]), opened[0], True)] + [Notice(approaching_key(lt), lt, False) for lt in opened[1:]]
    recorded = done | {n.key for n in notices}
    upcoming = [due_at - timedelta(days=lt) for lt in leads if approaching_key(lt) not in recorded]
    if MISSED not in recorded:
        upcoming.append(due_at + timedelta(microseconds=1))
    return NoticePlan(notices, min(upcoming) if upcoming else None)


def first_check(due_at: datetime, lead_times_days: list[int], now: datetime) -> datetime | None:
    """When the scheduler first looks at a new deadline: now if a notice is already due, else the next window."""
    plan = plan_notices(due_at, lead_times_days, now, set())
    return now if plan.notices else plan.next_check_at


def days_left(due_at: datetime, now: datetime) -> int:
    return max((due_at - now).days, 0)
