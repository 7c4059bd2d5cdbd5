"""Alert windows (SPEC §6): calendar windows aligned in the customer's time zone, or billing periods.

Windows are half-open `[start, end)` UTC instants. `hour`, `day`, `week` (starting Monday) and
`month` are aligned on the customer's local clock (IANA zone), so a local day is 23 or 25 hours long
on a DST change and a local hour in Asia/Kolkata starts at :30 UTC. `billing_period` windows are
the customer's billing periods, given by the caller (they follow the subscription, §5.2).

This is a small self-contained helper so the alerts transform does not depend on the metering
package; it follows the same alignment rules as the usage query (§4).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional
from zoneinfo import ZoneInfo

from catalog.config import Alert

UTC = dt.timezone.utc
Window = tuple[dt.datetime, dt.datetime]
CALENDAR_WINDOWS = ("hour", "day", "week", "month")


@dataclass(frozen=True)
class AlertWindows:
    """The windows an alert looks at, at one instant `as_of`.

    current        the window in progress at as_of (None for billing_period when no period is in force)
    last_complete  the latest window that ended at or before as_of (None if there is none)
    before_last    the complete window before last_complete (None if there is none)
    """

    current: Optional[Window]
    last_complete: Optional[Window]
    before_last: Optional[Window]

    def all(self) -> list[Window]:
        """The windows that exist, oldest first."""
        return [w for w in (self.before_last, self.last_complete, self.current) if w is not None]


def _aware(t: dt.datetime) -> dt.datetime:
    """A naive instant is UTC (SPEC conventions); an aware one is converted to UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _local_midnight(d: dt.date, zone: ZoneInfo) -> dt.datetime:
    """The first instant of local date `d` in UTC.

    Where midnight does not exist (a DST jump at 00:00, e.g. America/Santiago), zoneinfo reads
    the wall time with the offset before the jump, which is exactly the first instant of the day.
    """
    return dt.datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)


def window_start(t: dt.datetime, window: str, tz: str = "UTC") -> dt.datetime:
    """Start (UTC) of the hour|day|week|month window of zone `tz` that contains instant `t`."""
    if window not in CALENDAR_WINDOWS:
        raise ValueError(f"window must be one of {', '.join(CALENDAR_WINDOWS)}, got {window!r}")
    zone = ZoneInfo(tz)
    local = _aware(t).astimezone(zone)
    if window == "hour":
        # replace() keeps `fold`, so the repeated hour of a DST fall-back stays the right one
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    d = local.date()
    if window == "week":
        d -= dt.timedelta(days=d.weekday())  # Monday
    elif window == "month":
        d = d.replace(day=1)
    return _local_midnight(d, zone)


def window_after(start: dt.datetime, window: str, tz: str = "UTC") -> dt.datetime:
    """End (UTC) of the window that starts at `start` (= start of the next window)."""
    zone = ZoneInfo(tz)
    start = _aware(start)
    if window == "hour":
        nxt = window_start(start + dt.timedelta(hours=1), "hour", tz)
        # a zone whose offset moves by less than an hour can put a boundary inside the hour
        return nxt if nxt > start else start + dt.timedelta(hours=1)
    d = start.astimezone(zone).date()
    if window == "day":
        d += dt.timedelta(days=1)
    elif window == "week":
        d += dt.timedelta(days=7)
    elif window == "month":
        d = dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    else:
        raise ValueError(f"window must be one of {', '.join(CALENDAR_WINDOWS)}, got {window!r}")
    return _local_midnight(d, zone)


def window_containing(t: dt.datetime, window: str, tz: str = "UTC") -> Window:
    """The `[start, end)` window of zone `tz` that contains instant `t`."""
    start = window_start(t, window, tz)
    return start, window_after(start, window, tz)


def calendar_windows(start: dt.datetime, end: dt.datetime, window: str, tz: str = "UTC") -> list[Window]:
    """Every window of zone `tz` that overlaps `[start, end)`, in order."""
    out: list[Window] = []
    s = window_start(start, window, tz)
    end = _aware(end)
    while s < end:
        e = window_after(s, window, tz)
        out.append((s, e))
        s = e
    return out


def alert_windows(
    alert: Alert,
    as_of: dt.datetime,
    tz: str,
    billing_periods: list[tuple[dt.datetime, dt.datetime]] | None = None,
) -> AlertWindows:
    """The window in progress at `as_of` and the two complete windows before it.

    For hour|day|week|month the windows are aligned in `tz` (the customer's zone; weeks start on
    Monday). For `billing_period` they are taken from `billing_periods` (the customer's periods,
    `[start, end)` in any order): `current` is the period containing as_of (None if none is in
    force), `last_complete` the latest period with end ≤ as_of and `before_last` the period before
    it (periods need not be contiguous: a subscription gap is skipped).
    """
    as_of = _aware(as_of)
    if alert.window == "billing_period":
        if billing_periods is None:
            raise ValueError(
                f"alert {alert.alert_id}: window billing_period needs the customer's billing periods"
            )
        periods = sorted((_aware(s), _aware(e)) for s, e in billing_periods)
        current = next((p for p in periods if p[0] <= as_of < p[1]), None)
        done = [p for p in periods if p[1] <= as_of]
        return AlertWindows(
            current=current,
            last_complete=done[-1] if done else None,
            before_last=done[-2] if len(done) > 1 else None,
        )
    current = window_containing(as_of, alert.window, tz)
    last = window_containing(current[0] - dt.timedelta(microseconds=1), alert.window, tz)
    before = window_containing(last[0] - dt.timedelta(microseconds=1), alert.window, tz)
    return AlertWindows(current=current, last_complete=last, before_last=before)
