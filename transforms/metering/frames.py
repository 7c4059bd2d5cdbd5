"""Shaping events and windows for the meter computations (vectorised, Polars).

- `prepare_events` keeps one meter's counting events, applies a dimension filter and pulls the
  group-by / unique / resource dimensions out of the map into plain String columns.
- `normalize_windows` validates a windows frame and splits overlapping windows into layers of
  non-overlapping ones, so each layer is matched to events with one as-of join (an event may then
  belong to several windows, exactly as the definition of a window requires).
- `assign_windows` attaches to each event every window that contains it: [start, end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from catalog.schemas import DEC, DIMS, TS
from transforms.metering.common import sort_rows


def _dims(columns: list[str]) -> pl.Expr:
    return pl.col("dimensions") if "dimensions" in columns else pl.lit(None, dtype=DIMS)


def filter_expr(filter: Mapping[str, Sequence[str]] | None, columns: list[str]) -> pl.Expr:
    """Dimension filter of SPEC §3: keys AND, values OR; an event lacking a key does not match."""
    cond = pl.lit(True)
    for key, values in (filter or {}).items():
        if isinstance(values, str):
            values = [values]
        vals = [str(v) for v in values]
        cond = cond & _dims(columns).map.get(key).is_in(vals).fill_null(False)
    return cond


def prepare_events(
    events: pl.DataFrame | pl.LazyFrame,
    meter_api_name: str | None,
    *,
    filter: Mapping[str, Sequence[str]] | None = None,
    dims: Mapping[str, str] | None = None,
    drop_null_values: bool = False,
) -> pl.LazyFrame:
    """customer_id, event_time (TS), value (DEC), unique_id, plus one String column per entry of
    `dims` (output name -> dimension key). `meter_api_name=None` keeps every meter."""
    lf = events.lazy()
    cols = lf.collect_schema().names()
    for required in ("customer_id", "event_time"):
        if required not in cols:
            raise ValueError(f"events: missing column {required!r}")
    if meter_api_name is not None and "meter_api_name" in cols:
        lf = lf.filter(pl.col("meter_api_name") == meter_api_name)
    if filter:
        lf = lf.filter(filter_expr(filter, cols))
    value = pl.col("meter_value").cast(DEC) if "meter_value" in cols else pl.lit(None, dtype=DEC)
    uid = pl.col("unique_id").cast(pl.String) if "unique_id" in cols else pl.lit(None, dtype=pl.String)
    exprs = [
        pl.col("customer_id").cast(pl.String),
        pl.col("event_time").cast(TS),
        value.alias("value"),
        uid.alias("unique_id"),
    ]
    for name, key in (dims or {}).items():
        exprs.append(_dims(cols).map.get(key).alias(name))
    lf = lf.select(exprs)
    if drop_null_values:
        lf = lf.filter(pl.col("value").is_not_null())
    return lf


def normalize_windows(windows: pl.DataFrame, key_cols: Sequence[str] = ()) -> pl.DataFrame:
    """Distinct windows, typed and sorted, with a `__layer` column (0 unless windows overlap)."""
    for c in ("customer_id", "window_start", "window_end"):
        if c not in windows.columns:
            raise ValueError(f"windows: missing column {c!r}")
    w = windows.select(
        pl.col("customer_id").cast(pl.String),
        *[pl.col(k) for k in key_cols],
        pl.col("window_start").cast(TS),
        pl.col("window_end").cast(TS),
    ).unique()
    nulls = w.filter(pl.any_horizontal(pl.col("customer_id", "window_start", "window_end").is_null()))
    if nulls.height:
        raise ValueError("windows: customer_id, window_start and window_end must not be null")
    bad = w.filter(pl.col("window_end") <= pl.col("window_start"))
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(f"windows: window_end must be after window_start "
                         f"({r['customer_id']}: {r['window_start']} .. {r['window_end']})")
    part = ["customer_id", *key_cols]
    w = sort_rows(w, [*part, "window_start", "window_end"])
    # sorted by start, windows overlap somewhere iff some window overlaps the one just before it
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in part])
    overl = w.select((same & (pl.col("window_start") < pl.col("window_end").shift(1))).fill_null(False).any()).item()
    if not overl:
        return w.with_columns(pl.lit(0, dtype=pl.Int32).alias("__layer"))
    # greedy interval partitioning: each window goes to the first layer that is free at its start
    layers: list[int] = []
    last_key = None
    ends: list = []
    for row in w.select([*part, "window_start", "window_end"]).iter_rows():
        key, s, e = row[:-2], row[-2], row[-1]
        if key != last_key:
            ends, last_key = [], key
        for i, le in enumerate(ends):
            if le <= s:
                ends[i] = e
                layers.append(i)
                break
        else:
            ends.append(e)
            layers.append(len(ends) - 1)
    return w.with_columns(pl.Series("__layer", layers, dtype=pl.Int32))


def assign_windows(ev: pl.LazyFrame, w: pl.DataFrame, by: Sequence[str] = ("customer_id",)) -> pl.LazyFrame:
    """Each event joined to every window (of its `by` key) that contains its event_time."""
    by = list(by)
    ev = ev.sort("event_time")
    parts = []
    n_layers = int(w["__layer"].max()) + 1 if w.height else 0
    for layer in range(n_layers):
        wl = w.filter(pl.col("__layer") == layer).select([*by, "window_start", "window_end"]).sort("window_start")
        j = ev.join_asof(
            wl.lazy(), left_on="event_time", right_on="window_start", by=by,
            strategy="backward", check_sortedness=False,
        ).filter(pl.col("window_end").is_not_null() & (pl.col("event_time") < pl.col("window_end")))
        parts.append(j)
    if not parts:
        schema = ev.collect_schema()
        return pl.DataFrame(schema={**schema, "window_start": TS, "window_end": TS}).lazy()
    return pl.concat(parts) if len(parts) > 1 else parts[0]
