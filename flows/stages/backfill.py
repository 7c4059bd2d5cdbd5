"""The plan of `meterbill backfill --from D --to D`: which instants a past range is replayed at.

Bill at each instant where a period's invoice becomes final (period end + grace), oldest first,
and at the range's end — so invoices finalise in the order they would have, credits burn down
and late usage becomes adjustments as in production; evaluate alerts at every UTC day boundary
of the range (every hour if an alert has hour windows) and at each billing instant. The steps are
cut into segments, each ending with a bill and the alerts right after it.
"""

from __future__ import annotations

import datetime as dt

from catalog import Catalog, Lake
from flows.stages.common import UsageError, parse_instant
from flows.stages.firsts import first_event_times
from transforms.pricing import customer_periods

BILL, ALERTS = "bill", "alerts"


def backfill_range(start: str, end: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The range [start, end] (dates or ISO-8601 instants), refused unless end is after start and
    not after `now`: a backfill re-runs a past range."""
    s, e = parse_instant(start, "--from"), parse_instant(end, "--to")
    if e <= s:
        raise UsageError("--to: must be after --from")
    if e > now:
        raise UsageError(f"--to: {end} is in the future; a backfill re-runs a past range "
                         "(`meterbill run` runs as of now)")
    return s, e


def close_instants(lk: Lake, cat: Catalog, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Every period end + grace inside (start, end], and end itself, in order."""
    # the default plan starts at a customer's first event (SPEC §5.2), as billing at `end` has it
    first = first_event_times(lk, end) if cat.settings.default_plan_id else {}
    grace = dt.timedelta(hours=cat.settings.grace_period_hours)
    steps = {end}
    for cid in cat.customers:
        for p in customer_periods(cat, cid, end, first_event_time=first.get(cid)):
            t = p.end + grace
            if start < t <= end:
                steps.add(t)
    return sorted(steps)


def alert_instants(cat: Catalog, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """UTC day boundaries in [start, end] (hour boundaries if an alert has hour windows)."""
    step = dt.timedelta(hours=1) if any(a.window == "hour" for a in cat.alerts.values()) else dt.timedelta(days=1)
    if step == dt.timedelta(days=1):
        first = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc)
    else:
        first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += step
    out, t = [], first
    while t <= end:
        out.append(t)
        t += step
    return out


def plan_segments(bills: list[dt.datetime], alert_days: list[dt.datetime]) -> list[list[tuple[dt.datetime, str]]]:
    """The steps in order (at one instant: bill, then alerts), cut after each billing instant."""
    if not bills:
        return []
    steps = sorted({(t, BILL) for t in bills} | {(t, ALERTS) for t in alert_days} | {(t, ALERTS) for t in bills},
                   key=lambda s: (s[0], s[1] != BILL))
    segments, cur = [], []
    bill_set = set(bills)
    for t, what in steps:
        cur.append((t, what))
        if what == ALERTS and t in bill_set:
            segments.append(cur)
            cur = []
    if cur:
        segments.append(cur)
    return segments
