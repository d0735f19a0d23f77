"""The values a message template may use, built from a (scrubbed) trigger event for one language.

Dates are formatted for the recipient's locale with Babel, in the network's time zone.
One builder serves every template: it yields a superset, and each message template
(templates/messages/<name>.j2) uses the placeholders it needs; the catalogues' translations
use the same ones (tests/test_i18n.py checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_timedelta
from babel.lists import format_list
from babel.numbers import format_decimal

from .model import client_ref

Terms = Callable[[str, str, str], str]  # (vocabulary, wire value, language) -> text
OrgName = Callable[[str], str]
ServiceName = Callable[[str, str], str]  # (org id, service id) -> name


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _d(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def build_context(
    event_type: str,
    data: dict[str, Any],
    *,
    language: str,
    on_behalf_of: str | None,
    terms: Terms,
    org_name: OrgName,
    service_name: ServiceName,
    tz: ZoneInfo,
    referral: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`referral` is what the service remembered from `lotse.referral.sent` (answers carry no service)."""
    loc = language

    def day(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, date) and not isinstance(value, datetime):
            return format_date(value, format="long", locale=loc)
        dt = _dt(value)
        return format_date(dt.astimezone(tz).date(), format="long", locale=loc) if dt else None

    def moment(value: Any) -> str | None:
        dt = _dt(value)
        return format_datetime(dt, format="medium", tzinfo=tz, locale=loc) if dt else None

    referral = referral or {}
    from_org = data.get("from_org") or referral.get("from_org")
    to_org = data.get("to_org") or referral.get("to_org")
    service = data.get("service") or referral.get("service")

    ctx: dict[str, Any] = {
        "org_name": org_name(on_behalf_of) if on_behalf_of else "",
        "client_ref": client_ref(data.get("client_id")),
        "from_org_name": org_name(from_org) if from_org else "",
        "to_org_name": org_name(to_org) if to_org else "",
        "service_name": service_name(to_org, service) if (to_org and service) else None,
    }
    if event_type.startswith("lotse.deadline."):
        days_left = int(data.get("days_left", 0) or 0)
        ctx |= {
            "deadline_kind": terms("deadline_kind", data["kind"], loc),
            "due_date": day(data["due_at"]),
            "days_left": days_left,
            "days_left_text": format_timedelta(
                timedelta(days=max(days_left, 0)), granularity="day", threshold=100000, format="long", locale=loc
            ),
        }
    if event_type == "lotse.referral.sent":
        ctx["answer_due"] = day(_d(data.get("answer_due")))
    if event_type == "lotse.referral.accepted":
        ctx["appointment"] = moment(data.get("appointment_at"))
    if event_type == "lotse.referral.declined":
        ctx["decline_reason"] = terms("decline_reason", data["reason"], loc)
    if event_type == "lotse.consent.granted":
        ctx |= {
            "recipients_list": format_list([org_name(o) for o in data["recipients"]], locale=loc),
            "purposes_list": format_list([terms("purpose", p, loc) for p in data["purposes"]], locale=loc),
            "categories_list": format_list([terms("data_category", c, loc) for c in data["categories"]], locale=loc),
            "granted_date": day(data["granted_at"]),
            "valid_until_date": day(data.get("valid_until")),
        }
    if event_type == "lotse.consent.withdrawn":
        ctx |= {"consent_ref": str(data["consent_id"])[:8], "withdrawn_date": day(data["withdrawn_at"])}
    if event_type == "lotse.acknowledgement.overdue":
        overdue = str(data["org"])
        ctx |= {
            "kind": data["kind"],  # withdrawal | erasure: the template chooses its sentences
            "own": on_behalf_of == overdue,  # to the organisation that did not acknowledge, or to the one that collected the data
            "overdue_org_name": org_name(overdue),
            "event_id": str(data["acknowledged_event_id"]),
            "forwarded_date": day(data["forwarded_at"]),
            "due_date": day(data["due_at"]),
        }
    if event_type == "lotse.inbox.left_unfetched":
        ctx |= inbox_left_unfetched_context(data, loc, moment)
    if event_type == "lotse.case.handed_over":
        open_items = len(data.get("open_referral_ids") or []) + len(data.get("open_deadline_ids") or [])
        ctx |= {"handed_over_date": day(data["handed_over_at"]), "open_items": format_decimal(open_items, locale=loc)}
    return ctx


def inbox_left_unfetched_context(data: dict[str, Any], loc: str, moment: Any) -> dict[str, Any]:
    """The gateway's notice (services/gateway): how many records wait, since when, and the configured time."""
    return {
        "pending": format_decimal(int(data["pending"]), locale=loc),
        "oldest_date": moment(data["oldest_record_at"]),
        "unfetched_after": format_timedelta(timedelta(seconds=int(data["unfetched_after_s"])), threshold=100000, format="long", locale=loc),
    }
