"""A brute-force, pure-Python reference of SPEC §4 meter values, for the property tests.

Deliberately naive and written from the definitions, not from the production algorithms:
every window is evaluated from scratch by scanning all events; stateful levels are evaluated at
every instant where they can change. Exact arithmetic with Fractions, one final rounding to 9
fractional digits half to even (the project's rule for quotients).

Conventions shared with the production code (documented in transforms/metering):
events at the same instant apply in the order (unique_id, missing first; then value); value
types ignore events without meter_value; unique_count ignores events lacking a unique dimension;
event_duration ignores events lacking a resource dimension; a window gets a row when its group
has events in it or (stateful) a non-zero state carried in; without group_by every window does.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

US = dt.timedelta(microseconds=1)
UNIT_US = {"hour": 3_600_000_000, "minute": 60_000_000, "second": 1_000_000, "millisecond": 1_000}
VALUE_TYPES = {"sum", "max", "min", "avg", "latest", "running_total", "high_watermark", "event_duration", "weighted_sum"}
STATEFUL = {"running_total", "high_watermark", "event_duration", "weighted_sum"}


def r9(x) -> Decimal:
    f = Fraction(x) * 10**9
    n = round(f)  # Python rounds Fractions half to even
    return Decimal(n) / Decimal(10**9)


def order_key(e):
    v = e["meter_value"]
    return (e["event_time"], e["unique_id"] is not None, e["unique_id"] or "", v is not None, v or 0)


def matches(e, flt) -> bool:
    dims = e["dimensions"] or {}
    return all(dims.get(k) in set(vs) for k, vs in (flt or {}).items())


def ref_meter_values(events: list[dict], meter, windows: list[tuple], group_by=(), flt=None, as_of=None):
    """Rows (customer_id, window_start, window_end, *group values, Decimal value), sorted."""
    typ = meter.type
    evs = [e for e in events if e["meter_api_name"] == meter.meter_api_name and matches(e, flt)]
    if typ in VALUE_TYPES:
        evs = [e for e in evs if e["meter_value"] is not None]

    def gkey(e):
        dims = e["dimensions"] or {}
        return tuple(dims.get(k) for k in group_by)

    rows = []
    for (c, s, w_end) in sorted(set(windows)):
        cev = [e for e in evs if e["customer_id"] == c]
        groups = sorted({gkey(e) for e in cev}, key=lambda g: tuple((x is not None, x or "") for x in g))
        if not group_by:
            groups = [()]
        for g in groups:
            series = sorted((e for e in cev if gkey(e) == g), key=order_key)
            has, carried, val = evaluate(typ, meter, series, s, w_end, as_of)
            if group_by and not has and carried == 0:
                continue
            rows.append((c, s, w_end, *g, val))
    return rows


def evaluate(typ, meter, series, s, e, as_of):
    """(has_events_in_window, carried_state, value) of one series over [s, e)."""
    inside = [x for x in series if s <= x["event_time"] < e]
    vals = [x["meter_value"] for x in inside]
    if typ == "sum":
        return bool(inside), 0, sum(vals, Decimal(0))
    if typ == "count":
        return bool(inside), 0, Decimal(len(inside))
    if typ == "max":
        return bool(inside), 0, max(vals) if vals else Decimal(0)
    if typ == "min":
        return bool(inside), 0, min(vals) if vals else Decimal(0)
    if typ == "avg":
        return bool(inside), 0, r9(Fraction(sum(vals, Decimal(0))) / len(vals)) if vals else Decimal(0)
    if typ == "latest":
        return bool(inside), 0, inside[-1]["meter_value"] if inside else Decimal(0)  # series is in order_key order
    if typ == "unique_count":
        tuples = set()
        for x in inside:
            d = x["dimensions"] or {}
            tup = tuple(d.get(k) for k in meter.unique_dimensions)
            if all(v is not None for v in tup):
                tuples.add(tup)
        return bool(inside), 0, Decimal(len(tuples))
    if typ == "running_total":
        return running_total(meter, series, s, e, inside)
    if typ == "high_watermark":
        return high_watermark(meter, series, s, e, inside)
    if typ == "event_duration":
        return event_duration(meter, series, s, e, as_of)
    if typ == "weighted_sum":
        return weighted_sum(series, s, e, inside)
    raise AssertionError(typ)


def level(series, t):
    return sum((x["meter_value"] for x in series if x["event_time"] <= t), Decimal(0))


def running_total(meter, series, s, e, inside):
    carried = sum((x["meter_value"] for x in series if x["event_time"] < s), Decimal(0))
    if meter.reducer == "end":
        val = sum((x["meter_value"] for x in series if x["event_time"] < e), Decimal(0))
    else:
        instants = {s} | {x["event_time"] for x in inside}
        val = max(level(series, i) for i in instants)
    return bool(inside), carried, val


def high_watermark(meter, series, s, e, inside):
    T = dt.timedelta(minutes=meter.timeout_minutes) if meter.timeout_minutes else None

    def holding(at, before_only=False):
        """The level in force at instant `at` from the events at or before it (strictly before
        with before_only): the last event's value unless its timeout has passed, else 0."""
        prior = [x for x in series if (x["event_time"] < at if before_only else x["event_time"] <= at)]
        if not prior:
            return Decimal(0)
        last = prior[-1]
        if T is not None and at >= last["event_time"] + T:
            return Decimal(0)
        return last["meter_value"]

    instants = {s} | {x["event_time"] for x in inside}
    if T is not None:
        instants |= {x["event_time"] + T for x in series if s <= x["event_time"] + T < e}
    levels = [holding(i) for i in instants] + [x["meter_value"] for x in inside]
    return bool(inside), holding(s, before_only=True), max(levels)


def event_duration(meter, series, s, e, as_of):
    by_res: dict[tuple, list] = {}
    for x in series:
        d = x["dimensions"] or {}
        r = tuple(d.get(k) for k in meter.resource_dimensions)
        if all(v is not None for v in r):
            by_res.setdefault(r, []).append(x)
    total_us = 0
    has = False
    running_at_start = 0
    for evs in by_res.values():
        if any(s <= x["event_time"] < e for x in evs):
            has = True
        state, started = False, None
        periods = []
        for x in evs:  # already in application order
            on = x["meter_value"] > 0
            if on and not state:
                state, started = True, x["event_time"]
            elif not on and state:
                periods.append((started, x["event_time"]))
                state = False
        if state:
            periods.append((started, None))  # still running
        for a, b in periods:
            hi = min(x for x in (b, e, as_of) if x is not None)  # nothing after as_of counts
            lo = max(a, s)
            if hi > lo:
                total_us += (hi - lo) // US
        # running just before s, from the events before s
        st = False
        for x in evs:
            if x["event_time"] >= s:
                break
            st = x["meter_value"] > 0  # a start keeps/sets running, a stop keeps/sets stopped
        running_at_start += st
    return has, running_at_start, r9(Fraction(total_us, UNIT_US[meter.duration_unit]))


def weighted_sum(series, s, e, inside):
    points = sorted({s, e} | {x["event_time"] for x in inside})
    area = Fraction(0)
    for a, b in zip(points, points[1:]):
        area += Fraction(level(series, a)) * ((b - a) // US)
    carried = sum((x["meter_value"] for x in series if x["event_time"] < s), Decimal(0))
    return bool(inside), carried, r9(area / ((e - s) // US))
