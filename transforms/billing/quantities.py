"""The quantities pricing needs: each plan item's usage per billing period, and each reward meter's.

Which events are billed on which period and plan item: an as-of join puts each event in its
customer's period (`in_periods`); plan items are a small frame joined by plan and meter
(`plan_items`, `item_filter`). Everything is joins and group-bys over all customers at once; the
only Python loops are over catalogue entries (plans, items, meters), never over customers,
periods or events.

An item's `filter` matches an event only when the event has the key with one of the values; an
event without the key is not the item's, and if no other item of the plan takes it, it is
reported as `not_in_plan` (`transforms.billing.unbilled`, never dropped).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import polars as pl

from catalog.config import Catalog
from catalog.schemas import DEC, DIMS, TS
from transforms.metering import meter_values


PERIOD_COLUMNS = {"customer_id": pl.String, "subscription_id": pl.String, "plan_id": pl.String, "start": TS, "end": TS}


def periods_frame(periods: Iterable | pl.DataFrame) -> pl.DataFrame:
    """CustomerPeriod objects -> customer_id, subscription_id, plan_id, start, end.

    A frame made by this function passes through, so a caller that hands the same periods to
    several functions here converts them once."""
    if isinstance(periods, pl.DataFrame):
        return periods.select(list(PERIOD_COLUMNS)).cast(PERIOD_COLUMNS)
    ps = list(periods)
    return pl.DataFrame({c: [getattr(p, c) for p in ps] for c in PERIOD_COLUMNS}, schema=PERIOD_COLUMNS)


def _windows(pf: pl.DataFrame) -> pl.DataFrame:
    return pf.select("customer_id", pl.col("start").alias("window_start"), pl.col("end").alias("window_end"))


def _dims_map(df: pl.DataFrame, keys: list[str]) -> pl.Expr:
    if not keys:
        return pl.lit(None, dtype=DIMS)
    entries = [pl.struct(key=pl.lit(k), value=pl.col(k)) for k in keys]
    return (pl.concat_list(entries)
            .list.eval(pl.element().filter(pl.element().struct.field("value").is_not_null()))
            .cast(DIMS))


def line_usage(cat: Catalog, events: pl.DataFrame, periods: Iterable, as_of: dt.datetime) -> pl.DataFrame:
    """Period quantity of every plan item (per price-dimension combination) of every period.

    Columns: customer_id, period_start, product_item_id, dimensions, quantity. Items with no
    usage in a period get no row here; pricing still gives them their line.
    """
    pf = periods_frame(periods)
    out = []
    for plan_id, plan_periods in pf.partition_by("plan_id", as_dict=True).items():
        plan = cat.plans[plan_id[0]]
        windows = _windows(plan_periods)
        for item in plan.items:
            pi = cat.product_items[item.product_item_id]
            meter = cat.meters[pi.meter_api_name]
            keys = list(item.price.dimensions.keys) if item.price.dimensions else []
            ev = events.filter(pl.col("meter_api_name") == meter.meter_api_name)
            vals = meter_values(ev, meter, windows, group_by=keys, filter=pi.filter or None, as_of=as_of)
            if vals.height == 0:
                continue
            out.append(vals.select(
                "customer_id",
                pl.col("window_start").alias("period_start"),
                pl.lit(item.product_item_id).alias("product_item_id"),
                _dims_map(vals, keys).alias("dimensions"),
                pl.col("value").cast(DEC).alias("quantity"),
            ))
    schema = {"customer_id": pl.String, "period_start": TS, "product_item_id": pl.String, "dimensions": DIMS, "quantity": DEC}
    if not out:
        return pl.DataFrame(schema=schema)
    return pl.concat(out).sort("customer_id", "period_start", "product_item_id")


def reward_usage(cat: Catalog, events: pl.DataFrame, periods: Iterable, as_of: dt.datetime) -> pl.DataFrame:
    """Period quantity of each reward's meter: customer_id, period_start, meter_api_name, quantity."""
    pf = periods_frame(periods)
    out = []
    for meter_name in sorted({r.meter_api_name for r in cat.rewards.values()}):
        custs = {r.customer_id for r in cat.rewards.values() if r.meter_api_name == meter_name}
        w = pf if "*" in custs else pf.filter(pl.col("customer_id").is_in(sorted(custs)))
        if w.height == 0:
            continue
        ev = events.filter(pl.col("meter_api_name") == meter_name)
        vals = meter_values(ev, cat.meters[meter_name], _windows(w), as_of=as_of)
        out.append(vals.select("customer_id", pl.col("window_start").alias("period_start"),
                               pl.lit(meter_name).alias("meter_api_name"), pl.col("value").cast(DEC).alias("quantity")))
    schema = {"customer_id": pl.String, "period_start": TS, "meter_api_name": pl.String, "quantity": DEC}
    return pl.concat(out) if out else pl.DataFrame(schema=schema)


def plan_items(cat: Catalog, plan_ids: Iterable[str]) -> pl.DataFrame:
    """plan_id, product_item_id, meter_api_name of every item of the given plans."""
    rows = [(plan_id, item.product_item_id, cat.product_items[item.product_item_id].meter_api_name)
            for plan_id in sorted(set(plan_ids)) for item in cat.plans[plan_id].items]
    return pl.DataFrame(rows, schema={"plan_id": pl.String, "product_item_id": pl.String,
                                      "meter_api_name": pl.String}, orient="row")


def item_filter(cat: Catalog, item_ids: Iterable[str]) -> pl.Expr:
    """True where an event row (with its `product_item_id`) passes that item's dimension filter."""
    plain, filtered = [], []
    for pid in sorted(set(item_ids)):
        flt = cat.product_items[pid].filter
        if not flt:
            plain.append(pid)
            continue
        cond = pl.col("product_item_id") == pid
        for k, vals in flt.items():
            cond = cond & pl.col("dimensions").map.get(k).is_in(list(vals)).fill_null(False)
        filtered.append(cond)
    expr = pl.col("product_item_id").is_in(plain)
    for cond in filtered:
        expr = expr | cond
    return expr


def in_periods(events: pl.DataFrame, pf: pl.DataFrame, keep_all: bool = False) -> pl.DataFrame:
    """Each event that falls in one of its customer's periods, with that period's `period_start`
    and `plan_id` (a customer's periods never overlap, so an as-of join finds it). With
    `keep_all`, events in no period are kept with null `period_start` and `plan_id`."""
    ev = events.sort("event_time")
    p = pf.select("customer_id", pl.col("start").alias("period_start"), pl.col("end").alias("_end"),
                  "plan_id").sort("period_start")
    tagged = ev.join_asof(p, left_on="event_time", right_on="period_start", by="customer_id",
                          strategy="backward", check_sortedness=False, coalesce=False)
    if "customer_id_right" in tagged.columns:
        tagged = tagged.drop("customer_id_right")
    inside = pl.col("event_time") < pl.col("_end")
    if not keep_all:
        return tagged.filter(inside).drop("_end")
    return tagged.with_columns(pl.when(inside).then(pl.col(c)).alias(c) for c in ("period_start", "plan_id")).drop("_end")
