"""`meterbill demo`: a sample catalogue and realistic events in a lake, the whole pipeline, the results."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl

from catalog import Lake
from flows import _ROOT
from flows.common import parse_instant

SAMPLE_CATALOG = _ROOT / "data" / "catalog"


def run_demo(lake: str | None, days: int, events_per_day: int, seed: int, as_of: str | None, out, progress) -> None:
    from flows.cli import print_alerts, print_invoices
    from flows.common import open_catalog
    from flows.generate import generate
    from flows.run import run_flow

    lk = Lake(lake)
    if not lk.catalog_dir.is_dir() or not any(lk.catalog_dir.iterdir()):
        shutil.copytree(SAMPLE_CATALOG, lk.catalog_dir, dirs_exist_ok=True)
        out.print(f"sample catalogue written to {lk.catalog_dir}")
    cat = open_catalog(lk)
    t = parse_instant(as_of)
    first = (t - dt.timedelta(days=days)).date()
    g = generate(cat, lk.raw_dir, first, days, events_per_day, seed, messy=True, progress=progress)
    out.print(f"generated {g.rows} raw rows ({g.events} events, {sum(g.defects.values())} bad rows, "
              f"{g.duplicates} duplicates) for {first} .. {t.date()} under {lk.raw_dir}")
    out.print("running ingest → meter → bill → alerts (Prefect, ephemeral server) ...")
    run_flow(lake=str(lk.root), as_of=t.isoformat(), deliver=False)
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
