"""From counting events to the quantities pricing needs, and back to a reconciliation.

The glue between metering (`transforms.metering`) and pricing (`transforms.pricing`): which
events are billed on which period and plan item, which usage no price covers (never dropped),
and, after pricing, whether every event's usage was billed exactly once.

Everything here is joins and group-bys over all customers at once (an as-of join puts each event
in its customer's period; plan items are a small frame joined by plan and meter); the only Python
loops are over catalogue entries (plans, items, meters), never over customers, periods or events.

Decisions where SPEC is silent:

* An item's `filter` matches an event only when the event has the key with one of the values; an
  event without the key is not the item's, and if no other item of the plan takes it, it is
  reported as `not_in_plan` (never dropped).
* `reconciliation` has one row per customer × period × plan item. `events_accepted` counts the
  events that count (cancelled events and cancel records left out), `events_cancelled` the cancel
  records received for the item's events of the period. A row is balanced when
  `usage_quantity = billed_quantity + adjusted_quantity`; it is not while part of a negative
  adjustment waits for an invoice to absorb it (`adjustment_pending` in `unbilled_usage`), because
  pricing records the quantity on the part that completes the amount.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Iterable

import polars as pl

from catalog.config import Catalog, Meter
from catalog.schemas import DEC, DIMS, TS, conform, empty
from transforms.metering import meter_values
from transforms.metering.cancel import cancel_flag

UTC = dt.timezone.utc


PERIOD_COLUMNS = {"customer_id": pl.String, "subscription_id": pl.String, "plan_id": pl.String, "start": TS, "end": TS}


def periods_frame(periods: Iterable | pl.DataFrame) -> pl.DataFrame:
    """CustomerPeriod objects -> customer_id, subscription_id, plan_id, start, end.

    A frame made by this function passes through, so a caller that hands the same periods to
    several functions here converts them once (8,000 periods: ≈ 0.05 s each time)."""
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


def _month_start(col: str) -> pl.Expr:
    return pl.col(col).dt.truncate("1mo")


def unbilled_usage(cat: Catalog, events: pl.DataFrame, periods: Iterable, as_of: dt.datetime) -> pl.DataFrame:
    """Usage that no price covers (SPEC §5.2, §7), never dropped.

    Reasons: `undefined_customer`, `undefined_meter` (the catalogue does not know them yet),
    `no_subscription` (no plan in force at the event's time), `not_in_plan` (the plan in force
    has no item for the meter, or no item whose filter matches). Quantities are the meter's
    value over the uncovered events of a UTC calendar month (`sum` for undefined meters).
    """
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
    items = _plan_items(cat, covered["plan_id"].unique().to_list())
    priced = (covered.select("_i", "plan_id", "meter_api_name", "dimensions")
              .join(items, on=["plan_id", "meter_api_name"], how="inner")
              .filter(_item_filter(cat, items["product_item_id"].to_list()))
              .select("_i"))
    nip = covered.join(priced, on="_i", how="anti").sort("_i").drop("_i", "plan_id", "period_start")
    if nip.height:
        rows.append(_monthly(cat, nip, "not_in_plan"))
    return _finish(rows)


# How a meter the catalogue does not know is measured: summed. Its events are relabelled with
# this name while measured, so a raw name (data, never a catalogue name) is never validated.
_UNDEFINED_METER = Meter(meter_api_name="undefined_meter", type="sum")


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


def _plan_items(cat: Catalog, plan_ids: Iterable[str]) -> pl.DataFrame:
    """plan_id, product_item_id, meter_api_name of every item of the given plans."""
    rows = [(plan_id, item.product_item_id, cat.product_items[item.product_item_id].meter_api_name)
            for plan_id in sorted(set(plan_ids)) for item in cat.plans[plan_id].items]
    return pl.DataFrame(rows, schema={"plan_id": pl.String, "product_item_id": pl.String,
                                      "meter_api_name": pl.String}, orient="row")


def _item_filter(cat: Catalog, item_ids: Iterable[str]) -> pl.Expr:
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


def reconciliation(cat: Catalog, all_events: pl.DataFrame, counting: pl.DataFrame, periods: Iterable,
                   usage: pl.DataFrame, line_items: pl.DataFrame) -> pl.DataFrame:
    """Per customer × period × plan item: events accepted/cancelled, usage, billed and adjusted quantity.

    `events_accepted` counts the events that count (cancelled events and cancel records left
    out), `events_cancelled` the cancel records, each matched to the item by meter and filter.
    `usage_quantity` is the period's quantity from the events as they are now; `billed_quantity`
    what the period's own invoice billed; `adjusted_quantity` what adjustment lines on later
    invoices billed for it. Balanced when usage = billed + adjusted.

    Joins and group-bys only: no loop over customers, periods or events.
    """
    pf = periods_frame(periods)
    keys = ["customer_id", "period_start", "product_item_id"]
    items = _plan_items(cat, pf["plan_id"].to_list())
    rec = pf.join(items, on="plan_id", how="inner").select(
        "customer_id", pl.col("start").alias("period_start"), pl.col("end").alias("period_end"),
        "product_item_id", "meter_api_name")
    has_filter = any(cat.product_items[pid].filter for pid in items["product_item_id"].to_list())
    cols = ["customer_id", "meter_api_name", "event_time", *(["dimensions"] if has_filter else [])]
    cancels = all_events.filter(cancel_flag(all_events.columns))
    # a counting row stands for `_w` events when it is a pre-aggregated bucket (transforms.bill_inputs)
    weight = pl.col("_w") if "_w" in counting.columns else pl.lit(1, dtype=pl.Int64)
    ev = pl.concat([counting.select(*cols, weight.cast(pl.Int64).alias("_w")).with_columns(pl.lit(False).alias("_cancel")),
                    cancels.select(*cols, pl.lit(1, dtype=pl.Int64).alias("_w")).with_columns(pl.lit(True).alias("_cancel"))])
    matched = (in_periods(ev, pf).join(items, on=["plan_id", "meter_api_name"], how="inner")
               .filter(_item_filter(cat, items["product_item_id"].to_list())))
    counts = matched.group_by(keys).agg(
        pl.col("_w").filter(~pl.col("_cancel")).sum().cast(pl.Int64).alias("events_accepted"),
        pl.col("_cancel").sum().cast(pl.Int64).alias("events_cancelled"))
    used = usage.group_by(keys).agg(pl.col("quantity").sum().alias("usage_quantity"))
    billed = (line_items.filter(pl.col("kind") == "usage")
              .group_by(keys)
              .agg(pl.col("quantity").sum().alias("billed_quantity")))
    adjusted = (line_items.filter(pl.col("kind") == "adjustment")
                .group_by("customer_id", pl.col("corrects_period").alias("period_start"), "product_item_id")
                .agg(pl.col("quantity").sum().alias("adjusted_quantity")))
    rec = (rec.join(counts, on=keys, how="left").join(used, on=keys, how="left")
           .join(billed, on=keys, how="left").join(adjusted, on=keys, how="left")
           .with_columns(pl.col("events_accepted", "events_cancelled").fill_null(0),
                         pl.col("usage_quantity", "billed_quantity", "adjusted_quantity").fill_null(Decimal(0))))
    return conform("reconciliation", rec).sort(keys)
