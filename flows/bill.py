"""`meterbill bill`: usage -> line_items, invoices, credit_ledger, unbilled_usage, reconciliation.

Every period that has started gets an invoice: final once `as_of ≥ period_end + grace`, a draft
before. Final invoices are read back and never rewritten (pricing returns them unchanged); late
usage for them becomes adjustment lines on the customer's next invoice.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from prefect import flow, get_run_logger, task

from catalog import Catalog, Lake, load_catalog
from flows.common import parse_instant
from transforms import billing
from transforms.metering import apply_cancellations
from transforms.pricing import FrozenState, all_customer_periods, build_invoices

BILL_TABLES = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")


def all_periods(cat: Catalog, counting: pl.DataFrame, until: dt.datetime) -> list:
    """Every billing period that has started before `until`, for every customer (the first event
    time of each customer decides where a default plan starts, SPEC §5.2)."""
    first = dict(counting.group_by("customer_id").agg(pl.col("event_time").min()).iter_rows())
    return all_customer_periods(cat, until, first_event_times=first)


def frozen_state(lk: Lake) -> FrozenState:
    inv = lk.read("invoices")
    final = inv.filter(pl.col("status") == "final")
    lines = lk.read("line_items").join(final.select("invoice_id"), on="invoice_id", how="semi")
    ledger = lk.read("credit_ledger").join(final.select("invoice_id"), on="invoice_id", how="semi")
    return FrozenState(invoices=final, line_items=lines, credit_ledger=ledger)


def bill_tables(lk: Lake, cat: Catalog, as_of: dt.datetime, customers: set[str] | None = None) -> dict[str, pl.DataFrame]:
    """The five billing tables as of `as_of`; with `customers`, only theirs (a shard, see
    flows/executors.py: every billing rule is per customer, so a shard's rows are exact)."""
    if customers is None:
        events = lk.read("events").filter(pl.col("event_time") < as_of)
        frozen = frozen_state(lk)
    else:
        mine = pl.col("customer_id").is_in(sorted(customers))
        events = lk.scan("events").filter(mine & (pl.col("event_time") < as_of)).collect()
        fz = frozen_state(lk)
        frozen = FrozenState(invoices=fz.invoices.filter(mine), line_items=fz.line_items.filter(mine),
                             credit_ledger=fz.credit_ledger.filter(mine))
    counting = apply_cancellations(events)
    periods = all_periods(cat, counting, as_of)
    if customers is not None:
        periods = [p for p in periods if p.customer_id in customers]
    usage = billing.line_usage(cat, counting, periods, as_of)
    rewards = billing.reward_usage(cat, counting, periods, as_of) if cat.rewards else None
    result = build_invoices(cat, periods, usage, as_of, frozen=frozen, reward_usage=rewards)
    unbilled = pl.concat([result.unbilled_usage, billing.unbilled_usage(cat, counting, periods, as_of)],
                         how="vertical_relaxed")
    rec = billing.reconciliation(cat, events, counting, periods, usage, result.line_items)
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
    tables = bill_tables(lk, cat, as_of)
    lk.write_tables(tables)
    summary = bill_summary(tables)
    if log:
        log(f"bill: {summary}")
    return summary


@task(name="price-and-write-invoices", retries=1, retry_delay_seconds=2)
def bill_task(lake: str, as_of: str) -> dict:
    lk = Lake(lake)
    return run_bill(lk, load_catalog(lk.catalog_dir), parse_instant(as_of), log=get_run_logger().info)


@flow(name="bill")
def bill_flow(lake: str | None = None, as_of: str | None = None, executor: str = "local",
              workers: int | None = None, dask_address: str | None = None) -> dict:
    """Price every started period into invoices (drafts for open periods, finals after grace)."""
    lk = Lake(lake)
    t = parse_instant(as_of)
    if executor == "dask":  # customer shards on a Dask cluster (flows/executors.py)
        from flows.executors import bill_sharded

        summary = bill_sharded(str(lk.root), t.isoformat(), workers, dask_address)
    else:
        summary = bill_task(str(lk.root), t.isoformat())
    from flows.artifacts import invoices_artifact

    invoices_artifact(lk)
    return summary
