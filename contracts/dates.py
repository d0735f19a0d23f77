"""The dates Lotse supports, as an input type and as a bound for date arithmetic.

Python's `date` ends on 9999-12-31, so a date near it breaks the first computation that goes past
it (`valid_from + 18 months`: "year 10000 is out of range"), and a time with an offset near either
end cannot even be converted to UTC for PostgreSQL. No date Lotse handles (birth dates of living
people, residence titles, deadlines, consents, audit events) lies outside 1900..9000, and the margin
to Python's limits leaves room for every computation the services make (lead times, 18-month
periods, time zones). So:

- request fields and query parameters take `SupportedDate` / `SupportedDateTime`: a date outside
  the range is refused with 422 naming the field, like any other validation error;
- date arithmetic checks its result with `check_supported`, which raises `DateOutOfRange` (a
  ValueError), so a domain function can refuse the input it came from with its own error naming
  the field.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, TypeVar

from pydantic import AfterValidator, AwareDatetime

EARLIEST = date(1900, 1, 1)
LATEST = date(9000, 12, 31)

D = TypeVar("D", date, datetime)


class DateOutOfRange(ValueError):
    """A date, or the result of date arithmetic, outside EARLIEST..LATEST."""


def is_supported(value: date | datetime) -> bool:
    day = value.date() if isinstance(value, datetime) else value
    return EARLIEST <= day <= LATEST


def check_supported(value: D) -> D:
    """`value` unchanged, or DateOutOfRange (a ValueError, so also a 422 inside a pydantic model)."""
    if not is_supported(value):
        raise DateOutOfRange(f"must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


SupportedDate = Annotated[date, AfterValidator(check_supported)]
SupportedDateTime = Annotated[datetime, AfterValidator(check_supported)]
SupportedAwareDateTime = Annotated[AwareDatetime, AfterValidator(check_supported)]
