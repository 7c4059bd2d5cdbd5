"""Usage that no price covers (SPEC §5.2, §7), never dropped: the `unbilled_usage` rows billing makes.

Reasons: `undefined_customer`, `undefined_meter` (the catalogue does not know them yet),
`no_subscription` (no plan in force at the event's time), `not_in_plan` (the plan in force has no
item for the meter, or no item whose filter matches). Quantities are the meter's value over the
uncovered events of a UTC calendar month (`sum` for undefined meters).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import polars as pl

from catalog.config import Catalog, Meter
from catalog.meter_types import UNKNOWN_METER_TYPE
from catalog.schemas import DEC, DIMS, conform, empty
from transforms.billing.quantities import in_periods, item_filter, periods_frame, plan_items
from transforms.metering import meter_values


def _month_start(col: str) -> pl.Expr:
    return pl.col(col).dt.truncate("1mo")


def unbilled_usage(cat: Catalog, events: pl.DataFrame, periods: Iterable, as_of: dt.datetime) -> pl.DataFrame:
    """The unbilled_usage rows of the events before `as_of` (see the module's docstring)."""
    pf = periods_frame(periods)
    rows: list[pl.DataFrame] = []
    ev = events.filter(pl.col("event_time") < as_of)
    known_c = pl.col("customer_id").is_in(sorted(cat.customers))
    known_m = pl.col("meter_api_name").is_in(sorted(cat.meters))
    for reason, sel in (("undefined_customer", ~known_c), ("undefined_meter", known_c & ~known_m)):
        bad = ev.filter(sel)
        if bad.height:
            rows.append(_monthly(cat, bad, reason))
    ev = ev.filter(known_c & known_m)
    if ev.height == 0:
        return _finish(rows)
    # which events fall in a period, and is their meter priced (item meter + filter) by the plan in force?
    ev = in_periods(ev.with_row_index("_i"), pf, keep_all=True)
    no_sub = ev.filter(pl.col("plan_id").is_null())
    if no_sub.height:
        rows.append(_monthly(cat, no_sub.drop("_i", "plan_id", "period_start"), "no_subscription"))
    covered = ev.filter(pl.col("plan_id").is_not_null())
    items = plan_items(cat, covered["plan_id"].unique().to_list())
    priced = (covered.select("_i", "plan_id", "meter_api_name", "dimensions")
              .join(items, on=["plan_id", "meter_api_name"], how="inner")
              .filter(item_filter(cat, items["product_item_id"].to_list()))
              .select("_i"))
    nip = covered.join(priced, on="_i", how="anti").sort("_i").drop("_i", "plan_id", "period_start")
    if nip.height:
        rows.append(_monthly(cat, nip, "not_in_plan"))
    return _finish(rows)


# How a meter the catalogue does not know is measured: summed. Its events are relabelled with
# this name while measured, so a raw name (data, never a catalogue name) is never validated.
_UNDEFINED_METER = Meter(meter_api_name="undefined_meter", type=UNKNOWN_METER_TYPE)


def _monthly(cat: Catalog, ev: pl.DataFrame, reason: str) -> pl.DataFrame:
    """One row per customer × meter × UTC month: the meter's value over those events."""
    ev = ev.with_columns(_m=_month_start("event_time"))
    windows = ev.group_by("customer_id", "_m").agg().select(
        "customer_id", pl.col("_m").alias("window_start"),
        pl.col("_m").dt.offset_by("1mo").alias("window_end"))
    out = []
    for (name,), part in ev.partition_by("meter_api_name", as_dict=True).items():
        meter = cat.meters.get(name) or _UNDEFINED_METER
        w = windows.join(part.select("customer_id").unique(), on="customer_id")
        vals = meter_values(part.with_columns(meter_api_name=pl.lit(meter.meter_api_name)), meter, w)
        vals = vals.filter(pl.col("value") != 0)
        out.append(vals.select("customer_id", pl.lit(name).alias("meter_api_name"),
                               pl.lit(None, dtype=pl.String).alias("product_item_id"),
                               pl.lit(None, dtype=DIMS).alias("dimensions"),
                               pl.col("window_start").alias("period_start"),
                               pl.col("value").cast(DEC).alias("quantity"), pl.lit(reason).alias("reason")))
    return pl.concat(out) if out else empty("unbilled_usage")


def _finish(rows: list[pl.DataFrame]) -> pl.DataFrame:
    if not rows:
        return empty("unbilled_usage")
    return conform("unbilled_usage", pl.concat(rows, how="vertical_relaxed")).sort(
        "customer_id", "period_start", "meter_api_name", "reason")
