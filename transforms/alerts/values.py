"""The value of an alert's metric per customer and window (SPEC §6), for `transforms.alerts.evaluate`.

Metrics:
- `usage`: the meter's exact value over the window (optionally filtered by dimensions).
- `spend`: what the customer's invoices of periods starting in the window charge, before credits
  (`subtotal − discount`), or, with `product_item_id`, that item's usage, minimum and adjustment
  lines. For `billing_period` windows this is the invoice-to-date of the period.
- `prepaid_balance`: the customer's remaining prepaid balance (all grants, invoice currency) at the
  window's end, as the credit ledger has it (a grant never drawn counts at its amount while in effect).
- `undefined_customer` / `undefined_meter`: how many accepted events in the window name a customer
  or meter the catalogue does not know (customer_id '*' unless the event's customer is known).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Iterable

import polars as pl

from catalog.config import Alert, Catalog, to_utc
from catalog.schemas import DEC, TS
from transforms.alerts.windows import PERIODS, WINDOW_FRAME, alert_windows, billing_period_windows
from transforms.metering import meter_values

SCHEMA = {"customer_id": pl.String, "window_start": TS, "window_end": TS, "value": DEC, "complete": pl.Boolean}


def _scope_customers(alert: Alert, cat: Catalog) -> list[str]:
    if alert.scope == "customer":
        return [alert.customer_id]
    return sorted(cat.customers)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)


def _instants(values: list[dt.datetime]) -> pl.Series:
    """Aware datetimes as a TS column (through their microseconds since the epoch: fast)."""
    return pl.Series([(v - _EPOCH) // _US for v in values], dtype=pl.Int64).cast(TS)


def periods_frame(periods: Iterable | pl.DataFrame) -> pl.DataFrame:
    """Billing periods (objects with customer_id, start and end, as transforms.pricing gives them,
    or a frame of them) as a frame of `transforms.alerts.windows.PERIODS`."""
    if isinstance(periods, pl.DataFrame):
        return periods.select(list(PERIODS)).cast(PERIODS)
    periods = list(periods)
    return pl.DataFrame({"customer_id": [p.customer_id for p in periods], "start": _instants([p.start for p in periods]),
                         "end": _instants([p.end for p in periods])}, schema=PERIODS)


def alert_window_frame(alert: Alert, cat: Catalog, as_of: dt.datetime, customers: list[str],
                       periods: pl.DataFrame | None) -> pl.DataFrame:
    """customer_id, window_start, window_end, complete: the windows each customer is judged on.

    Calendar windows are the customer's local ones (made once per zone); for scope all_customers
    they are UTC for every customer, so that the customers' values add up in one window (the sum
    has no customer's zone); billing_period windows are each customer's own periods (`periods`,
    a frame of `PERIODS`)."""
    if alert.window == "billing_period":
        if periods is None:
            raise ValueError(f"alert {alert.alert_id}: window billing_period needs the customers' billing periods")
        mine = periods.filter(pl.col("customer_id").is_in(pl.Series(customers, dtype=pl.String).implode()))
        return billing_period_windows(mine, as_of)
    zones = cat.timezones()
    zone_of = ["UTC"] * len(customers) if alert.scope == "all_customers" else [zones.get(c, "UTC") for c in customers]
    rows = []
    for tz in sorted(set(zone_of)):
        w = alert_windows(alert, as_of, tz, None)
        rows += [(tz, *win, complete) for win, complete in ((w.before_last, True), (w.last_complete, True),
                                                            (w.current, False)) if win is not None]
    by_zone = pl.DataFrame(rows, schema={"tz": pl.String, **{k: v for k, v in WINDOW_FRAME.items() if k != "customer_id"}},
                           orient="row")
    cust = pl.DataFrame({"customer_id": customers, "tz": zone_of}, schema={"customer_id": pl.String, "tz": pl.String})
    return cust.join(by_zone, on="tz", maintain_order="left_right").select(list(WINDOW_FRAME))


def alert_values(alert: Alert, cat: Catalog, as_of: dt.datetime, *, counting: pl.DataFrame,
                 invoices: pl.DataFrame, line_items: pl.DataFrame, ledger: pl.DataFrame,
                 periods: pl.DataFrame | None) -> pl.DataFrame:
    """The metric of `alert` for every customer in scope and window; columns of `SCHEMA`.
    `periods`: the customers' billing periods (`periods_frame`), for billing_period windows."""
    counting = counting.filter(pl.col("event_time") < as_of)
    if alert.metric in ("undefined_customer", "undefined_meter"):
        return _undefined(alert, cat, as_of, counting)
    customers = _scope_customers(alert, cat)
    wf = alert_window_frame(alert, cat, as_of, customers, periods)
    if wf.height == 0:
        return pl.DataFrame(schema=SCHEMA)
    if alert.metric == "usage":
        meter = cat.meters[alert.meter_api_name]
        ev = counting.filter(pl.col("meter_api_name") == meter.meter_api_name)
        vals = meter_values(ev, meter, wf.select("customer_id", "window_start", "window_end"),
                            filter=alert.filter or None, as_of=as_of)
        out = wf.join(vals.select("customer_id", "window_start", "window_end", "value"),
                      on=["customer_id", "window_start", "window_end"], how="left")
    elif alert.metric == "spend":
        out = _spend(alert, wf, invoices, line_items)
    else:
        out = _balance(cat, wf, ledger)
    return out.select(
        "customer_id", "window_start", "window_end",
        pl.col("value").cast(DEC).fill_null(Decimal(0)), "complete",
    ).sort("customer_id", "window_start")


def _spend(alert: Alert, wf: pl.DataFrame, invoices: pl.DataFrame, line_items: pl.DataFrame) -> pl.DataFrame:
    if alert.product_item_id:
        amounts = (line_items.filter((pl.col("product_item_id") == alert.product_item_id)
                                     & pl.col("kind").is_in(["usage", "minimum", "adjustment"]))
                   .select("customer_id", "period_start", "amount"))
    else:
        amounts = invoices.select("customer_id", "period_start",
                                  (pl.col("subtotal") - pl.col("discount")).alias("amount"))
    j = wf.join(amounts, on="customer_id", how="left").filter(
        pl.col("period_start").is_null()
        | ((pl.col("period_start") >= pl.col("window_start")) & (pl.col("period_start") < pl.col("window_end"))))
    return (j.group_by("customer_id", "window_start", "window_end", "complete")
            .agg(pl.col("amount").sum().alias("value")))


def _balance(cat: Catalog, wf: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Per window, the sum over the customer's grants in effect at its end of the ledger's last
    balance before that end (a grant never drawn counts at its amount)."""
    in_scope = set(wf["customer_id"].unique().to_list())
    zones = cat.timezones()
    grants = [(g.grant_id, g.customer_id, g.amount, to_utc(g.effective_at, zones.get(g.customer_id, "UTC")),
               to_utc(g.expires_at, zones.get(g.customer_id, "UTC")) if g.expires_at is not None else None)
              for g in cat.credits.values() if g.customer_id in in_scope]
    gf = pl.DataFrame(grants, schema={"grant_id": pl.String, "customer_id": pl.String, "amount": DEC,
                                      "effective": TS, "expires": TS}, orient="row")
    live = wf.select("customer_id", "window_end").unique().join(gf, on="customer_id").filter(
        (pl.col("effective") < pl.col("window_end"))
        & (pl.col("expires").is_null() | (pl.col("expires") > pl.col("window_end"))))
    hist = (ledger.select("grant_id", pl.col("at").cast(TS), pl.col("balance_after").cast(DEC))
            .filter(pl.col("grant_id").is_in(live["grant_id"].unique().implode())).sort("at"))
    last = live.sort("grant_id", "window_end").join_asof(
        hist.sort("grant_id", "at"), left_on="window_end", right_on="at", by="grant_id",
        strategy="backward", allow_exact_matches=False, check_sortedness=False)  # sorted within each grant
    per_window = (last.group_by("customer_id", "window_end")
                  .agg(pl.coalesce("balance_after", "amount").sum().alias("value")))
    return (wf.join(per_window, on=["customer_id", "window_end"], how="left")
            .with_columns(pl.col("value").fill_null(Decimal(0))).select(*SCHEMA))


def _undefined(alert: Alert, cat: Catalog, as_of: dt.datetime, counting: pl.DataFrame) -> pl.DataFrame:
    if alert.metric == "undefined_customer":
        ev = counting.filter(~pl.col("customer_id").is_in(sorted(cat.customers)))
    else:
        ev = counting.filter(~pl.col("meter_api_name").is_in(sorted(cat.meters)))
    star = alert.scope == "all_customers" or alert.metric == "undefined_customer"
    w = alert_windows(alert.model_copy(update={"window": "day"}) if alert.window == "billing_period" else alert,
                      as_of, "UTC")
    rows = []
    ids = ["*"] if star else ([alert.customer_id] if alert.scope == "customer" else sorted(cat.customers))
    for win, complete in ((w.before_last, True), (w.last_complete, True), (w.current, False)):
        if win is None:
            continue
        in_win = ev.filter((pl.col("event_time") >= win[0]) & (pl.col("event_time") < win[1]))
        counts = dict(in_win.group_by("customer_id").len().iter_rows()) if not star else {"*": in_win.height}
        for cid in ids:
            rows.append({"customer_id": cid, "window_start": win[0], "window_end": win[1],
                         "value": Decimal(counts.get(cid, 0)), "complete": complete})
    return pl.DataFrame(rows, schema=SCHEMA)
