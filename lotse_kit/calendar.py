"""Working days in North Rhine-Westphalia: Monday to Friday, without NRW public holidays.

Pure functions, no I/O. Referral answer deadlines from process plans and the acknowledgements a recipient
owes (a forwarded withdrawal or erasure) count these days.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")


def easter_sunday(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 - the algorithm's name
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def nrw_public_holidays(year: int) -> dict[date, str]:
    """Statutory public holidays of North Rhine-Westphalia (Feiertagsgesetz NW) in `year`."""
    easter = easter_sunday(year)
    days = {
        date(year, 1, 1): "Neujahr",
        easter - timedelta(days=2): "Karfreitag",
        easter: "Ostersonntag",
        easter + timedelta(days=1): "Ostermontag",
        date(year, 5, 1): "Tag der Arbeit",
        easter + timedelta(days=39): "Christi Himmelfahrt",
        easter + timedelta(days=49): "Pfingstsonntag",
        easter + timedelta(days=50): "Pfingstmontag",
        easter + timedelta(days=60): "Fronleichnam",
        date(year, 10, 3): "Tag der Deutschen Einheit",
        date(year, 11, 1): "Allerheiligen",
        date(year, 12, 25): "1. Weihnachtstag",
        date(year, 12, 26): "2. Weihnachtstag",
    }
    return days


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in nrw_public_holidays(day.year)


def add_working_days(start: date, n: int) -> date:
    """The n-th working day after `start` (the start day itself never counts). n >= 1."""
    if n < 1:
        raise ValueError("n must be at least 1")
    day = start
    left = n
    while left:
        day += timedelta(days=1)
        if is_working_day(day):
            left -= 1
    return day


def local_date(moment: datetime, tz: ZoneInfo = BERLIN) -> date:
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    return moment.astimezone(tz).date()


def end_of_day(day: date, tz: ZoneInfo = BERLIN) -> datetime:
    """The last moment of `day` in local time: a deadline "on" a date runs until the day is over."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=tz)
