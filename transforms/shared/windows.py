"""Calendar windows: hour / day / week / month aligned in an IANA time zone, returned in UTC.

The one home of window alignment: the usage query's buckets (SPEC §4), the alerts' windows (§6:
"aligned like the usage query") and the reports' local days all come from here.

A window runs from one boundary of the zone's local clock to the next; every window is half-open
[start, end) and all returned datetimes are aware UTC datetimes.

- day: from one local midnight to the next (23, 24 or 25 hours around DST changes); a midnight
  that the clock skips (America/Santiago) is the first instant of that local day.
- week: from a local Monday midnight to the next; month: from the local midnight of the 1st.
- hour: from one instant at which the local clock reads a whole hour (HH:00:00) to the next. So
  a bucket's start, shown in the zone, always reads HH:00; in Asia/Kolkata hours start at :30 UTC;
  a repeated hour of a fall-back (New York's 01:00 EDT, then 01:00 EST) is two windows. Where
  the offset moves by 30 minutes (Australia/Lord_Howe) the clock skips or repeats half an hour
  without reading a new whole hour, so that hour window lasts 90 minutes: 2026-04-04, falling
  back at 02:00, the clock reads 01:00 at 14:00Z and next reads 02:00 at 15:30Z → [14:00, 15:30).

Input instants: an aware datetime is an instant; a naive datetime is UTC (the project-wide
convention for instants); a `date` (not a datetime) is a calendar date and means local midnight in
`tz` (the SPEC §3 convention for dates without a time).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
WINDOWS: tuple[str, ...] = ("hour", "day", "week", "month")


def check_window(window: str) -> str:
    if window not in WINDOWS:
        raise ValueError(f"window must be one of hour, day, week, month, not {window!r}")
    return window


@lru_cache(maxsize=1024)
def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown IANA time zone {tz!r}") from None


def to_instant(value: dt.datetime | dt.date, tz: str = "UTC") -> dt.datetime:
    """An aware UTC datetime: aware stays the same instant, naive is UTC, a date is local midnight."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, dt.date):
        return _local_midnight(value, zone(tz))
    raise TypeError(f"expected a datetime or date, got {type(value).__name__}")


def _local_midnight(d: dt.date, z: ZoneInfo) -> dt.datetime:
    # fold=0: a midnight that falls in a DST gap maps to the transition instant (the first instant
    # of that local day); an ambiguous midnight takes its first occurrence.
    return dt.datetime(d.year, d.month, d.day, tzinfo=z).astimezone(UTC)


_QUARTER = dt.timedelta(minutes=15)


def _whole_local_hour(t: dt.datetime, z: ZoneInfo) -> bool:
    local = t.astimezone(z)
    return local.minute == 0 and local.second == 0 and local.microsecond == 0


def _floor_quarter(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)


def _floor_hour(t: dt.datetime, z: ZoneInfo) -> dt.datetime:
    """The last instant <= t at which the local clock shows a whole hour.

    UTC offsets are multiples of 15 minutes, so local whole hours fall on UTC quarter hours: walk
    back over those (at most a few steps, also across DST changes such as Lord Howe's 30 minutes).
    """
    c = _floor_quarter(t)
    for _ in range(16):
        if _whole_local_hour(c, z):
            return c
        c -= _QUARTER
    return t.replace(minute=0, second=0, microsecond=0)  # exotic offset: fall back to UTC hours


def _next_hour(start: dt.datetime, z: ZoneInfo) -> dt.datetime:
    """The first instant after `start` at which the local clock shows a whole hour."""
    c = _floor_quarter(start) + _QUARTER
    for _ in range(16):
        if _whole_local_hour(c, z):
            return c
        c += _QUARTER
    return start.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)


def window_containing(t: dt.datetime, window: str, tz: str = "UTC") -> tuple[dt.datetime, dt.datetime]:
    """The calendar window of kind `window` in zone `tz` that contains instant `t` (UTC bounds)."""
    check_window(window)
    z = zone(tz)
    t = to_instant(t, tz)
    if window == "hour":
        start = _floor_hour(t, z)
        return start, _next_hour(start, z)
    d = t.astimezone(z).date()
    if window == "day":
        first, nxt = d, d + dt.timedelta(days=1)
    elif window == "week":
        first = d - dt.timedelta(days=d.weekday())
        nxt = first + dt.timedelta(days=7)
    else:  # month
        first = d.replace(day=1)
        nxt = (first.replace(year=first.year + 1, month=1) if first.month == 12
               else first.replace(month=first.month + 1))
    return _local_midnight(first, z), _local_midnight(nxt, z)


def calendar_windows(start: dt.datetime | dt.date, end: dt.datetime | dt.date, window: str,
                     tz: str = "UTC") -> list[tuple[dt.datetime, dt.datetime]]:
    """Consecutive aligned windows whose union covers [start, end) (first one contains `start`).

    Windows are not clipped to the range: the first starts at or before `start`, the last ends at
    or after `end`. Empty when end <= start.
    """
    check_window(window)
    zone(tz)
    s, e = to_instant(start, tz), to_instant(end, tz)
    out: list[tuple[dt.datetime, dt.datetime]] = []
    if e <= s:
        return out
    w = window_containing(s, window, tz)
    out.append(w)
    while w[1] < e:
        w = window_containing(w[1], window, tz)
        out.append(w)
    return out
