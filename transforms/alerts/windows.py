"""Alert windows (SPEC §6): the calendar windows of the usage query in the customer's time zone, or
billing periods.

Windows are half-open `[start, end)` UTC instants. `hour`, `day`, `week` (starting Monday) and
`month` are `transforms.shared.windows` calendar windows of the customer's zone (its rules: a local
day is 23 or 25 hours long on a DST change, a local hour in Asia/Kolkata starts at :30 UTC).
`billing_period` windows are the customer's billing periods, given by the caller (they follow
the subscription, §5.2).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

import polars as pl

from catalog.config import Alert
from catalog.schemas import TS
from transforms.shared.windows import to_instant, window_containing

Window = tuple[dt.datetime, dt.datetime]
PERIODS = {"customer_id": pl.String, "start": TS, "end": TS}
WINDOW_FRAME = {"customer_id": pl.String, "window_start": TS, "window_end": TS, "complete": pl.Boolean}


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


def alert_windows(
    alert: Alert,
    as_of: dt.datetime,
    tz: str,
    billing_periods: list[tuple[dt.datetime, dt.datetime]] | None = None,
) -> AlertWindows:
    """The window in progress at `as_of` and the two complete windows before it.

    For hour|day|week|month the windows are the calendar windows of `tz` (the customer's zone;
    weeks start on Monday). For `billing_period` they are taken from `billing_periods` (the
    customer's periods, `[start, end)` in any order): `current` is the period containing as_of
    (None if none is in force), `last_complete` the latest period with end ≤ as_of and
    `before_last` the period before it (periods need not be contiguous: a subscription gap is
    skipped); the rule of `billing_period_windows`, for one customer.
    """
    as_of = to_instant(as_of)
    if alert.window == "billing_period":
        if billing_periods is None:
            raise ValueError(
                f"alert {alert.alert_id}: window billing_period needs the customer's billing periods"
            )
        periods = [(to_instant(s), to_instant(e)) for s, e in billing_periods]
        frame = pl.DataFrame({"customer_id": [""] * len(periods), "start": [p[0] for p in periods],
                              "end": [p[1] for p in periods]}, schema=PERIODS)
        w = billing_period_windows(frame, as_of)
        done = [(s, e) for _, s, e, complete in w.iter_rows() if complete]
        return AlertWindows(
            current=next(((s, e) for _, s, e, complete in w.iter_rows() if not complete), None),
            last_complete=done[-1] if done else None,
            before_last=done[-2] if len(done) > 1 else None,
        )
    current = window_containing(as_of, alert.window, tz)
    last = window_containing(current[0] - dt.timedelta(microseconds=1), alert.window, tz)
    before = window_containing(last[0] - dt.timedelta(microseconds=1), alert.window, tz)
    return AlertWindows(current=current, last_complete=last, before_last=before)


def billing_period_windows(periods: pl.DataFrame, as_of: dt.datetime) -> pl.DataFrame:
    """Every customer's billing_period windows at `as_of` from a frame of its periods (columns
    `PERIODS`, in any order): the complete window before the last, the last complete one (the latest
    period with end <= as_of, in (start, end) order) and the one in progress (the first containing
    as_of), as rows of `WINDOW_FRAME` in that order per customer; a customer without a period in
    force has no window in progress."""
    as_of = to_instant(as_of)
    p = periods.select(list(PERIODS)).cast(PERIODS).sort("customer_id", "start", "end")
    done = (p.filter(pl.col("end") <= as_of).group_by("customer_id", maintain_order=True).tail(2)
            .with_columns(pl.lit(True).alias("complete")))
    current = (p.filter((pl.col("start") <= as_of) & (pl.col("end") > as_of))
               .group_by("customer_id", maintain_order=True).head(1).with_columns(pl.lit(False).alias("complete")))
    return (pl.concat([done, current]).sort("customer_id", "complete", descending=[False, True], maintain_order=True)
            .select("customer_id", pl.col("start").alias("window_start"), pl.col("end").alias("window_end"),
                    "complete"))
