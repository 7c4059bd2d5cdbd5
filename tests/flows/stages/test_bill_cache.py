"""The bucket cache of billing (flows/stages/bill_cache.py `pseudo_events`) never changes what is billed.

One lake lives through what a scheduled deployment sees — a new day, late events for an old day,
a subscription added in the past, a damaged cache file, an `as_of` inside an hour — and after
each step the five tables billed with the cache equal those billed without it (and, once, those
billed from every event). The months that did not change are not rewritten; the ones that did
are, and a month a new day was merged into has the bytes of the same month made from scratch.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import polars as pl
import pytest

from catalog import Lake, load_catalog
from flows.stages.bill import bill_tables, run_bill
from flows.stages.bill_cache import BUCKETS_DIR
from flows.stages.generate import generate
from flows.stages.ingest import run_ingest
from flows.stages.meter import run_meter
from tests.flows.stages.test_bill_inputs import _catalog, _extra_events, _same

UTC = dt.timezone.utc
T0 = dt.date(2026, 10, 1)


def _months(lk: Lake) -> dict[str, int]:
    """month file -> mtime_ns."""
    folder = lk.state_dir(BUCKETS_DIR)
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("month=*.parquet"))}


def _step(lk: Lake, as_of: dt.datetime, reference: bool = False) -> dict[str, pl.DataFrame]:
    """ingest + meter + bill with the cache; check the billed tables against no cache."""
    cat = load_catalog(lk.catalog_dir)
    run_ingest(lk, cat, as_of)
    run_meter(lk, cat, as_of)
    run_bill(lk, cat, as_of)
    billed = {t: lk.read(t) for t in ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")}
    _same(billed, bill_tables(lk, cat, as_of, cache=False))
    if reference:
        _same(billed, bill_tables(lk, cat, as_of, source="events"))
    return billed


@pytest.fixture()
def lake(tmp_path) -> Lake:
    _catalog(tmp_path / "catalog")
    lk = Lake(tmp_path)
    cat = load_catalog(lk.catalog_dir)
    lk.raw_dir.mkdir(parents=True, exist_ok=True)
    generate(cat, lk.raw_dir, T0, 40, events_per_day=150, seed=11)
    _extra_events(lk.raw_dir, sorted(cat.customers), seed=7)  # days 0-44, so some arrive "early"
    return lk


def test_cache_follows_every_change(lake: Lake) -> None:
    cat = load_catalog(lake.catalog_dir)
    # 1. the first run makes a file per month
    _step(lake, dt.datetime(2026, 11, 10, tzinfo=UTC))
    first = _months(lake)
    assert list(first) == ["month=2026-10.parquet", "month=2026-11.parquet"]

    # 2. a new day: October is not rewritten, November is
    generate(cat, lake.raw_dir / "day2", dt.date(2026, 11, 10), 1, events_per_day=300, seed=12)
    inv = _step(lake, dt.datetime(2026, 11, 11, tzinfo=UTC))["invoices"]
    after = _months(lake)
    assert after["month=2026-10.parquet"] == first["month=2026-10.parquet"]
    assert after["month=2026-11.parquet"] != first["month=2026-11.parquet"]
    assert inv.filter(pl.col("status") == "draft").height > 10
    #    the merged month has the bytes of the month made from scratch (rows in key order)
    nov = lake.state_dir(BUCKETS_DIR) / "month=2026-11.parquet"
    merged = nov.read_bytes()
    nov.unlink()
    bill_tables(lake, cat, dt.datetime(2026, 11, 11, tzinfo=UTC))
    assert nov.read_bytes() == merged

    # 3. late events for an old day (October 12) make October again
    late = [{"customer_id": "cus_005", "meter_api_name": "api_calls", "meter_value": 7000 + i,
             "event_time": f"2026-10-12T0{i}:15:00Z", "unique_id": f"late-{i}",
             "dimensions": {"region": "us-east-1", "endpoint": "/v1/x"}} for i in range(5)]
    (lake.raw_dir / "late.jsonl").write_text("".join(json.dumps(r) + "\n" for r in late))
    before = _months(lake)
    _step(lake, dt.datetime(2026, 11, 11, 6, tzinfo=UTC))
    after = _months(lake)
    assert after["month=2026-10.parquet"] != before["month=2026-10.parquet"]

    # 4. a subscription added in the past (no new usage files): the periods of old days change
    subs = pl.read_csv(lake.catalog_dir / "subscriptions.csv", infer_schema=False)
    subs = pl.concat([subs, pl.DataFrame([("sub_late", "cus_nosub", "growth", "2026-10-20", None)],
                                         schema=subs.columns, orient="row")])
    subs.write_csv(lake.catalog_dir / "subscriptions.csv")
    before = _months(lake)
    billed = _step(lake, dt.datetime(2026, 11, 11, 6, tzinfo=UTC), reference=True)
    after = _months(lake)
    assert after["month=2026-10.parquet"] != before["month=2026-10.parquet"]
    # Kolkata midnight of October 20: the growth plan's first period starts 18:30 UTC the day before
    late_sub = billed["invoices"].filter((pl.col("customer_id") == "cus_nosub") & (pl.col("plan_id") == "growth"))
    assert late_sub["period_start"].to_list() == [dt.datetime(2026, 10, 19, 18, 30, tzinfo=UTC)]

    # 5. a damaged cache file, a stray month and a dead run's temporary file are made again /
    #    removed, not trusted; `as_of` inside an hour
    folder = lake.state_dir(BUCKETS_DIR)
    (folder / "month=2026-10.parquet").write_bytes(b"not parquet")
    (folder / "month=2025-01.parquet").write_bytes(b"PAR1")
    (folder / ".month=2026-11.parquet.999999.tmp").write_bytes(b"left by a run that died")
    _step(lake, dt.datetime(2026, 11, 11, 9, 30, 15, tzinfo=UTC))
    assert sorted(_months(lake)) == ["month=2026-10.parquet", "month=2026-11.parquet"]
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]

    # 6. while another run holds the cache, a bill neither reads nor writes it, and bills the same
    at = dt.datetime(2026, 11, 11, 9, 30, 15, tzinfo=UTC)
    stored = {t: lake.read(t) for t in ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")}
    with lake.lock(BUCKETS_DIR):
        (folder / "month=2026-11.parquet").write_bytes(b"being replaced")
        _same(bill_tables(lake, load_catalog(lake.catalog_dir), at), stored)
        assert (folder / "month=2026-11.parquet").read_bytes() == b"being replaced"
