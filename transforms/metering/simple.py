"""Event-set meters (SPEC §4): sum, count, max, min, avg, latest, unique_count.

Each is one Polars aggregation over the events of a window (and group); nothing is derived from
smaller windows, so the non-additive ones are exact for any window by construction.

- `sum`, `max`, `min`, `avg`: over meter_value (events with a null value do not count for them).
- `count`: number of events (meter_value ignored).
- `avg`: exact Σ / n, rounded once to 9 fractional digits, half to even.
- `latest`: meter_value of the event with the latest event time; ties go to the later unique_id
  (a missing unique_id sorts first), then to the larger value.
- `unique_count`: number of distinct tuples of the unique_dimensions values; an event lacking
  one of those dimensions has no tuple and adds nothing (as SQL COUNT(DISTINCT) ignores nulls).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from catalog.schemas import DEC


def latest_expr() -> pl.Expr:
    return pl.col("value").sort_by(["event_time", "unique_id", "value"], nulls_last=False).last()


def unique_count_expr(unique_cols: Sequence[str]) -> pl.Expr:
    cols = list(unique_cols)
    complete = pl.all_horizontal([pl.col(c).is_not_null() for c in cols])
    return pl.struct(cols).filter(complete).n_unique().cast(DEC)


def value_expr(meter_type: str, unique_cols: Sequence[str] = ()) -> pl.Expr:
    """The aggregation of one window's (and group's) events for an event-set meter type."""
    v = pl.col("value")
    if meter_type == "sum":
        e = v.sum()
    elif meter_type == "count":
        e = pl.len().cast(DEC)
    elif meter_type == "max":
        e = v.max()
    elif meter_type == "min":
        e = v.min()
    elif meter_type == "avg":
        e = v.sum() / v.count().cast(DEC)
    elif meter_type == "latest":
        e = latest_expr()
    elif meter_type == "unique_count":
        e = unique_count_expr(unique_cols)
    else:
        raise ValueError(f"not an event-set meter type: {meter_type!r}")
    return e.cast(DEC).alias("value")


def simple_values(assigned: pl.LazyFrame, meter_type: str, group_cols: Sequence[str],
                  unique_cols: Sequence[str] = ()) -> pl.DataFrame:
    """One row per (customer_id, window_start, window_end, *group_cols) that has events."""
    keys = ["customer_id", "window_start", "window_end", *group_cols]
    return assigned.group_by(keys).agg(value_expr(meter_type, unique_cols)).collect()
