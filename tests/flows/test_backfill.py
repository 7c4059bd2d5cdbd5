"""`meterbill backfill` over three months, run twice: every warehouse table is identical, row for
row and byte for byte; the replay finalises invoices in period order and fires alerts once."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import polars as pl
import pytest

from catalog import Lake, connect
from tests.flows.lakes import write_three_month_lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

ARGS = ("--from", "2026-01-01", "--to", "2026-04-01")


def tables(lake) -> list[str]:
    wh = Lake(lake).warehouse_dir
    return sorted(p.name for p in wh.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def snapshot(lake) -> dict[str, pl.DataFrame]:
    """Every warehouse table, all columns (ingested_at and fired_at included), in a canonical row order."""
    con = connect(lake)
    return {t: con.sql(f"select * from {t}").pl().sort(pl.all().exclude(pl.List, pl.Struct, pl.Object), maintain_order=True)
            for t in tables(lake)}


def file_hashes(lake) -> dict[str, str]:
    wh = Lake(lake).warehouse_dir
    return {str(p.relative_to(wh)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(wh.rglob("*.parquet")) if not p.relative_to(wh).parts[0].startswith(".")}


def test_backfill_twice_leaves_identical_tables(tmp_path, cli):
    from prefect.artifacts import Artifact

    lake = write_three_month_lake(tmp_path / "lake")
    code, out, err = cli("backfill", "--lake", lake, *ARGS)
    assert code == 0, err
    first, bytes_first = snapshot(lake), file_hashes(lake)

    # what the replay made: three monthly periods per customer; Jan and Feb final, Mar a draft (as of
    # Apr 1 its grace runs to Apr 2); every accepted event of a known customer billed
    assert {"events", "quarantine", "ingest_files", "usage_hourly", "invoices", "line_items", "credit_ledger",
            "unbilled_usage", "reconciliation", "alerts_fired"} <= set(first)
    inv = first["invoices"]
    assert sorted((r["customer_id"], f"{r['period_start']:%m}", r["status"]) for r in inv.iter_rows(named=True)) == [
        ("c1", "01", "final"), ("c1", "02", "final"), ("c1", "03", "draft"),
        ("c2", "01", "final"), ("c2", "02", "final"), ("c2", "03", "draft")]
    rec = first["reconciliation"]
    assert (rec["usage_quantity"] == rec["billed_quantity"] + rec["adjusted_quantity"]).all()
    ev = first["events"]
    known = ev.filter(pl.col("customer_id").is_in(["c1", "c2"]))
    assert rec["usage_quantity"].sum() == known["meter_value"].sum()
    files = first["ingest_files"]
    assert (files["rows_read"] == files["accepted"] + files["duplicates"] + files["quarantined"]).all()
    assert files["quarantined"].to_list() == [1, 1, 1]
    # the 12th of every month is a big day: "big-day" fires once per customer and month
    big = first["alerts_fired"].filter(pl.col("alert_id") == "big-day")
    assert {(r["customer_id"], f"{r['window_start']:%m-%d}") for r in big.iter_rows(named=True)} >= {
        ("c1", "01-12"), ("c1", "02-12"), ("c1", "03-12")}
    assert big.select("customer_id", "window_start").is_unique().all()
    assert (big["current_value"] > Decimal(250)).all()

    # the command line: a short summary on stdout, a progress bar on stderr
    assert out.splitlines()[0].startswith(f"backfill 2026-01-01 → 2026-04-01  lake {lake}")
    assert "ingest  3 new files; 574 rows: 540 accepted, 31 duplicates, 3 quarantined" in out
    assert "replay  3 billing steps, 91 alert steps" in out
    assert "6 invoices (4 final, 2 draft)" in out
    assert "{" not in out and "Traceback" not in err
    assert "96/96" in err  # the bar: ingest, meter and 94 replay steps
    # the Prefect progress artifact reached 100 %, the report names the range
    assert Artifact.get("backfill-progress").data == 100.0
    report = Artifact.get("backfill-report").data
    assert "# meterbill backfill 2026-01-01 00:00 → 2026-04-01 00:00" in report
    assert "| final | USD | 4 |" in report and "| draft | USD | 2 |" in report

    # again: nothing to ingest, nothing to meter, the same bills and firings
    code, out2, err2 = cli("backfill", "--lake", lake, *ARGS)
    assert code == 0, err2
    assert "ingest  0 new files, 3 already ingested" in out2 and "0 new firings" in out2
    second = snapshot(lake)
    assert set(second) == set(first)
    for t in first:
        assert first[t].equals(second[t]), t
    assert file_hashes(lake) == bytes_first
