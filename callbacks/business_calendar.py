"""The hospital's working calendar: business days (Mon–Fri with holidays and 调休 exceptions) and calling hours.

All local times are in the hospital's zone (settings.TIME_ZONE, from HOSPITAL_TIME_ZONE). Everything that goes
in or comes out as a datetime is aware; local wall-clock times are built through zoneinfo so DST gaps and
repeats resolve to real instants.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
import zoneinfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from callbacks.models import CalendarDay

# CalendarDay rows change a few times a year; the planner and the dispatcher ask about many days per batch.
# A short TTL keeps other processes' admin edits visible within a minute without a query per question.
CALENDAR_CACHE_SECONDS = 60.0
# No real calendar has a year of holidays in a row; stepping further means the CalendarDay rows are wrong.
_MAX_STEP_DAYS = 366

_cache_lock = threading.Lock()
_cache: tuple[float, dict[dt.date, bool]] | None = None


def clear_calendar_cache(**_kwargs: object) -> None:
    """Forget the cached CalendarDay rows (after an edit in this process, or between tests)."""
    global _cache
    with _cache_lock:
        _cache = None


post_save.connect(clear_calendar_cache, sender=CalendarDay, dispatch_uid="business_calendar_save")
post_delete.connect(clear_calendar_cache, sender=CalendarDay, dispatch_uid="business_calendar_delete")


def _exceptions() -> dict[dt.date, bool]:
    """{date: is_workday} for every CalendarDay row; the whole table is a few dozen rows a year."""
    global _cache
    cached = _cache
    if cached is not None and time.monotonic() - cached[0] < CALENDAR_CACHE_SECONDS:
        return cached[1]
    rows = dict(CalendarDay.objects.values_list("date", "is_workday"))
    with _cache_lock:
        _cache = (time.monotonic(), rows)
    return rows


def is_business_day(day: dt.date) -> bool:
    """Monday–Friday, unless a CalendarDay row makes it a holiday or a 调休 working weekend day."""
    override = _exceptions().get(day)
    if override is not None:
        return override
    return day.weekday() < 5


def next_business_day(day: dt.date) -> dt.date:
    """The first business day on or after ``day``."""
    return add_business_days(day, 0)


def add_business_days(day: dt.date, n: int) -> dt.date:
    """The n-th business day after ``day`` (n=0: ``day`` itself if a business day, else the next one).

    Counting starts the day after ``day`` whatever ``day`` is, so Friday + 1 and Saturday + 1 are both Monday.
    """
    if n < 0:
        raise ValueError("add_business_days counts forward only")
    exceptions = _exceptions()

    def business(d: dt.date) -> bool:
        override = exceptions.get(d)
        return override if override is not None else d.weekday() < 5

    current = day
    remaining = n
    if remaining == 0 and business(current):
        return current
    remaining = max(remaining, 1)
    skipped = 0
    while remaining:
        current += dt.timedelta(days=1)
        if business(current):
            remaining -= 1
            skipped = 0
        else:
            skipped += 1
            if skipped > _MAX_STEP_DAYS:
                raise ImproperlyConfigured(f"No business day within a year after {current - dt.timedelta(days=366)}")
    return current


@functools.lru_cache(maxsize=8)
def parse_calling_hours(value: str) -> tuple[dt.time, dt.time]:
    """ "09:00-20:00" → (09:00, 20:00). Raises ImproperlyConfigured naming the setting."""
    try:
        start_text, end_text = (part.strip() for part in value.split("-"))
        start = dt.time.fromisoformat(start_text)
        end = dt.time.fromisoformat(end_text)
    except ValueError:
        raise ImproperlyConfigured(
            f"FOLLOWUP_CALLING_HOURS must look like 09:00-20:00 (start-end, 24-hour local time), got {value!r}"
        ) from None
    if start >= end:
        raise ImproperlyConfigured(f"FOLLOWUP_CALLING_HOURS must start before it ends within one day, got {value!r}")
    return start, end


def calling_hours() -> tuple[dt.time, dt.time]:
    """Today's calling window in hospital local time, [start, end)."""
    return parse_calling_hours(settings.FOLLOWUP_CALLING_HOURS)


# This module is imported from CallbacksConfig.ready() (through the dispatcher), so a bad setting stops
# the process at start-up instead of at the first callback.
calling_hours()


def hospital_zone() -> zoneinfo.ZoneInfo:
    zone = timezone.get_default_timezone()
    assert isinstance(zone, zoneinfo.ZoneInfo)
    return zone


def local_at(day: dt.date, at: dt.time) -> dt.datetime:
    """The instant the hospital's clocks show ``at`` on ``day``; a time skipped by DST lands just after the gap."""
    zone = hospital_zone()
    naive = dt.datetime.combine(day, at)
    # fold=0 in a gap uses the pre-transition offset; the UTC round trip turns that into the real instant.
    return naive.replace(tzinfo=zone).astimezone(dt.UTC).astimezone(zone)


def local_start_of(day: dt.date) -> dt.datetime:
    return local_at(day, dt.time(0, 0))


def local_end_of(day: dt.date) -> dt.datetime:
    """The last instant of ``day`` in the hospital zone (so a deadline shows as 23:59, not next day 00:00)."""
    return (local_start_of(day + dt.timedelta(days=1)) - dt.timedelta(microseconds=1)).astimezone(hospital_zone())


def local_date(moment: dt.datetime) -> dt.date:
    if timezone.is_naive(moment):
        raise ValueError("local_date needs an aware datetime")
    return moment.astimezone(hospital_zone()).date()


def calling_window_start(day: dt.date) -> dt.datetime:
    """Start of calling hours on ``day`` (which the caller has already made a business day)."""
    return local_at(day, calling_hours()[0])


def next_calling_time(moment: dt.datetime) -> dt.datetime:
    """``moment`` if it falls in calling hours on a business day, else the start of the next calling window."""
    if timezone.is_naive(moment):
        raise ValueError("next_calling_time needs an aware datetime")
    start, end = calling_hours()
    local = moment.astimezone(hospital_zone())
    day = local.date()
    if is_business_day(day):
        if local < local_at(day, start):
            return local_at(day, start)
        if local < local_at(day, end):
            return moment
    return local_at(add_business_days(day, 1), start)
