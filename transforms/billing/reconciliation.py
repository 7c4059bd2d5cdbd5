"""After pricing: whether every event's usage was billed exactly once (the `reconciliation` table).

One row per customer × period × plan item. `events_accepted` counts the events that count
(cancelled events and cancel records left out), `events_cancelled` the cancel records received
for the item's events of the period. A row is balanced when `usage_quantity = billed_quantity +
adjusted_quantity`; it is not while part of a negative adjustment waits for an invoice to absorb
it (`adjustment_pending` in `unbilled_usage`), because pricing records the quantity on the part
that completes the amount.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable

import polars as pl

from catalog.config import Catalog
from catalog.schemas import conform
from transforms.billing.quantities import in_periods, item_filter, periods_frame, plan_items
from transforms.metering.cancel import cancel_flag


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
    items = plan_items(cat, pf["plan_id"].to_list())
    rec = pf.join(items, on="plan_id", how="inner").select(
        "customer_id", pl.col("start").alias("period_start"), pl.col("end").alias("period_end"),
        "product_item_id", "meter_api_name")
    has_filter = any(cat.product_items[pid].filter for pid in items["product_item_id"].to_list())
    cols = ["customer_id", "meter_api_name", "event_time", *(["dimensions"] if has_filter else [])]
    cancels = all_events.filter(cancel_flag(all_events.columns))
    # a counting row stands for `_w` events when it is a pre-aggregated bucket (transforms.billing.from_hourly)
    weight = pl.col("_w") if "_w" in counting.columns else pl.lit(1, dtype=pl.Int64)
    ev = pl.concat([counting.select(*cols, weight.cast(pl.Int64).alias("_w")).with_columns(pl.lit(False).alias("_cancel")),
                    cancels.select(*cols, pl.lit(1, dtype=pl.Int64).alias("_w")).with_columns(pl.lit(True).alias("_cancel"))])
    matched = (in_periods(ev, pf).join(items, on=["plan_id", "meter_api_name"], how="inner")
               .filter(item_filter(cat, items["product_item_id"].to_list())))
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
