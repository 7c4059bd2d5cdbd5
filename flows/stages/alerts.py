"""`meterbill alerts`: evaluate every alert of the catalogue -> alerts_fired, then deliver -> deliveries."""

from __future__ import annotations

import datetime as dt

import polars as pl

from catalog import Catalog, Lake
from catalog.schemas import conform
from flows.stages.firsts import first_event_times
from transforms.alerts.values import SCHEMA, alert_values, periods_frame
from transforms.alerts import evaluate
from transforms.metering import apply_cancellations
from transforms.pricing import all_customer_periods, customer_periods


def values_all(lk: Lake, cat: Catalog, as_of: dt.datetime, customers: set[str] | None = None) -> dict[str, pl.DataFrame]:
    """alert_id -> the alert's metric per customer and window (transforms.alerts.values).

    With `customers` (a shard, flows/executors.py) only their rows, plus their share of the '*'
    rows (counts of undefined customers or meters), which the reduce adds up across shards."""
    invoices, lines, ledger = lk.read("invoices"), lk.read("line_items"), lk.read("credit_ledger")
    events = lk.scan("events").filter(pl.col("event_time") < as_of)
    # only the events an alert reads: the usage alerts' meters (their cancel records carry the same
    # meter), every meter for the undefined_* counts, none for spend and balance alerts
    if not any(a.metric in ("undefined_customer", "undefined_meter") for a in cat.alerts.values()):
        meters = sorted({a.meter_api_name for a in cat.alerts.values() if a.metric == "usage"})
        events = events.filter(pl.col("meter_api_name").is_in(meters))
    if customers is not None:
        mine = pl.col("customer_id").is_in(sorted(customers))
        events = events.filter(mine)
        invoices, lines, ledger = invoices.filter(mine), lines.filter(mine), ledger.filter(mine)
    events = events.collect()
    counting = apply_cancellations(events)
    periods = None
    if any(a.window == "billing_period" for a in cat.alerts.values()):
        # the periods billing has: the default plan's start at the customer's first event included
        first = first_event_times(lk, as_of, customers) if cat.settings.default_plan_id else {}
        until = as_of + dt.timedelta(microseconds=1)
        if customers is None:
            periods = periods_frame(all_customer_periods(cat, until, first))
        else:
            periods = periods_frame(p for cid in sorted(customers) for p in customer_periods(cat, cid, until, first.get(cid)))
    out = {}
    for alert in cat.alerts.values():
        vals = alert_values(alert, cat, as_of, counting=counting, invoices=invoices, line_items=lines,
                            ledger=ledger, periods=periods)
        if customers is not None:
            vals = vals.filter(pl.col("customer_id").is_in(sorted(customers)) | (pl.col("customer_id") == "*"))
        out[alert.alert_id] = vals
    return out


def evaluate_all(lk: Lake, cat: Catalog, as_of: dt.datetime,
                 values: dict[str, pl.DataFrame] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(every firing so far, the new ones of this run); `values` as values_all gives them (default: computed here)."""
    if values is None:
        values = values_all(lk, cat, as_of)
    before = lk.read("alerts_fired")
    tzs = cat.timezones()
    new = []
    for alert in cat.alerts.values():
        new.append(evaluate(alert, values[alert.alert_id], as_of, already_fired=before, timezones=tzs))
    new_df = conform("alerts_fired", pl.concat(new)) if new else conform("alerts_fired", pl.DataFrame())
    return conform("alerts_fired", pl.concat([before, new_df])), new_df


def run_alerts(lk: Lake, cat: Catalog, as_of: dt.datetime, deliver: bool = True, log=None,
               values: dict[str, pl.DataFrame] | None = None) -> dict:
    fired, new = evaluate_all(lk, cat, as_of, values)
    lk.write("alerts_fired", fired)
    summary = {"fired": new.height, "firings_total": fired.height, "delivered": 0, "failed": 0}
    if deliver and any(a.channels for a in cat.alerts.values()):
        from flows.notify import deliver as send  # the network clients, only when there is a channel

        previous = lk.read("deliveries")
        attempts = send(fired, cat.alerts, cat.settings, cat.customers, previous,
                        now=lambda: dt.datetime.now(dt.timezone.utc))
        lk.write("deliveries", pl.concat([previous, conform("deliveries", attempts)]))
        summary["delivered"] = attempts.filter(pl.col("status") == "delivered").height
        summary["failed"] = attempts.filter(pl.col("status") != "delivered").height
    if log:
        for r in new.iter_rows(named=True):
            log(f"alert fired: {r['message']}")
    return summary


def merge_alert_values(frames: list[pl.DataFrame], alert_ids) -> dict[str, pl.DataFrame]:
    """alert_id -> values, from the shards' `values_all` frames (each with an `alert_id` column):
    the customer rows as they are, the '*' rows added up per window."""
    frames = [f for f in frames if f.height]
    df = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema={**SCHEMA, "alert_id": pl.String})
    cols = list(SCHEMA)
    star = (df.filter(pl.col("customer_id") == "*")
            .group_by("alert_id", "customer_id", "window_start", "window_end", maintain_order=True)
            .agg(pl.col("value").sum(), pl.col("complete").all()))
    df = pl.concat([df.filter(pl.col("customer_id") != "*").select("alert_id", *cols),
                    star.select("alert_id", *cols).cast({"value": df.schema["value"]})])
    parts = {k[0]: v for k, v in df.partition_by("alert_id", as_dict=True).items()}
    return {a: (parts[a].drop("alert_id").sort("customer_id", "window_start") if a in parts
                else pl.DataFrame(schema=SCHEMA)) for a in alert_ids}
