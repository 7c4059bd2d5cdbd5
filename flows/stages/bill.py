"""`meterbill bill`: usage -> line_items, invoices, credit_ledger, unbilled_usage, reconciliation.

Every period that has started gets an invoice: final once `as_of ≥ period_end + grace`, a draft
before. Final invoices are read back and never rewritten (pricing returns them unchanged); late
usage for them becomes adjustment lines on the customer's next invoice.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from catalog import Catalog, Lake
from catalog.schemas import SCHEMAS, empty
from flows.stages.bill_cache import pseudo_events
from flows.stages.firsts import first_event_times
from flows.stages.meter import ensure_metered
from transforms import billing
from transforms.billing import from_hourly
from transforms.metering import apply_cancellations
from transforms.pricing import FrozenState, all_customer_periods, build_invoices

BILL_TABLES = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")


def frozen_state(lk: Lake) -> FrozenState:
    inv = lk.read("invoices")
    final = inv.filter(pl.col("status") == "final")
    lines = lk.read("line_items").join(final.select("invoice_id"), on="invoice_id", how="semi")
    ledger = lk.read("credit_ledger").join(final.select("invoice_id"), on="invoice_id", how="semi")
    return FrozenState(invoices=final, line_items=lines, credit_ledger=ledger)


def _event_columns(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.select("customer_id", "meter_api_name", "meter_value", "event_time", "unique_id", "dimensions",
                     "is_cancel")


def hourly_counting(lk: Lake, cat: Catalog, as_of: dt.datetime, periods: list | pl.DataFrame,
                    customers: set[str] | None = None, cache: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(counting rows, cancel records) for billing, from usage_hourly plus the few events it cannot
    stand for (transforms/from_hourly.py). usage_hourly must be up to date (`ensure_metered`)."""
    pf = billing.periods_frame(periods)
    frag = from_hourly.fragment_hours(pf, as_of)
    mine = pl.col("customer_id").is_in(sorted(customers)) if customers is not None else pl.lit(True)
    before = pl.col("event_time") < as_of
    events = lk.scan("events")
    # real events: the meters that need them, and the additive meters' cut hours
    slow = from_hourly.event_meters(cat)
    parts = [_event_columns(empty("events").lazy()).collect()]
    if slow:
        parts.append(_event_columns(events.filter(mine & before & pl.col("meter_api_name").is_in(slow))).collect())
    files = lk.partition_files("events", from_hourly.real_event_dates(frag, as_of))
    if files:
        lf = pl.scan_parquet(files, schema={k: v for k, v in SCHEMAS["events"].items() if k != "event_date"},
                             extra_columns="ignore")
        parts.append(_event_columns(lf.filter(mine & from_hourly.real_events_filter(frag, as_of, slow))).collect())
    real = apply_cancellations(pl.concat(parts))
    # the pre-aggregated buckets of every other hour
    pseudo = pseudo_events(lk, cat, pf, frag, as_of, customers, cache=cache)
    count_meters = {n for n, m in cat.meters.items() if m.type == "count"}
    counting = from_hourly.counting_frame(pseudo, real, count_meters)
    # every cancel record (reconciliation counts them per item and period)
    cancels = _event_columns(events.filter(mine & before & pl.col("is_cancel").fill_null(False))).collect()
    return counting, cancels


def event_counting(lk: Lake, as_of: dt.datetime, customers: set[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(counting events, cancel records) straight from every event: the reference path."""
    lf = lk.scan("events").filter(pl.col("event_time") < as_of)
    if customers is not None:
        lf = lf.filter(pl.col("customer_id").is_in(sorted(customers)))
    events = lf.collect()
    return apply_cancellations(events), events.filter(pl.col("is_cancel").fill_null(False))


def bill_tables(lk: Lake, cat: Catalog, as_of: dt.datetime, customers: set[str] | None = None,
                source: str = "hourly", cache: bool = True) -> dict[str, pl.DataFrame]:
    """The five billing tables as of `as_of`; with `customers`, only theirs (a shard, see
    flows/executors.py: every billing rule is per customer, so a shard's rows are exact).

    source "hourly" (the default) reads usage from usage_hourly (which must be up to date, see
    `ensure_metered`) and only the events it cannot stand for; "events" reads every event (the
    reference the tests compare it with). `cache` False leaves the bucket cache of usage_hourly
    alone (`pseudo_events`)."""
    fz = frozen_state(lk)
    if customers is not None:
        mine = pl.col("customer_id").is_in(sorted(customers))
        fz = FrozenState(invoices=fz.invoices.filter(mine), line_items=fz.line_items.filter(mine),
                         credit_ledger=fz.credit_ledger.filter(mine))
    if source not in ("hourly", "events"):
        raise ValueError(f"source must be 'hourly' or 'events', got {source!r}")
    if source == "events":
        counting, cancels = event_counting(lk, as_of, customers)
    # the first events only matter where a default plan starts at them
    first = first_event_times(lk, as_of, customers) if cat.settings.default_plan_id else {}
    periods = all_customer_periods(cat, as_of, first_event_times=first)
    if customers is not None:
        periods = [p for p in periods if p.customer_id in customers]
    pf = billing.periods_frame(periods)  # once, for the functions below (pricing takes the objects)
    pcat = cat
    if source == "hourly":
        counting, cancels = hourly_counting(lk, cat, as_of, pf, customers, cache=cache)
        pcat = from_hourly.counting_catalog(cat)
    usage = billing.line_usage(pcat, counting, pf, as_of)
    rewards = billing.reward_usage(pcat, counting, pf, as_of) if cat.rewards else None
    result = build_invoices(cat, periods, usage, as_of, frozen=fz, reward_usage=rewards)
    unbilled = pl.concat([result.unbilled_usage, billing.unbilled_usage(pcat, counting, pf, as_of)],
                         how="vertical_relaxed")
    rec = billing.reconciliation(pcat, cancels, counting, pf, usage, result.line_items)
    tables = {
        "invoices": result.invoices, "line_items": result.line_items, "credit_ledger": result.credit_ledger,
        "unbilled_usage": unbilled, "reconciliation": rec,
    }
    if customers is not None:
        tables = {k: v.filter(pl.col("customer_id").is_in(sorted(customers))) for k, v in tables.items()}
    return tables


def bill_summary(tables: dict[str, pl.DataFrame]) -> dict:
    inv = tables["invoices"]
    return {
        "invoices": inv.height,
        "final": inv.filter(pl.col("status") == "final").height,
        "draft": inv.filter(pl.col("status") == "draft").height,
        "line_items": tables["line_items"].height,
        "unbilled_rows": tables["unbilled_usage"].height,
    }


def run_bill(lk: Lake, cat: Catalog, as_of: dt.datetime, log=None) -> dict:
    with lk.naming_damage():
        ensure_metered(lk, cat, as_of, log=log)
        tables = bill_tables(lk, cat, as_of)
    lk.write_tables(tables)
    summary = bill_summary(tables)
    if log:
        log(f"bill: {summary}")
    return summary
