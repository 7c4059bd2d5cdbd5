"""A small lake whose invoices are worked out by hand in the tests."""

import json
import textwrap
from pathlib import Path

import pytest

from flows.cli import main

CATALOG = {
    "customers.yaml": """
        - {customer_id: c1, customer_name: One Corp}
        - {customer_id: c2, customer_name: Two Ltd}
    """,
    "meters.yaml": """
        - {meter_api_name: api_calls, label: API calls, type: sum, unit: calls}
    """,
    "product_items.yaml": """
        - {product_item_id: api, name: API calls, meter_api_name: api_calls}
    """,
    "plans.yaml": """
        - plan_id: basic
          currency: USD
          billing_period: {interval: month, count: 1}
          fees: [{fee_id: base, name: Base fee, amount: "10.00", cadence: recurring}]
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "0.01"}}
        - plan_id: pro
          currency: USD
          billing_period: {interval: month, count: 1}
          items:
            - product_item_id: api
              price:
                model: graduated
                tiers:
                  - {up_to: 100, unit_price: "0", flat_fee: "5"}
                  - {up_to: null, unit_price: "0.02"}
    """,
    "subscriptions.yaml": """
        - {subscription_id: s1, customer_id: c1, plan_id: basic, start: 2026-01-01}
        - {subscription_id: s2, customer_id: c2, plan_id: pro, start: 2026-01-01}
    """,
    "alerts.yaml": """
        - alert_id: big-day
          name: Over 250 calls a day
          metric: usage
          meter_api_name: api_calls
          scope: per_customer
          window: day
          condition: greater_than
          threshold: 250
    """,
}

MS = {"2026-01-05": 1767571200000, "2026-01-20": 1768867200000, "2026-02-02": 1769990400000}

EVENTS = [
    # c1 in January: 100 + 200 + 50 = 350 calls
    {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 100, "meter_time_in_millis": MS["2026-01-05"], "unique_id": "e1"},
    {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 200, "meter_time_in_millis": MS["2026-01-05"] + 60000, "unique_id": "e2"},
    {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 50, "meter_time_in_millis": MS["2026-01-20"], "unique_id": "e3"},
    # a re-send of e2: a duplicate, counted and dropped
    {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 200, "meter_time_in_millis": MS["2026-01-05"] + 60000, "unique_id": "e2"},
    # c2 in January: 150 + 20 = 170 calls
    {"customer_id": "c2", "meter_api_name": "api_calls", "meter_value": 150, "meter_time_in_millis": MS["2026-01-20"], "unique_id": "e4"},
    {"customer_id": "c2", "meter_api_name": "api_calls", "meter_value": 20, "meter_time_in_millis": MS["2026-01-20"] + 1000, "unique_id": "e5"},
    # c2 in February: 7 calls
    {"customer_id": "c2", "meter_api_name": "api_calls", "meter_value": 7, "meter_time_in_millis": MS["2026-02-02"], "unique_id": "e6"},
    # quarantined: no customer
    {"meter_api_name": "api_calls", "meter_value": 1, "meter_time_in_millis": MS["2026-01-20"], "unique_id": "bad1"},
]


def write_lake(root: Path, events=EVENTS, catalog=CATALOG) -> Path:
    (root / "catalog").mkdir(parents=True)
    for name, text in catalog.items():
        (root / "catalog" / name).write_text(textwrap.dedent(text))
    (root / "raw").mkdir()
    (root / "raw" / "batch1.ndjson").write_text("".join(json.dumps(e) + "\n" for e in events))
    return root


@pytest.fixture
def small_lake(tmp_path):
    return write_lake(tmp_path / "lake")


@pytest.fixture
def cli(capsys):
    """Run the meterbill command in-process; returns (exit code, stdout, stderr)."""

    def run(*args):
        code = main([str(a) for a in args])
        o = capsys.readouterr()
        return code, o.out, o.err

    return run


@pytest.fixture(scope="module")
def billed_lake(tmp_path_factory):
    """The small lake ingested and billed as of 2026-02-03, without Prefect: 4 invoices (January
    final: c1 13.50, c2 6.40; February draft: c1 10.00, c2 5.00)."""
    import datetime as dt

    from catalog import Lake, load_catalog
    from flows.stages.bill import run_bill
    from flows.stages.ingest import run_ingest

    as_of = dt.datetime(2026, 2, 3, tzinfo=dt.timezone.utc)
    lk = Lake(write_lake(tmp_path_factory.mktemp("billed") / "lake"))
    cat = load_catalog(lk.catalog_dir)
    run_ingest(lk, cat, as_of)
    run_bill(lk, cat, as_of)
    return lk.root


def tree(root):
    """Every path under `root` with its size and modification time (to show nothing was written)."""
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
