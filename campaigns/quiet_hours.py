"""Marketing quiet hours in the patient's own time zone (default 21:00–08:00, i.e. send 08:00–21:00).

The window is [start, end) in local wall-clock time and may cross midnight (21:00–08:00) or not
(12:00–14:00). The sender asks `next_allowed_time` for each recipient and defers the ones in quiet hours
to the moment the window ends, computed in the patient's zone so DST days and half-hour offsets
(Asia/Kolkata) come out right.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from django.conf import settings

_UTC = dt.UTC


@functools.lru_cache(maxsize=512)
def zone(tz_name: str) -> zoneinfo.ZoneInfo:
    """The patient's zone; an unknown name falls back to the hospital's zone rather than failing a send."""
    try:
        return zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def is_quiet(now: dt.datetime, tz_name: str, start: dt.time, end: dt.time) -> bool:
    if start == end:
        return False
    local = now.astimezone(zone(tz_name)).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def next_allowed_time(now: dt.datetime, tz_name: str, start: dt.time, end: dt.time) -> dt.datetime:
    """`now` itself when outside quiet hours in `tz_name`, else the first moment the quiet hours end, in UTC.

    UTC because Python compares two datetimes of one zone by wall clock, ignoring `fold`: an end at 01:30
    on a fall-back night would otherwise compare equal to the second 01:30, an hour later.
    """
    if not is_quiet(now, tz_name, start, end):
        return now
    tz = zone(tz_name)
    local = now.astimezone(tz)
    day = local.date()
    # Evening side of a window that crosses midnight: it ends tomorrow morning.
    if start > end and local.time().replace(tzinfo=None) >= start:
        day += dt.timedelta(days=1)
    return max(now, _first_instant_at_or_after(day, end, tz).astimezone(_UTC))


def _first_instant_at_or_after(day: dt.date, wall: dt.time, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first instant at which the local clock on `day` reads `wall` or later.

    An ambiguous wall time (clocks going back) is its first occurrence (fold=0). A wall time skipped by
    clocks going forward never appears: the answer is the transition itself (02:30 on a New York spring
    day → 03:00 EDT), found by bisection between the two readings of the nonexistent time.
    """
    naive = dt.datetime.combine(day, wall)
    early = naive.replace(tzinfo=tz, fold=0)
    if early.astimezone(_UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return early
    # Nonexistent: fold=1 reads it with the offset after the jump (an earlier instant, before the gap in
    # wall time), fold=0 with the offset before it (a later instant, after the gap). The transition lies
    # between; real transitions are whole seconds, so bisect to the second.
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(_UTC)
    hi = early.astimezone(_UTC)
    if lo > hi:
        lo, hi = hi, lo
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(tz)
