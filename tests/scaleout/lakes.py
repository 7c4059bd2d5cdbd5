"""A small generated lake for the scale-out tests: the sample catalogue, a few weeks of events,
two customers the catalogue does not know, and alerts of every scope that fire on it."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl

from catalog import Lake, load_catalog
from flows import _ROOT

AS_OF = "2026-11-20T06:00:00Z"
START = dt.date(2026, 10, 10)
DAYS = 41

EXTRA_ALERTS = """
- alert_id: busy-day-all
  name: All customers over 100 API calls a day
  metric: usage
  meter_api_name: api_calls
  scope: all_customers
  window: day
  condition: greater_than
  threshold: 100
- alert_id: spend-week
  name: Spend over 10 in a week
  metric: spend
  scope: per_customer
  window: week
  condition: greater_than
  threshold: 10
- alert_id: balance-low
  name: Prepaid balance under 450
  metric: prepaid_balance
  scope: per_customer
  window: day
  condition: less_than
  threshold: 450
- alert_id: unknown-meters
  name: Events of meters we do not know
  metric: undefined_meter
  scope: all_customers
  window: day
  condition: greater_than
  threshold: 0
"""

# every table the bill and alerts stages write, with its key (SPEC §7)
COMPARED = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation", "alerts_fired")


def make_lake(root: Path, events_per_day: int = 150, seed: int = 11) -> Path:
    from flows.stages.generate import generate

    (root / "raw").mkdir(parents=True)
    shutil.copytree(_ROOT / "data" / "catalog", root / "catalog")
    with open(root / "catalog" / "alerts.yaml", "a", encoding="utf-8") as f:
        f.write(EXTRA_ALERTS)
    cat = load_catalog(root / "catalog")
    customers = sorted(cat.customers) + ["zz-unknown-1", "zz-unknown-2"]
    generate(cat, root / "raw", START, DAYS, events_per_day, seed, messy=True, customers=customers)
    # the day before AS_OF: a meter the catalogue does not know, customers it does not know (in
    # several shards), so the '*' counts of every shard are added up
    t = 1795046400000 + 3_600_000  # 2026-11-19T01:00Z
    rows = [("cus_001", "gpu_seconds"), ("cus_002", "gpu_seconds"), ("zz-unknown-1", "api_calls"),
            ("zz-unknown-2", "api_calls"), ("zz-unknown-3", "api_calls"), ("zz-unknown-4", "api_calls")]
    pl.DataFrame({"customer_id": [r[0] for r in rows], "meter_api_name": [r[1] for r in rows],
                  "meter_value": [3.0] * len(rows), "meter_time_in_millis": [t + i for i in range(len(rows))],
                  "unique_id": [f"x{i}" for i in range(len(rows))]}).write_parquet(root / "raw" / "unknown.parquet")
    return root


def table(lake: str | Path, name: str) -> pl.DataFrame:
    """A table in a canonical row order (by its key), nested columns as they are."""
    from catalog.schemas import KEYS

    df = Lake(lake).read(name)
    keys = [k for k in KEYS[name] if k in df.columns and not isinstance(df.schema[k], (pl.Map, pl.List, pl.Struct))]
    if name == "credit_ledger":
        keys = [c for c in df.columns if not isinstance(df.schema[c], (pl.Map, pl.List, pl.Struct))]
    return df.sort(keys, nulls_last=True) if keys else df


def assert_same(a: pl.DataFrame, b: pl.DataFrame, name: str) -> None:
    from polars.testing import assert_frame_equal

    assert a.height == b.height, f"{name}: {a.height} rows locally, {b.height} sharded"
    assert_frame_equal(a, b, check_exact=True)
