"""usage_hourly: one row per customer × meter × dimension combination × UTC hour with events.

`value` is the meter's own value over exactly that hour and combination (the meter_values
definition applied to the combination's events; for stateful meters, with the combination's whole
history before the hour). The partial aggregates next to it (event_count, value_sum, value_min,
value_max) are plain aggregates of meter_value over the hour's events, from which the value of a
mergeable meter (sum, count, min, max: `catalog.meter_types`) over any whole hours follows; the
other meters must be recomputed from events for other windows.

Events of meters not in the catalogue are aggregated as `sum`.

Incremental rebuilds. A row depends only on the events of its own hour and combination, except
for stateful meters, whose value also depends on every earlier event of the combination. So the
UTC dates to rebuild after new events arrive are the dates of those events plus, for stateful
meters, every later date on which the same customer has events of the meter:
`hourly_rebuild_dates` computes exactly that, and `hourly_usage(events, meters, hours=dates)`
(with all events, or at least those dates plus the stateful meters' history) returns exactly the
rows a full rebuild has on those dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import polars as pl

from catalog.config import Meter
from catalog.meter_types import STATEFUL_TYPES, UNKNOWN_METER_TYPE, VALUELESS_TYPES
from catalog.schemas import DEC, DIMS, SCHEMAS, TS, dims_key_expr
from transforms.metering.cancel import counting
from transforms.metering.common import sort_rows
from transforms.metering.frames import normalize_windows
from transforms.metering.simple import latest_expr
from transforms.metering.stateful import stateful_values

HOURLY_SCHEMA = SCHEMAS["usage_hourly"]


def _canonical_dims() -> pl.Expr:
    """The dimension map with its entries sorted by key (same combination → same bytes)."""
    return pl.col("dimensions").map.entries().list.sort().cast(DIMS).fill_null(pl.lit({}, dtype=DIMS))


def _base(events: pl.DataFrame | pl.LazyFrame, meters: Mapping[str, Meter]) -> pl.LazyFrame:
    lf = events.lazy()
    cols = lf.collect_schema().names()
    types = pl.DataFrame(
        {"meter_api_name": list(meters), "__type": [m.type for m in meters.values()]},
        schema={"meter_api_name": pl.String, "__type": pl.String},
    )
    dims = pl.col("dimensions") if "dimensions" in cols else pl.lit(None, dtype=DIMS)
    lf = lf.select(
        pl.col("customer_id").cast(pl.String),
        pl.col("meter_api_name").cast(pl.String),
        (pl.col("meter_value").cast(DEC) if "meter_value" in cols else pl.lit(None, dtype=DEC)).alias("value"),
        pl.col("event_time").cast(TS),
        (pl.col("unique_id").cast(pl.String) if "unique_id" in cols else pl.lit(None, dtype=pl.String)).alias("unique_id"),
        dims.alias("dimensions"),
    )
    lf = (lf.join(types.lazy(), on="meter_api_name", how="left")
          .with_columns(pl.col("__type").fill_null(UNKNOWN_METER_TYPE))
          .filter(pl.col("__type").is_in(sorted(VALUELESS_TYPES)) | pl.col("value").is_not_null())
          .with_columns(dims_key_expr().alias("dims_key"),
                        pl.col("event_time").dt.truncate("1h").alias("hour"))
          .with_columns(pl.col("hour").dt.date().alias("hour_date")))
    return lf


def _restrict(lf: pl.LazyFrame, hours: pl.DataFrame | None) -> pl.LazyFrame:
    if hours is None:
        return lf
    on = ["customer_id", "hour_date"] if "customer_id" in hours.columns else ["hour_date"]
    sel = [pl.col("customer_id").cast(pl.String)] if "customer_id" in on else []
    h = hours.select([*sel, pl.col("hour_date").cast(pl.Date)]).unique()
    return lf.join(h.lazy(), on=on, how="semi")


def _normalize_hours(hours) -> pl.DataFrame | None:
    if hours is None:
        return None
    if not isinstance(hours, pl.DataFrame):  # a list of dates
        hours = pl.DataFrame({"hour_date": list(hours)}, schema={"hour_date": pl.Date})
    if "hour_date" not in hours.columns:
        if "hour" in hours.columns:
            hours = hours.with_columns(pl.col("hour").cast(TS).dt.date().alias("hour_date"))
        else:
            raise ValueError("hours: needs an hour_date column (and optionally customer_id)")
    keep = [c for c in ("customer_id", "hour_date") if c in hours.columns]
    return hours.select(keep).with_columns(pl.col("hour_date").cast(pl.Date))


def hourly_usage(events: pl.DataFrame, meters: Mapping[str, Meter], hours: pl.DataFrame | None = None,
                 *, as_of: dt.datetime | None = None) -> pl.DataFrame:
    """Events -> usage_hourly rows (exactly the catalog `usage_hourly` schema), sorted by
    customer_id, meter_api_name, dims_key, hour.

    hours: optional frame of `hour_date` (Date) and optionally `customer_id`: only rows of those
    UTC dates (of those customers) are returned — exactly the rows a full rebuild has there.
    as_of: for event_duration meters, a still-open resource runs to min(hour end, as_of)
    (default: to the hour end).
    """
    hours = _normalize_hours(hours)
    base = _base(counting(events), meters)
    uc = {n: m.unique_dimensions for n, m in meters.items() if m.type == "unique_count"}
    ok = pl.lit(None, dtype=pl.Boolean)
    for name, keys in uc.items():
        present = pl.all_horizontal([pl.col("dimensions").map.get(k).is_not_null() for k in keys])
        ok = pl.when(pl.col("meter_api_name") == name).then(present).otherwise(ok)
    v, t = pl.col("value"), pl.col("__type").first()
    cells = _restrict(base, hours).with_columns(ok.alias("__uc_ok"))
    # The Map column stays out of the group_by and the sort (both are very slow with it in
    # Polars 2.1): each output row gets its combination's canonical map at the end, by index.
    combos = (cells.select("dims_key", "dimensions").unique("dims_key").collect()
              .with_columns(_canonical_dims()).with_row_index("__di"))
    agg = (cells.group_by(["customer_id", "meter_api_name", "dims_key", "hour"])
           .agg(
               pl.col("hour_date").first(),
               t.alias("__type"),
               pl.len().cast(pl.Int64).alias("event_count"),
               pl.when(v.count() > 0).then(v.sum()).alias("value_sum"),
               v.min().alias("value_min"),
               v.max().alias("value_max"),
               pl.when(v.count() > 0).then(v.sum() / v.count().clip(lower_bound=1).cast(DEC)).alias("__avg"),  # when() evaluates both sides
               latest_expr().alias("__latest"),
               # one combination: the unique tuple is the same for all its events → 1 or 0
               pl.col("__uc_ok").first().cast(pl.Int64).cast(DEC).alias("__uc"),
           )
           .collect())
    agg = _with_stateful_values(agg.with_columns(_event_set_value().alias("value")), base, meters, as_of)
    agg = (sort_rows(agg, ["customer_id", "meter_api_name", "dims_key", "hour"])
           .join(combos.select("dims_key", "__di"), on="dims_key", how="left", maintain_order="left"))
    agg = agg.with_columns(combos["dimensions"].rechunk().gather(agg["__di"]).alias("dimensions"))
    return agg.select([pl.col(c).cast(dtype) for c, dtype in HOURLY_SCHEMA.items()])


def _event_set_value() -> pl.Expr:
    """An hour's value of an event-set meter from the hour's aggregates (stateful ones: null)."""
    ty = pl.col("__type")
    value = (pl.when(ty == "sum").then(pl.col("value_sum").fill_null(pl.lit(0, dtype=DEC)))
             .when(ty == "count").then(pl.col("event_count").cast(DEC))
             .when(ty == "max").then(pl.col("value_max"))
             .when(ty == "min").then(pl.col("value_min"))
             .when(ty == "avg").then(pl.col("__avg"))
             .when(ty == "latest").then(pl.col("__latest"))
             .when(ty == "unique_count").then(pl.col("__uc").fill_null(pl.lit(0, dtype=DEC)))
             .otherwise(pl.lit(None, dtype=DEC)))
    return value.cast(DEC)


def _with_stateful_values(agg: pl.DataFrame, base: pl.LazyFrame, meters: Mapping[str, Meter], as_of) -> pl.DataFrame:
    """The hours of stateful meters get the meter's value with the combination's history (0 when
    nothing is carried)."""
    stateful = [m for m in meters.values() if m.type in STATEFUL_TYPES]
    if not (stateful and agg.height):
        return agg
    parts = [_stateful_hourly(base, agg, m, as_of) for m in stateful]
    parts = [p for p in parts if p is not None and p.height]
    if parts:
        sv = pl.concat(parts)
        agg = (agg.join(sv, on=["customer_id", "meter_api_name", "dims_key", "hour"], how="left")
               .with_columns(pl.when(pl.col("__type").is_in(list(STATEFUL_TYPES)))
                             .then(pl.col("__sv").fill_null(pl.lit(0, dtype=DEC)))
                             .otherwise(pl.col("value")).alias("value")))
    return agg.with_columns(pl.when(pl.col("__type").is_in(list(STATEFUL_TYPES)))
                            .then(pl.col("value").fill_null(pl.lit(0, dtype=DEC)))
                            .otherwise(pl.col("value")).alias("value"))


def _stateful_hourly(base: pl.LazyFrame, agg: pl.DataFrame, meter: Meter, as_of) -> pl.DataFrame | None:
    name = meter.meter_api_name
    cells = agg.filter(pl.col("meter_api_name") == name).select(
        "customer_id", "dims_key", pl.col("hour").alias("window_start"),
        (pl.col("hour") + pl.duration(hours=1)).alias("window_end"))
    if cells.height == 0:
        return None
    rcols = {f"__r{i}": k for i, k in enumerate(meter.resource_dimensions)} if meter.type == "event_duration" else {}
    ev = (base.filter(pl.col("meter_api_name") == name)
          .join(cells.select("customer_id", "dims_key").unique().lazy(), on=["customer_id", "dims_key"], how="semi")
          .select("customer_id", "event_time", "value", "unique_id", "dims_key",
                  *[pl.col("dimensions").map.get(k).alias(c) for c, k in rcols.items()])
          .collect())
    w = normalize_windows(cells, key_cols=["dims_key"])
    res = stateful_values(ev, meter, w, ["dims_key"], resource_cols=list(rcols), window_keys=["dims_key"], as_of=as_of)
    return res.select("customer_id", pl.lit(name).alias("meter_api_name"), "dims_key",
                      pl.col("window_start").alias("hour"), pl.col("value").alias("__sv"))


def hourly_rebuild_dates(new_events: pl.DataFrame | pl.LazyFrame, events: pl.DataFrame | pl.LazyFrame,
                         meters: Mapping[str, Meter]) -> list[dt.date]:
    """The UTC dates of usage_hourly that change when `new_events` (late events or cancel records)
    join `events` (all events, new ones included): their own dates, plus for stateful meters every
    later date on which the same customer has events of the same meter. A frame's `event_date`,
    where it has one, is its events' UTC date (the events table's partition: read without the
    files of earlier dates)."""
    def day(frame) -> pl.Expr:
        has = "event_date" in frame.lazy().collect_schema().names()
        return (pl.col("event_date").cast(pl.Date) if has else pl.col("event_time").cast(TS).dt.date()).alias("d")

    new = new_events.lazy().select(pl.col("customer_id").cast(pl.String), pl.col("meter_api_name").cast(pl.String),
                                   day(new_events)).unique().collect()
    if new.height == 0:
        return []
    dates = set(new["d"].to_list())
    stateful = sorted(n for n, m in meters.items() if m.type in STATEFUL_TYPES)
    first = (new.filter(pl.col("meter_api_name").is_in(stateful))
             .group_by("customer_id", "meter_api_name").agg(pl.col("d").min().alias("__first")))
    if first.height:
        later = (events.lazy().filter(pl.col("meter_api_name").is_in(stateful))
                 .select(pl.col("customer_id").cast(pl.String), pl.col("meter_api_name").cast(pl.String), day(events))
                 .filter(pl.col("d") >= first["__first"].min())
                 .join(first.lazy(), on=["customer_id", "meter_api_name"], how="inner")
                 .filter(pl.col("d") >= pl.col("__first")).select("d").unique().collect())
        dates |= set(later["d"].to_list())
    return sorted(dates)
