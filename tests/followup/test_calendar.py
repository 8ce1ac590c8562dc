"""The business-day calendar: weekends, holidays, 调休 working weekends, calling hours and time zones."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from callbacks import business_calendar as cal
from callbacks.defaults import install_default_plans
from callbacks.models import CalendarDay

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
UTC = dt.UTC


@pytest.fixture(autouse=True)
def fresh_calendar(db: Any) -> Iterator[None]:
    cal.clear_calendar_cache()
    yield
    cal.clear_calendar_cache()


def at(
    zone: dt.tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)


# --- business days ---------------------------------------------------------------------------------


def test_weekdays_are_business_days_and_weekends_are_not() -> None:
    assert cal.is_business_day(dt.date(2026, 11, 20))  # Friday
    assert not cal.is_business_day(dt.date(2026, 11, 21))  # Saturday
    assert not cal.is_business_day(dt.date(2026, 11, 22))  # Sunday
    assert cal.is_business_day(dt.date(2026, 11, 23))  # Monday


def test_a_holiday_on_a_weekday_is_not_a_business_day() -> None:
    CalendarDay.objects.create(date=dt.date(2026, 10, 1), name="National Day")
    assert not cal.is_business_day(dt.date(2026, 10, 1))  # Thursday


def test_a_tiaoxiu_weekend_workday_is_a_business_day() -> None:
    CalendarDay.objects.create(date=dt.date(2026, 10, 10), is_workday=True, name="调休")
    assert cal.is_business_day(dt.date(2026, 10, 10))  # Saturday


def test_default_calendar_has_the_official_2026_schedule() -> None:
    install_default_plans()
    # Spring Festival: 15–23 February off; Saturday 14 and 28 February are working days.
    assert not any(cal.is_business_day(dt.date(2026, 2, d)) for d in range(15, 24))
    assert cal.is_business_day(dt.date(2026, 2, 14))
    assert cal.is_business_day(dt.date(2026, 2, 28))
    # National Day: 1–7 October off; Sunday 20 September and Saturday 10 October are working days.
    assert not any(cal.is_business_day(dt.date(2026, 10, d)) for d in range(1, 8))
    assert cal.is_business_day(dt.date(2026, 9, 20))
    assert cal.is_business_day(dt.date(2026, 10, 10))
    assert cal.is_business_day(dt.date(2026, 10, 8))


def test_add_business_days_skips_weekends() -> None:
    friday = dt.date(2026, 11, 20)
    assert cal.add_business_days(friday, 1) == dt.date(2026, 11, 23)
    assert cal.add_business_days(friday, 2) == dt.date(2026, 11, 24)
    # Counting starts the day after, whatever that day is: Saturday + 1 is Monday too.
    assert cal.add_business_days(dt.date(2026, 11, 21), 1) == dt.date(2026, 11, 23)


def test_add_zero_business_days_is_the_day_or_the_next_business_day() -> None:
    assert cal.add_business_days(dt.date(2026, 11, 20), 0) == dt.date(2026, 11, 20)
    assert cal.add_business_days(dt.date(2026, 11, 21), 0) == dt.date(2026, 11, 23)


def test_add_business_days_across_national_day_lands_on_the_tiaoxiu_saturday() -> None:
    install_default_plans()
    # Wednesday 30 September + 1: 1–7 October are off, Thursday 8 and Friday 9 work, then Saturday 10 (调休).
    assert cal.add_business_days(dt.date(2026, 9, 30), 1) == dt.date(2026, 10, 8)
    assert cal.add_business_days(dt.date(2026, 9, 30), 3) == dt.date(2026, 10, 10)


def test_add_business_days_refuses_negative_counts() -> None:
    with pytest.raises(ValueError):
        cal.add_business_days(dt.date(2026, 11, 20), -1)


def test_calendar_rows_are_read_once_for_many_questions() -> None:
    CalendarDay.objects.create(date=dt.date(2026, 12, 25), name="Closed")
    cal.clear_calendar_cache()
    with CaptureQueriesContext(connection) as queries:
        for offset in range(60):
            cal.is_business_day(dt.date(2026, 12, 1) + dt.timedelta(days=offset))
        cal.add_business_days(dt.date(2026, 12, 1), 40)
    assert len(queries.captured_queries) == 1


def test_an_edited_calendar_day_is_seen_at_once_in_this_process() -> None:
    assert cal.is_business_day(dt.date(2026, 12, 24))
    day = CalendarDay.objects.create(date=dt.date(2026, 12, 24), name="Closed")
    assert not cal.is_business_day(dt.date(2026, 12, 24))
    day.delete()
    assert cal.is_business_day(dt.date(2026, 12, 24))


# --- local days in the hospital zone ---------------------------------------------------------------


def test_local_day_bounds_are_in_the_hospital_zone() -> None:
    start = cal.local_start_of(dt.date(2026, 11, 23))
    end = cal.local_end_of(dt.date(2026, 11, 23))
    assert start == at(SHANGHAI, 2026, 11, 23, 0, 0)
    assert start.astimezone(UTC) == at(UTC, 2026, 11, 22, 16, 0)
    assert end.astimezone(SHANGHAI).time() == dt.time(23, 59, 59, 999999)
    assert end.astimezone(SHANGHAI).date() == dt.date(2026, 11, 23)


@override_settings(TIME_ZONE="America/New_York")
def test_local_day_bounds_follow_daylight_saving_in_new_york() -> None:
    # 8 March 2026: clocks jump from 02:00 to 03:00, so that day is 23 hours long.
    start = cal.local_start_of(dt.date(2026, 3, 8))
    end = cal.local_end_of(dt.date(2026, 3, 8))
    assert start.astimezone(UTC) == at(UTC, 2026, 3, 8, 5, 0)
    # Subtracting in UTC: Python subtracts two times of one zone by their wall clocks.
    assert end.astimezone(UTC) - start.astimezone(UTC) == dt.timedelta(hours=23, microseconds=-1)
    # 1 November 2026: clocks fall back, a 25-hour day.
    fall_start = cal.local_start_of(dt.date(2026, 11, 1)).astimezone(UTC)
    fall_end = cal.local_end_of(dt.date(2026, 11, 1)).astimezone(UTC)
    assert fall_end - fall_start == dt.timedelta(hours=25, microseconds=-1)


@override_settings(TIME_ZONE="America/Santiago")
def test_a_day_that_starts_in_a_dst_gap_starts_when_the_clocks_resume() -> None:
    # Chile springs forward at midnight: 6 September 2026 00:00 does not exist, the day starts at 01:00.
    start = cal.local_start_of(dt.date(2026, 9, 6))
    assert start.astimezone(zoneinfo.ZoneInfo("America/Santiago")).hour == 1
    assert cal.local_end_of(dt.date(2026, 9, 5)) < start


# --- calling hours ---------------------------------------------------------------------------------


def test_calling_hours_come_from_settings() -> None:
    assert cal.calling_hours() == (dt.time(9, 0), dt.time(20, 0))
    with override_settings(FOLLOWUP_CALLING_HOURS="08:30-17:30"):
        assert cal.calling_hours() == (dt.time(8, 30), dt.time(17, 30))


@pytest.mark.parametrize("value", ["9-20", "09:00", "20:00-09:00", "09:00-09:00", "nine to five", "25:00-26:00"])
def test_bad_calling_hours_are_refused_with_the_setting_named(value: str) -> None:
    with override_settings(FOLLOWUP_CALLING_HOURS=value), pytest.raises(ImproperlyConfigured) as refused:
        cal.calling_hours()
    assert "FOLLOWUP_CALLING_HOURS" in str(refused.value)


def test_a_moment_inside_calling_hours_on_a_business_day_is_kept() -> None:
    moment = at(SHANGHAI, 2026, 11, 23, 14, 37)
    assert cal.next_calling_time(moment) == moment
    assert cal.next_calling_time(at(SHANGHAI, 2026, 11, 23, 9, 0)) == at(SHANGHAI, 2026, 11, 23, 9, 0)


def test_before_calling_hours_waits_for_the_window_to_open() -> None:
    assert cal.next_calling_time(at(SHANGHAI, 2026, 11, 23, 8, 59, 59)) == at(SHANGHAI, 2026, 11, 23, 9, 0)


def test_the_end_of_calling_hours_belongs_to_the_next_window() -> None:
    assert cal.next_calling_time(at(SHANGHAI, 2026, 11, 23, 19, 59, 59)) == at(SHANGHAI, 2026, 11, 23, 19, 59, 59)
    assert cal.next_calling_time(at(SHANGHAI, 2026, 11, 23, 20, 0)) == at(SHANGHAI, 2026, 11, 24, 9, 0)


def test_friday_evening_waits_for_monday_morning() -> None:
    assert cal.next_calling_time(at(SHANGHAI, 2026, 11, 20, 21, 0)) == at(SHANGHAI, 2026, 11, 23, 9, 0)
    assert cal.next_calling_time(at(SHANGHAI, 2026, 11, 21, 11, 0)) == at(SHANGHAI, 2026, 11, 23, 9, 0)


def test_a_holiday_has_no_calling_hours() -> None:
    CalendarDay.objects.create(date=dt.date(2026, 11, 24), name="Closed")
    assert cal.next_calling_time(at(SHANGHAI, 2026, 11, 23, 20, 30)) == at(SHANGHAI, 2026, 11, 25, 9, 0)


def test_calling_hours_are_read_in_the_hospital_zone_whatever_zone_the_moment_is_in() -> None:
    # 02:00 UTC is 10:00 in Shanghai: inside the window.
    moment = at(UTC, 2026, 11, 23, 2, 0)
    assert cal.next_calling_time(moment) == moment
    # 13:00 UTC is 21:00 in Shanghai: tomorrow 09:00 Shanghai, which is 01:00 UTC.
    assert cal.next_calling_time(at(UTC, 2026, 11, 23, 13, 0)) == at(UTC, 2026, 11, 24, 1, 0)


@override_settings(TIME_ZONE="America/New_York")
def test_a_hospital_in_new_york_calls_in_new_york_hours() -> None:
    # 14:00 UTC on Monday is 09:00 in New York (EST, UTC−5).
    assert cal.next_calling_time(at(UTC, 2026, 11, 23, 13, 59)) == at(UTC, 2026, 11, 23, 14, 0)
    # Friday 20:30 New York is already Saturday in UTC, still Friday evening locally: Monday 09:00 local.
    result = cal.next_calling_time(at(NEW_YORK, 2026, 11, 20, 20, 30))
    assert result == at(NEW_YORK, 2026, 11, 23, 9, 0)
    assert result.utcoffset() is not None


@override_settings(TIME_ZONE="America/New_York")
def test_the_window_after_a_dst_change_opens_at_local_nine() -> None:
    # Friday 6 March (EST) evening → Monday 9 March 09:00 EDT, which is 13:00 UTC, not 14:00.
    assert cal.next_calling_time(at(NEW_YORK, 2026, 3, 6, 21, 0)).astimezone(UTC) == at(UTC, 2026, 3, 9, 13, 0)


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError):
        cal.next_calling_time(dt.datetime(2026, 11, 23, 10, 0))
