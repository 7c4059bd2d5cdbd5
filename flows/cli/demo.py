"""`meterbill demo`: the demo's lake (flows/stages/demo.py), the whole pipeline, the results."""

from __future__ import annotations

import datetime as dt

import polars as pl

from flows.cli.tables import print_alerts, print_invoices
from flows.run import run_flow
from flows.stages.common import as_of_instant, open_catalog
from flows.stages.demo import prepare_demo_lake


def run_demo(lake: str | None, days: int, events_per_day: int, seed: int, as_of: str | None, out, progress,
             allow_future: bool = False) -> None:
    t = as_of_instant(as_of, allow_future)  # before anything is written
    lk = prepare_demo_lake(lake, t, days, events_per_day, seed, out.print, progress)
    cat = open_catalog(lk)
    out.print("running ingest → meter → bill → alerts (Prefect, ephemeral server) ...")
    run_flow(lake=str(lk.root), as_of=t.isoformat(), deliver=False, allow_future=allow_future)
    files = lk.read("ingest_files")
    out.print(f"ingested {files['rows_read'].sum()} rows: {files['accepted'].sum()} accepted, "
              f"{files['duplicates'].sum()} duplicates, {files['quarantined'].sum()} quarantined")
    inv = lk.read("invoices")
    recent = inv.filter(pl.col("period_end") > t - dt.timedelta(days=45)).sort("customer_id", "period_start")
    print_invoices(recent, title=f"Invoices of the last periods (as of {t:%Y-%m-%d %H:%M} UTC)", cat=cat)
    fired = lk.read("alerts_fired").sort("window_start", "alert_id", "customer_id")
    print_alerts(fired)
    out.print(f"lake: {lk.root}   explore: meterbill sql \"select * from invoices limit 5\"   "
              f"(deliveries are recorded only in the demo: alerts run with --no-deliver)")
