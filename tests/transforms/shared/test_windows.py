"""Calendar windows: aligned in the customer's IANA zone, DST-correct, weeks from Monday."""

from __future__ import annotations

import bisect
import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest

from tests.transforms.metering.support import UTC, t
from transforms.shared.windows import calendar_windows, window_containing


def local(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def test_budapest_days_follow_dst():
    days = calendar_windows(dt.date(2026, 3, 28), dt.date(2026, 3, 31), "day", "Europe/Budapest")
    assert [(e - s).total_seconds() / 3600 for s, e in days] == [24, 23, 24]  # 29 March: spring forward
    assert days[1] == (local("2026-03-29T00:00:00+01:00"), local("2026-03-30T00:00:00+02:00"))
    autumn = window_containing(t("2026-10-25T12:00:00Z"), "day", "Europe/Budapest")
    assert (autumn[1] - autumn[0]) == dt.timedelta(hours=25)


def test_weeks_start_on_monday_and_months_on_the_first_local_midnight():
    assert window_containing(t("2026-01-01T12:00:00Z"), "week") == (t("2025-12-29T00:00:00Z"), t("2026-01-05T00:00:00Z"))
    # Sunday 23:30 UTC is already Monday in Budapest
    assert window_containing(t("2026-01-04T23:30:00Z"), "week", "Europe/Budapest")[0] == local("2026-01-05T00:00:00+01:00")
    assert window_containing(t("2026-02-10T00:00:00Z"), "month", "Europe/Budapest") == (
        local("2026-02-01T00:00:00+01:00"), local("2026-03-01T00:00:00+01:00"))
    assert window_containing(t("2026-12-31T23:00:00Z"), "month") == (t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z"))


def test_hours_follow_the_local_clock():
    assert window_containing(t("2026-01-01T00:10:00Z"), "hour", "Asia/Kolkata") == (
        t("2025-12-31T23:30:00Z"), t("2026-01-01T00:30:00Z"))
    # Lord Howe falls back 30 minutes at 02:00 local: that local hour lasts 90 minutes
    s, e = window_containing(t("2026-04-04T14:40:00Z"), "hour", "Australia/Lord_Howe")
    assert (s, e) == (t("2026-04-04T14:00:00Z"), t("2026-04-04T15:30:00Z"))
    hours = calendar_windows(dt.date(2026, 1, 1), dt.date(2027, 1, 1), "hour", "Europe/Budapest")
    assert len(hours) == 8760 and all(a[1] == b[0] for a, b in zip(hours, hours[1:]))


def test_calendar_windows_cover_the_range_with_whole_windows():
    ws = calendar_windows(t("2026-01-10T12:00:00Z"), t("2026-03-02T00:00:00Z"), "month")
    assert ws == [(t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z")),
                  (t("2026-02-01T00:00:00Z"), t("2026-03-01T00:00:00Z")),
                  (t("2026-03-01T00:00:00Z"), t("2026-04-01T00:00:00Z"))]
    # dates are local midnights, datetimes instants (naive = UTC)
    assert calendar_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 2), "day", "America/New_York") == [
        (t("2026-01-01T05:00:00Z"), t("2026-01-02T05:00:00Z"))]
    assert calendar_windows(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, 1), "hour") == [
        (t("2026-01-01T00:00:00Z"), t("2026-01-01T01:00:00Z"))]
    assert calendar_windows(t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z"), "day") == []
    assert all(s.tzinfo is not None and s.utcoffset() == dt.timedelta(0) for s, _ in ws)


def test_bad_window_or_zone_is_refused():
    with pytest.raises(ValueError, match="hour, day, week, month"):
        calendar_windows(dt.date(2026, 1, 1), dt.date(2026, 2, 1), "year")
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        window_containing(t("2026-01-01T00:00:00Z"), "day", "Mars/Olympus")


def _zone_changes(tz: str, first: int, last: int) -> list[dt.datetime]:
    """The instants (to the minute) at which zone `tz` changes its UTC offset in years first..last."""
    from zoneinfo import ZoneInfo

    z = ZoneInfo(tz)
    out, t = [], dt.datetime(first, 1, 1, tzinfo=UTC)
    while t.year <= last:
        nxt = t + dt.timedelta(hours=1)
        if t.astimezone(z).utcoffset() != nxt.astimezone(z).utcoffset():
            lo, hi = t, nxt
            while hi - lo > dt.timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid.astimezone(z).utcoffset() == lo.astimezone(z).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        t = nxt
    return out


# zones with half-hour and 45-minute offsets, a 30-minute DST change (Lord Howe), DST at midnight
# (Santiago), a DST pause in Ramadan (Casablanca)
ODD_ZONES = ["Australia/Lord_Howe", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham",
             "America/Santiago", "America/New_York", "Europe/Budapest", "Africa/Casablanca", "UTC"]

FIRST, LAST = dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC)


def sample_instants(tz: str) -> list[dt.datetime]:
    """Every 10 minutes for 3 hours either side of each offset change of `tz` in 2025-2027, and
    2,000 random instants of those years."""
    rnd = random.Random(tz)
    out = [c + dt.timedelta(minutes=m) for c in _zone_changes(tz, 2025, 2027) for m in range(-180, 181, 10)]
    span = int((LAST - FIRST).total_seconds())
    return out + [FIRST + dt.timedelta(seconds=rnd.randrange(span), microseconds=rnd.randrange(10**6))
                  for _ in range(2000)]


def _starts_a_window(s: dt.datetime, window: str, tz: str) -> bool:
    """`s` is a boundary of the local clock: a whole hour, else the first instant of a local day
    (a Monday for weeks, the 1st for months)."""
    local = s.astimezone(ZoneInfo(tz))
    if window == "hour":
        return (local.minute, local.second, local.microsecond) == (0, 0, 0)
    day_starts = local.date() != (s - dt.timedelta(microseconds=1)).astimezone(ZoneInfo(tz)).date()
    return day_starts and (window == "day" or (window == "week" and local.weekday() == 0)
                           or (window == "month" and local.day == 1))


@pytest.mark.parametrize("tz", ODD_ZONES)
def test_window_containing_holds_t_and_is_the_calendar_window_of_t(tz):
    """At every sampled instant t: window_containing(t) contains t, is the window of
    calendar_windows that holds t, and the windows start at boundaries of the local clock, one
    after the other."""
    instants = sample_instants(tz)
    for window in ("hour", "day", "week", "month"):
        grid = calendar_windows(FIRST - dt.timedelta(days=40), LAST, window, tz)
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(grid, grid[1:]))
        assert all(_starts_a_window(s, window, tz) for s, _ in grid), window
        starts = [s for s, _ in grid]
        for t in instants:
            s, e = window_containing(t, window, tz)
            assert s <= t < e, (window, t)
            assert (s, e) == grid[bisect.bisect_right(starts, t) - 1], (window, t)
