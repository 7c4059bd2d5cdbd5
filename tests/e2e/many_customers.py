"""A lake of many customers, made in seconds: a catalogue of N customers (customers and
subscriptions as CSV), a few events each in October 2026, ingested and billed with the stage
functions (no Prefect). For the tests of what the verbs print and publish at scale."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

from catalog import Lake, load_catalog

ZONES = ["UTC", "America/Los_Angeles", "Australia/Sydney"]
AS_OF = dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc)  # October final (grace 24 h), November a draft

CATALOG = {
    "meters.yaml": """
        - {meter_api_name: api_calls, label: API calls, type: sum, unit: calls}
        - {meter_api_name: active_users, label: Active users, type: unique_count, unit: users, unique_dimensions: [user_id]}
    """,
    "product_items.yaml": """
        - {product_item_id: api, name: API calls, meter_api_name: api_calls}
        - {product_item_id: users, name: Active users, meter_api_name: active_users}
    """,
    "plans.yaml": """
        - plan_id: basic
          currency: USD
          billing_period: {interval: month, count: 1}
          fees: [{fee_id: base, name: Base fee, amount: "10.00", cadence: recurring}]
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "0.01"}}
            - {product_item_id: users, price: {model: per_unit, unit_price: "1.00"}}
        - plan_id: euro
          currency: EUR
          billing_period: {interval: month, count: 1}
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "0.02"}}
    """,
}


def customer_id(i: int) -> str:
    return f"cus_{i:05d}"


def write_many_customer_lake(root: Path, n: int, events_per_customer: int = 3) -> Path:
    """Customers cus_00000.. in three zones, even ones on `basic` (USD), odd ones on `euro`, every
    subscription starting 2026-10-01 (local); each customer sends `events_per_customer` events of
    10 calls on 2026-10-10 and one active user. Returns the lake root (not yet ingested)."""
    cat = root / "catalog"
    cat.mkdir(parents=True)
    for name, text in CATALOG.items():
        (cat / name).write_text(textwrap.dedent(text))
    (cat / "customers.csv").write_text("customer_id,customer_name,timezone\n" + "".join(
        f"{customer_id(i)},Customer {i},{ZONES[i % len(ZONES)]}\n" for i in range(n)))
    (cat / "subscriptions.csv").write_text("subscription_id,customer_id,plan_id,start\n" + "".join(
        f"sub_{i:05d},{customer_id(i)},{'basic' if i % 2 == 0 else 'euro'},2026-10-01\n" for i in range(n)))
    noon = int(dt.datetime(2026, 10, 10, 12, tzinfo=dt.timezone.utc).timestamp() * 1000)
    rows = []
    for i in range(n):
        c = customer_id(i)
        rows += [{"customer_id": c, "meter_api_name": "api_calls", "meter_value": 10,
                  "meter_time_in_millis": noon + k * 60_000, "unique_id": f"{c}-a{k}"} for k in range(events_per_customer)]
        rows.append({"customer_id": c, "meter_api_name": "active_users", "meter_value": 1,
                     "meter_time_in_millis": noon, "unique_id": f"{c}-u", "dimensions": {"user_id": "u1"}})
    (root / "raw").mkdir()
    (root / "raw" / "october.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def billed_many_customer_lake(root: Path, n: int, events_per_customer: int = 3) -> Lake:
    """`write_many_customer_lake`, ingested and billed as of AS_OF."""
    from flows.stages.bill import run_bill
    from flows.stages.ingest import run_ingest

    lk = Lake(write_many_customer_lake(root, n, events_per_customer))
    cat = load_catalog(lk.catalog_dir)
    run_ingest(lk, cat, AS_OF)
    run_bill(lk, cat, AS_OF)
    return lk
