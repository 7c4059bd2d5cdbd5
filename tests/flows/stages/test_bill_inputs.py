"""Billing from usage_hourly (transforms/billing/from_hourly.py) equals billing from every event.

A real lake (the sample catalogue plus count, max and min meters with dimension filters, customers
in half-hour time zones, a subscription starting at 10:30, a default plan, cancellations, an
unknown customer and an unknown meter, events on boundary minutes) is ingested and metered; then
`bill_tables` with source "hourly" and with source "events" must give the same five tables, row
for row, at an `as_of` on the hour and one inside an hour, and after final invoices exist.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from catalog import Lake, load_catalog
from flows.stages.bill import BILL_TABLES, bill_tables, run_bill
from flows.stages.generate import generate
from flows.stages.ingest import run_ingest
from flows.stages.meter import run_meter

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parents[3]
T0 = dt.datetime(2026, 10, 1, tzinfo=UTC)


def _catalog(dst: Path) -> None:
    shutil.copytree(ROOT / "data" / "catalog", dst)
    meters = yaml.safe_load((dst / "meters.yaml").read_text())
    meters += [
        {"meter_api_name": "requests", "type": "count", "dimensions": ["region"]},
        {"meter_api_name": "peak_mem", "type": "max"},
        {"meter_api_name": "min_lat", "type": "min"},
    ]
    (dst / "meters.yaml").write_text(yaml.safe_dump(meters))
    items = yaml.safe_load((dst / "product_items.yaml").read_text())
    items += [
        {"product_item_id": "requests-us", "name": "US requests", "meter_api_name": "requests",
         "filter": {"region": ["us-east-1"]}},
        {"product_item_id": "mem", "name": "Peak memory", "meter_api_name": "peak_mem"},
        {"product_item_id": "lat", "name": "Min latency", "meter_api_name": "min_lat"},
    ]
    (dst / "product_items.yaml").write_text(yaml.safe_dump(items))
    plans = yaml.safe_load((dst / "plans.yaml").read_text())
    for p in plans:
        if p["plan_id"] in ("starter", "growth"):
            p["items"] += [
                {"product_item_id": "requests-us", "price": {"model": "package", "package_size": 10, "package_price": "0.30"}},
                {"product_item_id": "mem", "price": {"model": "per_unit", "unit_price": "1.25"}},
                {"product_item_id": "lat", "price": {"model": "per_unit", "unit_price": "0.10"}},
            ]
    (dst / "plans.yaml").write_text(yaml.safe_dump(plans))
    customers = yaml.safe_load((dst / "customers.yaml").read_text())
    zones = {"cus_002": "Asia/Kolkata", "cus_003": "Australia/Adelaide", "cus_004": "Asia/Kathmandu"}
    for c in customers:
        c["timezone"] = zones.get(c["customer_id"], c.get("timezone", "UTC"))
    customers.append({"customer_id": "cus_nosub", "customer_name": "No subscription", "timezone": "Asia/Kolkata"})
    (dst / "customers.yaml").write_text(yaml.safe_dump(customers))
    subs = pl.read_csv(dst / "subscriptions.csv", infer_schema=False)
    ids = set(subs["customer_id"].to_list())
    extra = [("sub_half", c["customer_id"], "starter", "2026-10-05T10:30:00Z", None)
             for c in customers if c["customer_id"] not in ids and c["customer_id"] != "cus_nosub"][:1]
    if extra:
        subs = pl.concat([subs, pl.DataFrame(extra, schema=subs.columns, orient="row")])
    subs.write_csv(dst / "subscriptions.csv")
    settings = yaml.safe_load((dst / "settings.yaml").read_text())
    settings["default_plan_id"] = "starter"
    (dst / "settings.yaml").write_text(yaml.safe_dump(settings))


def _extra_events(raw: Path, customers: list[str], seed: int) -> None:
    """count/max/min meters, boundary minutes, an unknown customer and meter, cancellations."""
    rng = np.random.default_rng(seed)
    n = 3000
    cust = rng.choice(customers + ["cus_nosub", "cus_unknown"], size=n)
    meter = rng.choice(["requests", "peak_mem", "min_lat", "api_calls", "mystery"], size=n)
    day = rng.integers(0, 45, size=n)
    minute = rng.choice([0, 1, 29, 30, 31, 44, 45, 46, 59], size=n)
    ms = (T0.timestamp() * 1000 + day * 86_400_000 + rng.integers(0, 24, size=n) * 3_600_000
          + minute * 60_000 + rng.integers(0, 60_000, size=n)).astype(np.int64)
    region = rng.choice(["us-east-1", "eu-west-1"], size=n)
    rows = []
    for i in range(n):
        m = str(meter[i])
        dims = {"region": str(region[i])} if m in ("requests", "api_calls") else {}
        if m == "api_calls":
            dims["endpoint"] = "/v1/x"
        value = None if m == "requests" else float(rng.integers(1, 500))
        rows.append({"customer_id": str(cust[i]), "meter_api_name": m, "meter_value": value,
                     "meter_time_in_millis": int(ms[i]), "unique_id": f"x{seed}-{i}", "dimensions": dims})
    # cancel every 25th of them (the same four values, dimension meterbill_cancel = "true")
    cancels = [{**r, "dimensions": {**r["dimensions"], "meterbill_cancel": "true"}} for r in rows[::25]]
    with open(raw / f"extra-{seed}.jsonl", "w") as f:
        for r in rows + cancels:
            f.write(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n")


def _same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    for t in BILL_TABLES:
        x, y = a[t], b[t]
        keys = [c for c in x.columns if x.schema[c] != pl.Map(pl.String, pl.String) and not isinstance(x.schema[c], pl.List)]
        x, y = x.sort(keys, nulls_last=True), y.sort(keys, nulls_last=True)
        assert x.height == y.height, f"{t}: {x.height} rows from hourly, {y.height} from events"
        assert x.equals(y), f"{t} differs"


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("billinputs")
    _catalog(root / "catalog")
    lk = Lake(root)
    cat = load_catalog(lk.catalog_dir)
    lk.raw_dir.mkdir(parents=True, exist_ok=True)
    generate(cat, lk.raw_dir, T0.date(), 45, events_per_day=400, seed=3)
    _extra_events(lk.raw_dir, sorted(cat.customers), seed=5)
    as_of = dt.datetime(2026, 11, 16, tzinfo=UTC)
    run_ingest(lk, cat, as_of)
    run_meter(lk, cat, as_of)
    return lk


@pytest.mark.parametrize("as_of", ["2026-11-03T00:00:00+00:00", "2026-11-14T13:45:30+00:00"])
def test_hourly_equals_events(lake: Lake, as_of: str) -> None:
    cat = load_catalog(lake.catalog_dir)
    t = dt.datetime.fromisoformat(as_of)
    hourly = bill_tables(lake, cat, t)
    events = bill_tables(lake, cat, t, source="events")
    assert hourly["invoices"].height > 100
    assert hourly["reconciliation"]["events_accepted"].sum() > 10_000
    assert hourly["unbilled_usage"]["reason"].unique().sort().to_list() == [
        "not_in_plan", "undefined_customer", "undefined_meter"]
    _same(hourly, events)


def test_after_finals_and_for_a_shard(lake: Lake) -> None:
    cat = load_catalog(lake.catalog_dir)
    run_bill(lake, cat, dt.datetime(2026, 11, 3, 6, tzinfo=UTC))  # October final for most customers
    t = dt.datetime(2026, 11, 14, 13, 45, 30, tzinfo=UTC)
    _same(bill_tables(lake, cat, t), bill_tables(lake, cat, t, source="events"))
    shard = {"cus_002", "cus_003", "cus_004", "cus_nosub", "cus_010"}
    _same(bill_tables(lake, cat, t, customers=shard), bill_tables(lake, cat, t, customers=shard, source="events"))
