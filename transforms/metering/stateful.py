"""Stateful meters (SPEC §4): running_total, high_watermark, event_duration, weighted_sum.

Their value over a window depends on every earlier event of the series (the customer's events of
the meter, after the filter, in one group-by combination), so they are evaluated per series in
exact integer microseconds and Python Decimals (under a context that traps any rounding); only
the final quotient (weighted_sum, durations) is rounded, once, to 9 fractional digits half-even.

Time model. Events at the same instant are applied together, in the order (unique_id, a missing
one first; then meter_value). For a series the state is a step function of time that changes at
event instants and is right-continuous: the state *at* instant t already includes the events at t.

- running_total: level L(t) = Σ values of events at or before t (since the beginning of history).
  reducer end → L just before the window end (events < end); reducer max → the highest level at
  any instant of [start, end): the level at start, and after each instant with events inside.
- high_watermark: each event sets the level to its value at its instant (so every event value in
  the window is a level reached during it); the level of the last event of an instant holds until
  the next instant with events or until timeout_minutes pass, then it is 0; before the first event
  it is 0. Window value = max level over [start, end) — including the level carried in at start
  and a 0 when a timeout (or the time before the first event) falls inside the window.
- event_duration: per resource (tuple of resource_dimensions; events lacking one are ignored),
  value > 0 starts it (a start while running is ignored), value <= 0 stops it (a stop while stopped
  is ignored). Running intervals [start, stop), a still-open one without end. Window value =
  Σ over resources of |interval ∩ [start, min(end, as_of))| in duration_unit: a still-open
  resource runs to min(window end, as_of), and time after as_of never counts (without as_of,
  windows are counted to their end).
- weighted_sum: level L(t) as for running_total (values are deltas);
  window value = ∫_start^end L(t) dt / (end − start).

A window gets a row when the series has events in it or a non-zero state carried in from the
events before its start (level ≠ 0, a running resource).
"""

from __future__ import annotations

import decimal
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Iterator

import polars as pl

from catalog.config import Meter
from catalog.schemas import DEC, TS
from transforms.metering.common import EXACT, US_PER_UNIT, ZERO, dec_series, div9, sort_rows, ts_from_us

Windows = list[tuple[int, int]]  # (start_us, end_us), sorted


def _us(t: datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:
        from datetime import timezone
        t = t.replace(tzinfo=timezone.utc)
    return int(pl.Series([t]).cast(TS).dt.epoch("us")[0])


# ---------------------------------------------------------------- per-series evaluators
# Each takes one series' events (times ascending, in application order) and its windows, and
# yields (start_us, end_us, value) for the windows that get a row.


def _instants(ts: list[int], vs: list[Decimal]) -> tuple[list[int], list[Decimal]]:
    """Distinct instants and the cumulative level after all events of each."""
    u: list[int] = []
    lv: list[Decimal] = []
    level = ZERO
    for t, v in zip(ts, vs):
        level += v
        if u and u[-1] == t:
            lv[-1] = level
        else:
            u.append(t)
            lv.append(level)
    return u, lv


def running_total(ts, vs, windows: Windows, reducer: str = "end") -> Iterator[tuple[int, int, Decimal]]:
    u, lv = _instants(ts, vs)
    for s, e in windows:
        i0, i1 = bisect_left(u, s), bisect_left(u, e)
        carried = lv[i0 - 1] if i0 > 0 else ZERO
        if i1 == i0 and carried == 0:
            continue
        if reducer == "end":
            val = lv[i1 - 1] if i1 > 0 else ZERO
        else:
            cands = lv[i0:i1]
            if not (i0 < i1 and u[i0] == s):  # no event at `start`: the carried level is a level of the window
                cands = [*cands, carried]
            val = max(cands)
        yield s, e, val


def high_watermark(ts, vs, windows: Windows, timeout_us: int | None) -> Iterator[tuple[int, int, Decimal]]:
    u: list[int] = []
    hold: list[Decimal] = []  # level holding after the instant (its last event)
    top: list[Decimal] = []   # highest value set at the instant
    for t, v in zip(ts, vs):
        if u and u[-1] == t:
            hold[-1] = v
            if v > top[-1]:
                top[-1] = v
        else:
            u.append(t)
            hold.append(v)
            top.append(v)
    n = len(u)
    INF = None
    for s, e in windows:
        i0, i1 = bisect_left(u, s), bisect_left(u, e)
        k = i0 - 1
        carried = hold[k] if k >= 0 and (timeout_us is None or s < u[k] + timeout_us) else ZERO
        if i1 == i0 and carried == 0:
            continue
        cands = top[i0:i1]
        for k in range(i0 - 1, i1):
            if k < 0:  # before the first event the level is 0
                if n == 0 or s < u[0]:
                    cands.append(ZERO)
                continue
            nxt = u[k + 1] if k + 1 < n else INF
            if timeout_us is None:
                hold_end, gap = nxt, None
            else:
                dead = u[k] + timeout_us
                hold_end = dead if nxt is None or dead < nxt else nxt
                gap = (dead, nxt) if nxt is None or dead < nxt else None
            if max(u[k], s) < (e if hold_end is None else min(hold_end, e)):
                cands.append(hold[k])
            if gap is not None and max(gap[0], s) < (e if gap[1] is None else min(gap[1], e)):
                cands.append(ZERO)
        yield s, e, max(cands)


def weighted_sum(ts, vs, windows: Windows) -> Iterator[tuple[int, int, Decimal]]:
    u, lv = _instants(ts, vs)
    cum: list[Decimal] = []  # ∫ from u[0] to u[k] of the level
    acc = ZERO
    for k in range(len(u)):
        if k:
            acc += lv[k - 1] * (u[k] - u[k - 1])
        cum.append(acc)

    def integral_to(x: int) -> Decimal:
        k = bisect_right(u, x) - 1
        if k < 0:
            return ZERO
        return cum[k] + lv[k] * (x - u[k])

    for s, e in windows:
        i0, i1 = bisect_left(u, s), bisect_left(u, e)
        carried = lv[i0 - 1] if i0 > 0 else ZERO
        if i1 == i0 and carried == 0:
            continue
        yield s, e, div9(integral_to(e) - integral_to(s), e - s)


def resource_intervals(ts, vs) -> list[tuple[int, int | None]]:
    """[start, stop) running intervals of one resource; stop None = still running."""
    out: list[tuple[int, int | None]] = []
    start = None
    for t, v in zip(ts, vs):
        if v > 0:
            if start is None:
                start = t
        elif start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, None))
    return out


def event_duration(intervals: list[tuple[int, int | None]], event_times: list[int], windows: Windows,
                   as_of_us: int | None, unit_us: int) -> Iterator[tuple[int, int, Decimal]]:
    """Total running time of a group's resources inside each window, in the duration unit.

    Only the observed part of a window counts: [start, min(end, as_of)) — so a still-open resource
    runs to min(end, as_of), and nothing after as_of is counted even when a later stop is known.
    G(x) = Σ_i |[a_i, b_i) ∩ (−∞, x)| = Σ_{a_i<x} (x − a_i) − Σ_{b_i<x} (x − b_i) (open
    intervals only in the first sum), from prefix sums over sorted starts and stops: O(log n)."""
    A = sorted(a for a, _ in intervals)
    B = sorted(b for _, b in intervals if b is not None)
    pa, pb = [0], [0]
    for a in A:
        pa.append(pa[-1] + a)
    for b in B:
        pb.append(pb[-1] + b)

    def G(x: int) -> int:
        ia, ib = bisect_left(A, x), bisect_left(B, x)
        return (ia * x - pa[ia]) - (ib * x - pb[ib])

    event_times = sorted(event_times)
    for s, e in windows:
        has_events = bisect_left(event_times, e) > bisect_left(event_times, s)
        running = bisect_left(A, s) - bisect_left(B, s)  # started before s, not stopped before s
        if not has_events and running <= 0:
            continue
        hi = e if as_of_us is None else min(e, as_of_us)
        yield s, e, div9(G(hi) - G(s) if hi > s else 0, unit_us)


# ---------------------------------------------------------------- driver


def stateful_values(
    ev: pl.DataFrame,
    meter: Meter,
    windows: pl.DataFrame,
    group_cols: Sequence[str],
    *,
    resource_cols: Sequence[str] = (),
    window_keys: Sequence[str] = (),
    as_of: datetime | None = None,
) -> pl.DataFrame:
    """Rows (customer_id, window_start, window_end, *group_cols, value) of a stateful meter.

    `ev`: customer_id, event_time, value (non-null), unique_id, the group and resource columns.
    `windows`: normalized windows with customer_id and the `window_keys` (a subset of group_cols:
    windows per series instead of per customer)."""
    group_cols, window_keys, resource_cols = list(group_cols), list(window_keys), list(resource_cols)
    wkey = ["customer_id", *window_keys]
    out_schema = {"customer_id": pl.String, "window_start": TS, "window_end": TS,
                  **{c: pl.String for c in group_cols}, "value": DEC}
    if ev.height == 0 or windows.height == 0:
        return pl.DataFrame(schema=out_schema)
    limits = windows.group_by(wkey).agg(pl.col("window_end").max().alias("__lim"))
    ev = ev.join(limits, on=wkey, how="inner").filter(pl.col("event_time") < pl.col("__lim"))
    ev = sort_rows(ev, ["customer_id", *group_cols, *resource_cols, "event_time", "unique_id", "value"],
                   nulls_last=False)
    if ev.height == 0:
        return pl.DataFrame(schema=out_schema)
    rows = _series_rows(ev, meter, _window_lists(windows, wkey), group_cols, resource_cols, window_keys, as_of)
    cols = [pl.Series("customer_id", rows[0], dtype=pl.String), ts_from_us("window_start", rows[1]),
            ts_from_us("window_end", rows[2])]
    cols += [pl.Series(c, rows[3][gi], dtype=pl.String) for gi, c in enumerate(group_cols)]
    cols.append(dec_series("value", rows[4]))
    return pl.DataFrame(cols)


def _window_lists(windows: pl.DataFrame, wkey: list[str]) -> dict[tuple, Windows]:
    """(customer_id, *window keys) -> that series' windows as sorted (start_us, end_us)."""
    wk = sort_rows(windows.select(*wkey, pl.col("window_start").dt.epoch("us").alias("s"),
                                  pl.col("window_end").dt.epoch("us").alias("e")), [*wkey, "s", "e"])
    wdict: dict[tuple, Windows] = {}
    wcols = [wk[c].to_list() for c in wkey]
    for key, s_, e_ in zip(zip(*wcols), wk["s"].to_list(), wk["e"].to_list()):
        lst = wdict.get(key)
        if lst is None:
            wdict[key] = lst = []
        lst.append((s_, e_))
    return wdict


def _run_starts(ev: pl.DataFrame, keys: list[str]) -> list[int]:
    """Row numbers where a new run of equal `keys` begins (null equals null), plus the end."""
    changed = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in keys])
    idx = ev.select(changed.fill_null(True).arg_true().alias("i"))["i"]
    return [*idx.to_list(), ev.height]


def _series_rows(ev: pl.DataFrame, meter: Meter, wdict: dict[tuple, Windows], group_cols: list[str],
                 resource_cols: list[str], window_keys: list[str], as_of: datetime | None):
    """The output columns (customers, starts, ends, group values per group column, values) of every
    series of the sorted events `ev`, each series evaluated over its windows."""
    series_starts = _run_starts(ev, ["customer_id", *group_cols])
    res_starts = _run_starts(ev, ["customer_id", *group_cols, *resource_cols]) if resource_cols else []
    cust = ev["customer_id"].to_list()
    groups = [ev[c].to_list() for c in group_cols]
    res = [ev[c].to_list() for c in resource_cols]
    ts = ev["event_time"].dt.epoch("us").to_list()
    vs = ev["value"].to_list()
    gpos = [group_cols.index(k) for k in window_keys]
    t_ = meter.type
    timeout_us = meter.timeout_minutes * 60_000_000 if meter.timeout_minutes else None
    as_of_us = _us(as_of)
    unit_us = US_PER_UNIT[meter.duration_unit]
    o_c: list[str] = []
    o_s: list[int] = []
    o_e: list[int] = []
    o_g: list[list] = [[] for _ in group_cols]
    o_v: list[Decimal] = []
    ri = 0  # cursor in res_starts
    with decimal.localcontext(EXACT):
        for i, j in zip(series_starts, series_starts[1:]):
            key = (cust[i], *(g[i] for g in groups))
            wins = wdict.get((key[0], *(key[1 + p] for p in gpos)))
            if t_ == "event_duration":
                intervals: list[tuple[int, int | None]] = []
                times: list[int] = []
                while res_starts[ri] < j:
                    r0, r1 = res_starts[ri], res_starts[ri + 1]
                    ri += 1
                    if wins and all(r[r0] is not None for r in res):
                        intervals.extend(resource_intervals(ts[r0:r1], vs[r0:r1]))
                        times.extend(ts[r0:r1])
                if not wins:
                    continue
                rows = event_duration(intervals, times, wins, as_of_us, unit_us)
            elif not wins:
                continue
            else:
                rows = _level_rows(t_, ts[i:j], vs[i:j], wins, meter.reducer, timeout_us)
            for s_, e_, v in rows:
                o_c.append(key[0])
                o_s.append(s_)
                o_e.append(e_)
                for gi in range(len(group_cols)):
                    o_g[gi].append(key[1 + gi])
                o_v.append(v)
    return o_c, o_s, o_e, o_g, o_v


def _level_rows(t_: str, ts, vs, wins: Windows, reducer: str, timeout_us: int | None):
    """The rows of one series of a level meter (running_total, high_watermark, weighted_sum)."""
    if t_ == "running_total":
        return running_total(ts, vs, wins, reducer)
    if t_ == "high_watermark":
        return high_watermark(ts, vs, wins, timeout_us)
    if t_ == "weighted_sum":
        return weighted_sum(ts, vs, wins)
    raise ValueError(f"not a stateful meter type: {t_!r}")
