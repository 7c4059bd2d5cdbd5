"""Timing helper (not a test): price N customers × 5 items with build_invoices.

    .venv/bin/python -m tests.pricing.timing 100000

`synthetic_book(n)` is also used by a (small) test so this file stays in working order.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from decimal import Decimal

import polars as pl

from catalog.config import Catalog, Credit, Customer, Meter, Plan, ProductItem, Promotion, Subscription
from catalog.schemas import DEC, DIMS, TS

UTC = dt.timezone.utc


def synthetic_book(n_customers: int, seed: int = 7) -> tuple[Catalog, list, pl.DataFrame, dt.datetime]:
    """A catalogue of n customers on one monthly plan with 5 items (per_unit, graduated, volume,
    package, per-region per_unit), a few credits and promotions; one period's usage each."""
    from transforms.pricing import customer_periods

    rnd = random.Random(seed)
    plan = Plan.model_validate({
        "plan_id": "pro", "currency": "USD", "billing_period": {"interval": "month"},
        "fees": [{"fee_id": "platform", "amount": "49"}],
        "items": [
            {"product_item_id": "api", "price": {"model": "per_unit", "unit_price": "0.002", "included_units": 1000}},
            {"product_item_id": "storage", "price": {"model": "graduated", "tiers": [
                {"up_to": 100, "unit_price": "0", "flat_fee": "10"}, {"up_to": 1000, "unit_price": "0.05"},
                {"up_to": None, "unit_price": "0.03"}]}},
            {"product_item_id": "seats", "price": {"model": "volume", "tiers": [
                {"up_to": 10, "unit_price": "12"}, {"up_to": 50, "unit_price": "10"}, {"up_to": None, "unit_price": "8"}],
                "minimum": "24"}},
            {"product_item_id": "exports", "price": {"model": "package", "package_size": 100, "package_price": "5"}},
            {"product_item_id": "compute", "price": {"model": "per_unit", "unit_price": "0", "dimensions": {
                "keys": ["region"], "rates": [
                    {"match": {"region": "us"}, "price": {"model": "per_unit", "unit_price": "0.11"}},
                    {"match": {"region": "eu"}, "price": {"model": "per_unit", "unit_price": "0.13"}}]}}},
        ],
    })
    items = ["api", "storage", "seats", "exports", "compute"]
    customers = {f"c{i:06d}": Customer(customer_id=f"c{i:06d}", customer_name=f"Customer {i}") for i in range(n_customers)}
    subs = {f"s{i:06d}": Subscription(subscription_id=f"s{i:06d}", customer_id=f"c{i:06d}", plan_id="pro",
                                      start=dt.date(2026, 1, 1)) for i in range(n_customers)}
    credits = {f"g{i:06d}": Credit(grant_id=f"g{i:06d}", customer_id=f"c{i:06d}", amount=Decimal(50), currency="USD",
                                   effective_at=dt.date(2026, 1, 1)) for i in range(0, n_customers, 10)}
    promos = {f"p{i:06d}": Promotion(promotion_id=f"p{i:06d}", customer_id=f"c{i:06d}", type="percentage",
                                     value=Decimal(10), start=dt.date(2026, 1, 1), periods=3)
              for i in range(0, n_customers, 20)}
    cat = Catalog(
        customers=customers, meters={"m": Meter(meter_api_name="m", type="sum")},
        product_items={p: ProductItem(product_item_id=p, meter_api_name="m") for p in items},
        plans={"pro": plan}, subscriptions=subs, credits=credits, promotions=promos,
    )
    as_of = dt.datetime(2026, 2, 3, tzinfo=UTC)
    periods = []
    for cid in customers:
        periods.extend(customer_periods(cat, cid, dt.datetime(2026, 1, 15, tzinfo=UTC)))
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    rows = {"customer_id": [], "product_item_id": [], "dimensions": [], "quantity": []}
    for cid in customers:
        for it in items[:4]:
            rows["customer_id"].append(cid)
            rows["product_item_id"].append(it)
            rows["dimensions"].append(None)
            rows["quantity"].append(str(Decimal(rnd.randint(0, 200_000)) / 100))
        rows["customer_id"].append(cid)
        rows["product_item_id"].append("compute")
        rows["dimensions"].append([{"key": "region", "value": rnd.choice(["us", "eu"])}])
        rows["quantity"].append(str(Decimal(rnd.randint(0, 50_000)) / 10))
    usage = pl.DataFrame({
        "customer_id": rows["customer_id"],
        "period_start": pl.Series([start] * len(rows["customer_id"]), dtype=TS),
        "product_item_id": rows["product_item_id"],
        "dimensions": pl.Series(rows["dimensions"], dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.String}))).cast(DIMS),
        "quantity": pl.Series(rows["quantity"]).cast(DEC),
    })
    return cat, periods, usage, as_of


def main(n: int) -> None:
    from transforms.pricing import build_invoices

    t0 = time.perf_counter()
    cat, periods, usage, as_of = synthetic_book(n)
    t1 = time.perf_counter()
    r = build_invoices(cat, periods, usage, as_of)
    t2 = time.perf_counter()
    print(f"set-up {t1 - t0:.1f}s; build_invoices: {n} customers × 5 items, {usage.height} usage rows → "
          f"{r.invoices.height} invoices, {r.line_items.height} lines in {t2 - t1:.1f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
