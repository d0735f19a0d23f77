"""Pure domain rules: NRW working days, §104c end dates, deadline notices, referral life cycle."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from lotse_kit import calendar
from services.intake.domain import deadlines
from services.intake.domain.referrals import Action, IllegalTransition, NotAllowed, ReferralStatus, check_actor, next_status

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("year", "easter"),
    [
        (2024, date(2024, 3, 31)),
        (2025, date(2025, 4, 20)),
        (2026, date(2026, 4, 5)),
        (2027, date(2027, 3, 28)),
        (2038, date(2038, 4, 25)),
        (2285, date(2285, 3, 22)),
    ],
)
def test_easter_sunday(year, easter):
    assert calendar.easter_sunday(year) == easter


def test_nrw_holidays_2025_include_the_easter_based_ones():
    days = calendar.nrw_public_holidays(2025)
    assert days[date(2025, 4, 18)] == "Karfreitag"
    assert days[date(2025, 4, 21)] == "Ostermontag"
    assert days[date(2025, 5, 29)] == "Christi Himmelfahrt"
    assert days[date(2025, 6, 9)] == "Pfingstmontag"
    assert days[date(2025, 6, 19)] == "Fronleichnam"  # a holiday in NRW, not in every Land
    assert days[date(2025, 11, 1)] == "Allerheiligen"
    assert date(2025, 10, 31) not in days  # Reformationstag is not a holiday in NRW
    assert date(2025, 8, 15) not in days  # nor Mariä Himmelfahrt


def test_working_days_skip_weekends_and_easter():
    # Thursday before Easter 2025: Good Friday, the weekend and Easter Monday do not count.
    assert calendar.add_working_days(date(2025, 4, 17), 1) == date(2025, 4, 22)
    assert calendar.add_working_days(date(2025, 4, 17), 3) == date(2025, 4, 24)
    # Friday -> next Monday; the start day never counts.
    assert calendar.add_working_days(date(2026, 3, 6), 1) == date(2026, 3, 9)
    # Across Christmas and New Year 2025/26.
    assert calendar.add_working_days(date(2025, 12, 23), 3) == date(2025, 12, 30)
    assert calendar.add_working_days(date(2025, 12, 30), 2) == date(2026, 1, 2)
    assert not calendar.is_working_day(date(2026, 6, 4))  # Fronleichnam 2026
    with pytest.raises(ValueError, match="at least 1"):
        calendar.add_working_days(date(2026, 1, 5), 0)


@pytest.mark.parametrize(
    ("valid_from", "last_day"),
    [
        (date(2025, 3, 15), date(2026, 9, 14)),  # the example in §187(2)/§188(2) BGB terms
        (date(2025, 3, 1), date(2026, 8, 31)),  # starting on the 1st ends on the last day of the month before
        (date(2025, 8, 31), date(2027, 2, 28)),  # no 31 February: §188(3), end of that month
        (date(2025, 8, 29), date(2027, 2, 28)),  # no 29 February 2027 either
        (date(2026, 8, 30), date(2028, 2, 29)),  # leap year: no 30 February, ends 29 February
        (date(2026, 8, 29), date(2028, 2, 28)),  # 29 February 2028 exists: the day before it
        (date(2025, 7, 1), date(2026, 12, 31)),  # year boundary
        (date(2024, 12, 31), date(2026, 6, 30)),
    ],
)
def test_chancen_aufenthalt_ends_after_18_months_per_bgb(valid_from, last_day):
    assert deadlines.chancen_aufenthalt_last_day(valid_from) == last_day


def test_chancen_note_explains_25a_25b():
    note = deadlines.legal_note(deadlines.DeadlineKind.CHANCEN_AUFENTHALT_END, date(2026, 9, 14))
    assert "2026-09-14" in note and "§25a" in note and "§25b" in note and "cannot be extended" in note


def test_notices_emit_each_lead_time_once_then_missed():
    due = datetime(2026, 6, 30, 23, 59, 59, tzinfo=BERLIN)
    leads = [90, 30, 7]
    done: set[str] = set()
    emitted = []
    now = due - timedelta(days=120)
    plan = deadlines.plan_notices(due, leads, now, done)
    assert plan.notices == [] and plan.next_check_at == due - timedelta(days=90)
    for step in range(0, 125):  # walk day by day past the due date
        now = due - timedelta(days=120) + timedelta(days=step)
        plan = deadlines.plan_notices(due, leads, now, done)
        for n in plan.notices:
            done.add(n.key)
            if n.emit:
                emitted.append((n.key, (due - now).days))
        if plan.next_check_at is not None:
            assert plan.next_check_at > now
    assert emitted == [("approaching:90", 90), ("approaching:30", 30), ("approaching:7", 7), ("missed", -1)]


def test_a_late_registered_deadline_gets_only_the_most_urgent_notice():
    due = datetime(2026, 6, 30, 12, tzinfo=BERLIN)
    plan = deadlines.plan_notices(due, [90, 30, 7], due - timedelta(days=5), set())
    assert [(n.key, n.emit) for n in plan.notices] == [("approaching:7", True), ("approaching:30", False), ("approaching:90", False)]
    assert plan.next_check_at == due + timedelta(microseconds=1)
    # Already past due: missed only, the rest superseded.
    plan = deadlines.plan_notices(due, [90, 30, 7], due + timedelta(hours=1), {"approaching:90"})
    assert [(n.key, n.emit) for n in plan.notices] == [("approaching:7", False), ("approaching:30", False), ("missed", True)]
    assert plan.next_check_at is None


def test_referral_life_cycle():
    assert next_status("sent", Action.ACCEPT) is ReferralStatus.ACCEPTED
    assert next_status("accepted", Action.COMPLETE) is ReferralStatus.COMPLETED
    assert next_status("sent", Action.DECLINE) is ReferralStatus.DECLINED
    assert next_status("accepted", Action.REVOKE) is ReferralStatus.REVOKED
    for status, action in [
        ("sent", Action.COMPLETE),
        ("declined", Action.ACCEPT),
        ("completed", Action.REVOKE),
        ("accepted", Action.ACCEPT),
        ("revoked", Action.DECLINE),
        ("blocked", Action.ACCEPT),
    ]:
        with pytest.raises(IllegalTransition):
            next_status(status, action)


def test_only_the_receiver_answers_and_only_the_sender_revokes():
    check_actor(Action.ACCEPT, "ki", "jc", "ki")
    check_actor(Action.REVOKE, "jc", "jc", "ki")
    with pytest.raises(NotAllowed):
        check_actor(Action.ACCEPT, "jc", "jc", "ki")
    with pytest.raises(NotAllowed):
        check_actor(Action.COMPLETE, "awo", "jc", "ki")
    with pytest.raises(NotAllowed):
        check_actor(Action.REVOKE, "ki", "jc", "ki")
