"""Alert windows: aligned in the customer's zone (weeks start Monday, DST-correct) or billing periods."""

import bisect
import datetime as dt

import pytest

from catalog.config import Alert
from transforms.alerts import alert_windows
from tests.transforms.shared.test_windows import FIRST, LAST, ODD_ZONES, sample_instants
from transforms.shared.windows import calendar_windows, window_containing

UTC = dt.timezone.utc


def utc(*a) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def alert(window: str) -> Alert:
    return Alert(alert_id="a", metric="usage", meter_api_name="m", window=window,
                 condition="greater_than", threshold=1)


def test_week_windows_start_monday_in_utc():
    w = alert_windows(alert("week"), utc(2026, 1, 7, 12), "UTC")  # a Wednesday
    assert w.current == (utc(2026, 1, 5), utc(2026, 1, 12))
    assert w.last_complete == (utc(2025, 12, 29), utc(2026, 1, 5))
    assert w.before_last == (utc(2025, 12, 22), utc(2025, 12, 29))


def test_as_of_on_a_boundary_starts_the_new_window():
    w = alert_windows(alert("day"), utc(2026, 1, 7), "UTC")
    assert w.current == (utc(2026, 1, 7), utc(2026, 1, 8))
    assert w.last_complete == (utc(2026, 1, 6), utc(2026, 1, 7))


def test_month_windows_across_a_year_end():
    w = alert_windows(alert("month"), utc(2026, 1, 10), "UTC")
    assert w.current == (utc(2026, 1, 1), utc(2026, 2, 1))
    assert w.last_complete == (utc(2025, 12, 1), utc(2026, 1, 1))
    assert w.before_last == (utc(2025, 11, 1), utc(2025, 12, 1))


def test_week_in_tokyo_starts_monday_midnight_local():
    # Monday 2026-01-05 00:00 JST = Sunday 2026-01-04 15:00 UTC
    w = alert_windows(alert("week"), utc(2026, 1, 4, 16), "Asia/Tokyo")
    assert w.current == (utc(2026, 1, 4, 15), utc(2026, 1, 11, 15))
    # one hour earlier it is still the previous local week
    w = alert_windows(alert("week"), utc(2026, 1, 4, 14), "Asia/Tokyo")
    assert w.current == (utc(2025, 12, 28, 15), utc(2026, 1, 4, 15))


def test_day_windows_across_spring_forward_are_23_hours():
    # New York springs forward on Sunday 2026-03-08 (02:00 EST -> 03:00 EDT)
    w = alert_windows(alert("day"), utc(2026, 3, 9, 12), "America/New_York")
    assert w.current == (utc(2026, 3, 9, 4), utc(2026, 3, 10, 4))
    assert w.last_complete == (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))
    assert w.last_complete[1] - w.last_complete[0] == dt.timedelta(hours=23)
    assert w.before_last == (utc(2026, 3, 7, 5), utc(2026, 3, 8, 5))


def test_day_window_across_fall_back_is_25_hours():
    # Berlin falls back on Sunday 2026-10-25 (03:00 CEST -> 02:00 CET)
    start, end = window_containing(utc(2026, 10, 25, 12), "day", "Europe/Berlin")
    assert (start, end) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert end - start == dt.timedelta(hours=25)


def test_week_across_dst_is_aligned_on_local_mondays():
    w = alert_windows(alert("week"), utc(2026, 3, 11), "America/New_York")
    assert w.current == (utc(2026, 3, 9, 4), utc(2026, 3, 16, 4))        # EDT
    assert w.last_complete == (utc(2026, 3, 2, 5), utc(2026, 3, 9, 4))   # 167 hours
    assert w.before_last == (utc(2026, 2, 23, 5), utc(2026, 3, 2, 5))


def test_hours_across_fall_back_keep_the_repeated_local_hour_apart():
    # New York 2026-11-01: 01:00-02:00 local happens twice (EDT 05:00 UTC, then EST 06:00 UTC)
    hours = calendar_windows(utc(2026, 11, 1, 4), utc(2026, 11, 1, 8), "hour", "America/New_York")
    assert hours == [(utc(2026, 11, 1, h), utc(2026, 11, 1, h + 1)) for h in range(4, 8)]
    w = alert_windows(alert("hour"), utc(2026, 11, 1, 6, 30), "America/New_York")
    assert w.current == (utc(2026, 11, 1, 6), utc(2026, 11, 1, 7))
    assert w.last_complete == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 6))


def test_hours_in_a_half_hour_zone_start_at_half_past_utc():
    w = alert_windows(alert("hour"), utc(2026, 1, 5, 10, 45), "Asia/Kolkata")  # UTC+05:30
    assert w.current == (utc(2026, 1, 5, 10, 30), utc(2026, 1, 5, 11, 30))


def test_month_in_los_angeles():
    w = alert_windows(alert("month"), utc(2026, 2, 1, 3), "America/Los_Angeles")  # still Jan 31 local
    assert w.current == (utc(2026, 1, 1, 8), utc(2026, 2, 1, 8))


def test_naive_as_of_is_utc():
    assert alert_windows(alert("day"), dt.datetime(2026, 1, 7, 5), "UTC").current == (utc(2026, 1, 7), utc(2026, 1, 8))


def test_billing_period_windows_follow_the_given_periods():
    periods = [(utc(2026, 2, 15), utc(2026, 3, 15)), (utc(2026, 1, 15), utc(2026, 2, 15)),
               (utc(2025, 12, 15), utc(2026, 1, 15))]
    w = alert_windows(alert("billing_period"), utc(2026, 2, 20), "UTC", periods)
    assert w.current == (utc(2026, 2, 15), utc(2026, 3, 15))
    assert w.last_complete == (utc(2026, 1, 15), utc(2026, 2, 15))
    assert w.before_last == (utc(2025, 12, 15), utc(2026, 1, 15))


def test_billing_period_without_a_period_in_force_has_no_current_window():
    periods = [(utc(2026, 1, 1), utc(2026, 2, 1))]
    w = alert_windows(alert("billing_period"), utc(2026, 3, 1), "UTC", periods)
    assert w.current is None
    assert w.last_complete == (utc(2026, 1, 1), utc(2026, 2, 1))
    assert w.before_last is None


def test_billing_period_needs_periods():
    with pytest.raises(ValueError, match="billing periods"):
        alert_windows(alert("billing_period"), utc(2026, 3, 1), "UTC")


def test_billing_period_windows_of_many_customers_in_one_frame():
    """Each customer's own periods; a customer with one period done and none in force has one row."""
    import polars as pl

    from transforms.alerts.windows import PERIODS, billing_period_windows

    periods = pl.DataFrame([
        ("b", utc(2026, 2, 15), utc(2026, 3, 15)), ("a", utc(2026, 1, 1), utc(2026, 2, 1)),
        ("b", utc(2025, 12, 15), utc(2026, 1, 15)), ("b", utc(2026, 1, 15), utc(2026, 2, 15)),
        ("b", utc(2025, 11, 15), utc(2025, 12, 15)), ("c", utc(2026, 3, 1), utc(2026, 4, 1)),
    ], schema=PERIODS, orient="row")
    assert billing_period_windows(periods, utc(2026, 2, 20)).rows() == [
        ("a", utc(2026, 1, 1), utc(2026, 2, 1), True),
        ("b", utc(2025, 12, 15), utc(2026, 1, 15), True),
        ("b", utc(2026, 1, 15), utc(2026, 2, 15), True),
        ("b", utc(2026, 2, 15), utc(2026, 3, 15), False),
    ]  # c's first period starts after as_of


def test_hour_windows_at_lord_howes_half_hour_dst_change_are_the_usage_querys():
    # Lord Howe falls back from +11:00 to +10:30 at 02:00 local, 2026-04-04T15:00Z: the clock reads
    # 01:00 at 14:00Z, goes 01:59 -> 01:30 at 15:00Z and next reads a whole hour (02:00) at 15:30Z.
    # An hour window runs from one whole hour of the local clock to the next: [14:00, 15:30) UTC.
    for minute in (10, 50, 70, 80):  # 14:10, 14:50, 15:10, 15:20 UTC
        w = alert_windows(alert("hour"), utc(2026, 4, 4, 14) + dt.timedelta(minutes=minute), "Australia/Lord_Howe")
        assert w.current == (utc(2026, 4, 4, 14), utc(2026, 4, 4, 15, 30))
    w = alert_windows(alert("hour"), utc(2026, 4, 4, 15, 40), "Australia/Lord_Howe")
    assert w.current == (utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 16, 30))
    assert w.last_complete == (utc(2026, 4, 4, 14), utc(2026, 4, 4, 15, 30))
    assert w.before_last == (utc(2026, 4, 4, 13), utc(2026, 4, 4, 14))
    # springing forward (2026-10-03T15:30Z, 02:00 -> 02:30) the clock never reads 02:00: 01:00 to 03:00
    w = alert_windows(alert("hour"), utc(2026, 10, 3, 15, 40), "Australia/Lord_Howe")
    assert w.current == (utc(2026, 10, 3, 14, 30), utc(2026, 10, 3, 16))


@pytest.mark.parametrize("tz", ODD_ZONES)
def test_alert_windows_are_the_calendar_windows_of_the_usage_query(tz):
    """At every instant of `sample_instants` (around each offset change of 2025-2027, and random
    ones): the window in progress is the calendar window that contains as_of, and the complete
    windows before it are the calendar windows before that one."""
    instants = sample_instants(tz)
    for window in ("hour", "day", "week", "month"):
        grid = calendar_windows(FIRST - dt.timedelta(days=70), LAST, window, tz)
        starts = [s for s, _ in grid]
        for t in instants:
            i = bisect.bisect_right(starts, t) - 1
            w = alert_windows(alert(window), t, tz)
            assert (w.current, w.last_complete, w.before_last) == (grid[i], grid[i - 1], grid[i - 2]), (window, t)


def test_periods_frame_of_pricing_periods_or_of_a_frame():
    import polars as pl

    from transforms.alerts.values import periods_frame
    from transforms.pricing.periods import CustomerPeriod

    ps = [CustomerPeriod("acme", "s1", "basic", "USD", utc(2026, 1, 1), utc(2026, 2, 1), utc(2026, 2, 1), 0),
          CustomerPeriod("tokyo", "s2", "basic", "USD", dt.datetime(2026, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9))),
                         utc(2026, 1, 31, 15), utc(2026, 1, 31, 15), 0)]
    f = periods_frame(ps)
    assert f.rows() == [("acme", utc(2026, 1, 1), utc(2026, 2, 1)), ("tokyo", utc(2026, 1, 1), utc(2026, 1, 31, 15))]
    assert periods_frame(f.with_columns(pl.lit("x").alias("plan_id"))).equals(f)
