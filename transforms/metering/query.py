"""The usage query (SPEC §4, Amberflo's usage API): buckets × groups, gap-filled, with the
percentage change from the previous bucket and a total per group.

Decisions where the SPEC is silent (documented here and in the module's tests):

- Buckets are whole calendar windows (`calendar_windows`): the first contains `start`, the last
  ends at or after `end`. `start`/`end` that are `date`s mean midnight in `tz`; datetimes are
  instants (naive = UTC).
- `tz` is one zone for every group and bucket (UTC by default), with or without customer_id in
  group_by: the same range gives the same total however it is grouped (`meterbill usage --tz`).
- Without customer_id in group_by the customers are combined: event-set meters (sum, count,
  max, min, avg, latest, unique_count) are evaluated over the union of all customers' events
  (distinct users across customers are counted once); stateful meters are evaluated per customer
  (their level is a customer's state) and the customers' values are added up.
- Groups are the group-key combinations that have a row in some bucket (events, or a carried-in
  stateful level); each gets every bucket, 0 where it has no row. With no group_by there is one
  group and it always has every bucket.
- percent_from_previous = `transforms.shared.percent.percent_change` (the alerts' too) rounded
  once to the nearest float: (cur − prev) / prev × 100 as written (−10 → −5 is −50), 100 when
  prev = 0 < cur, −100 when prev = 0 > cur, 0 when both are 0; 0 for the first bucket.
- group_total: the sum of the buckets for the additive types (sum, count); for every other type
  the meter's exact value over the group's whole range [first bucket start, last bucket end)
  (for stateful meters without customer_id grouping: the sum over customers of that value).
- top N: the N groups with the largest group_total (ties: group keys ascending, nulls first).
- Output sorted by the group keys (nulls first) then window_start.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal

import polars as pl

from catalog.config import Meter
from catalog.meter_types import ADDITIVE_TYPES, STATEFUL_TYPES
from catalog.schemas import DEC, TS
from transforms.metering.cancel import counting
from transforms.metering.values import check_group_by, meter_rows
from transforms.shared.windows import calendar_windows, check_window, zone
from transforms.shared.percent import percent_change_float

ALL = "*"  # the pseudo-customer of combined (not customer-grouped) event-set queries


def usage_query(
    events: pl.DataFrame,
    meter: Meter,
    *,
    window: str,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    group_by: Sequence[str] = (),
    filter: Mapping[str, Sequence[str]] | None = None,
    top: int | None = None,
    tz: str = "UTC",
    as_of: dt.datetime | None = None,
) -> pl.DataFrame:
    """Columns: *group_by, window_start, window_end, value (DEC), percent_from_previous (Float64),
    group_total (DEC). group_by may hold "customer_id" and dimension keys."""
    gb, dim_keys = _check_query(window, group_by, top, tz)
    by_customer = "customer_id" in gb
    buckets = calendar_windows(start, end, window, tz)
    vals, totals, wins = _bucket_values(events, meter, buckets, by_customer, dim_keys, filter, as_of)
    grid = _gap_filled(vals, wins, buckets, gb, by_customer)
    grid = _with_group_totals(grid, totals, gb)
    if top is not None and gb:
        ranked = (grid.select(*gb, "group_total").unique()
                  .sort(["group_total", *gb], descending=[True] + [False] * len(gb), nulls_last=False)
                  .head(top))
        grid = grid.join(ranked.select(gb), on=gb, how="semi", nulls_equal=True)
    grid = _with_percent_from_previous(grid.sort([*gb, "window_start"], nulls_last=False), gb)
    return grid.select(
        *[pl.col(c).cast(pl.String) for c in gb],
        pl.col("window_start").cast(TS), pl.col("window_end").cast(TS),
        pl.col("value").cast(DEC), "percent_from_previous", pl.col("group_total").cast(DEC),
    )


def _check_query(window: str, group_by: Sequence[str], top: int | None, tz: str) -> tuple[list[str], list[str]]:
    """(the group-by keys, the dimension keys among them); ValueError for a bad argument."""
    check_window(window)
    gb = [group_by] if isinstance(group_by, str) else list(group_by)
    if len(set(gb)) != len(gb):
        raise ValueError("group_by: a key is given twice")
    dim_keys = check_group_by([k for k in gb if k != "customer_id"],
                              reserved={"window_start", "window_end", "value", "percent_from_previous",
                                        "group_total"})
    if top is not None and top < 1:
        raise ValueError("top must be at least 1")
    zone(tz)
    return gb, dim_keys


def _bucket_values(events: pl.DataFrame, meter: Meter, buckets: list, by_customer: bool, dim_keys: list[str],
                   filter, as_of) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]:
    """(the meter's value per bucket and group, the value over the whole range per group for the
    non-additive types (else None), the customers' buckets). Without customer_id grouping the
    customers are combined: one pseudo-customer, or a sum of stateful levels."""
    ev = counting(events)
    if "meter_api_name" in ev.columns:
        ev = ev.filter(pl.col("meter_api_name") == meter.meter_api_name)
    stateful = meter.type in STATEFUL_TYPES
    # customers whose windows we evaluate
    if by_customer or stateful:
        customers = sorted(c for c in ev["customer_id"].unique().to_list() if c is not None)
    else:
        customers = [ALL]
        ev = ev.with_columns(pl.lit(ALL).alias("customer_id"))
    bucket_rows = [(c, s, e) for c in customers for s, e in buckets]
    wins = pl.DataFrame(bucket_rows, schema={"customer_id": pl.String, "window_start": TS, "window_end": TS},
                        orient="row")
    span_rows = [(c, buckets[0][0], buckets[-1][1]) for c in customers] if buckets else []
    spans = pl.DataFrame(span_rows, schema={"customer_id": pl.String, "window_start": TS, "window_end": TS},
                         orient="row")

    vals = meter_rows(ev, meter, wins, group_by=dim_keys, filter=filter, as_of=as_of)
    totals = None
    if meter.type not in ADDITIVE_TYPES:
        totals = meter_rows(ev, meter, spans, group_by=dim_keys, filter=filter, as_of=as_of)
    if not by_customer:
        vals = vals.group_by(["window_start", "window_end", *dim_keys]).agg(pl.col("value").sum())
        if totals is not None:
            totals = (totals.group_by(dim_keys).agg(pl.col("value").sum()) if dim_keys
                      else totals.select(pl.col("value").sum()))
    return vals, totals, wins


def _gap_filled(vals: pl.DataFrame, wins: pl.DataFrame, buckets: list, gcols: list[str],
                by_customer: bool) -> pl.DataFrame:
    """Every group (customer_id and/or dimension keys, in the caller's order) gets every bucket, 0
    where it has no row."""
    if gcols:
        groups = vals.select(gcols).unique()
        grid = (groups.join(wins, on="customer_id", how="inner") if by_customer
                else groups.join(pl.DataFrame(buckets, schema={"window_start": TS, "window_end": TS},
                                              orient="row"), how="cross"))
    else:
        grid = pl.DataFrame(buckets, schema={"window_start": TS, "window_end": TS}, orient="row")
    on = [*gcols, "window_start", "window_end"]
    return (grid.join(vals.select(*on, "value"), on=on, how="left", nulls_equal=True)
            .with_columns(pl.col("value").fill_null(pl.lit(0, dtype=DEC))))


def _with_group_totals(grid: pl.DataFrame, totals: pl.DataFrame | None, gcols: list[str]) -> pl.DataFrame:
    """`group_total`: the sum of the buckets (additive types), else the value over the whole range."""
    if gcols:
        if totals is None:
            tot = grid.group_by(gcols).agg(pl.col("value").sum().alias("group_total"))
        else:
            tot = totals.select(*gcols, pl.col("value").alias("group_total"))
        grid = grid.join(tot, on=gcols, how="left", nulls_equal=True)
    else:
        src = grid if totals is None else totals
        grid = grid.with_columns(pl.lit(src["value"].sum() if src.height else Decimal(0), dtype=DEC)
                                 .alias("group_total"))
    return grid.with_columns(pl.col("group_total").fill_null(pl.lit(0, dtype=DEC)).cast(DEC))


def _with_percent_from_previous(grid: pl.DataFrame, gcols: list[str]) -> pl.DataFrame:
    """`percent_from_previous` of each bucket from the group's bucket before (0 for the first);
    `grid` sorted by the group keys, then window_start."""
    pct: list[float] = []
    prev_key = object()
    prev_val: Decimal | None = None
    for row in grid.select(*gcols, "value").iter_rows():
        key, cur = row[:-1], row[-1]
        if key != prev_key:
            prev_val = None
            prev_key = key
        pct.append(0.0 if prev_val is None else percent_change_float(prev_val, cur))
        prev_val = cur
    return grid.with_columns(pl.Series("percent_from_previous", pct, dtype=pl.Float64))
