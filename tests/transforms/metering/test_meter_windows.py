"""Calendar windows: aligned in the customer's IANA zone, DST-correct, weeks from Monday."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.transforms.metering.support import t
from transforms.metering import calendar_windows, window_containing


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
