"""transforms/billing/: the glue between metering and pricing, checked against brute force.

Random events (seeded) over two customers with a plan change, product items with dimension
filters (an event may lack the filtered key), cancellations, events outside any subscription,
an unknown customer and an unknown meter.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import polars as pl
import pytest

from catalog.config import Catalog, Customer, Meter, Plan, ProductItem, Subscription
from catalog.schemas import conform
from transforms import billing
from transforms.metering import apply_cancellations
from transforms.pricing import all_customer_periods

UTC = dt.timezone.utc
AS_OF = dt.datetime(2026, 3, 5, tzinfo=UTC)


def _catalog() -> Catalog:
    per_unit = {"model": "per_unit", "unit_price": "0.01"}
    plans = [
        Plan.model_validate({"plan_id": "p1", "currency": "USD", "billing_period": {"interval": "month"},
                             "items": [{"product_item_id": "calls_us", "price": per_unit},
                                       {"product_item_id": "gpu", "price": per_unit}]}),
        Plan.model_validate({"plan_id": "p2", "currency": "USD", "billing_period": {"interval": "week"},
                             "items": [{"product_item_id": "calls_us", "price": per_unit},
                                       {"product_item_id": "calls_eu", "price": per_unit}]}),
    ]
    subs = [
        Subscription(subscription_id="s1", customer_id="c1", plan_id="p1", start="2026-01-01", end="2026-01-16"),
        Subscription(subscription_id="s2", customer_id="c1", plan_id="p2", start="2026-01-16"),
        Subscription(subscription_id="s3", customer_id="c2", plan_id="p2", start="2026-02-01"),
    ]
    return Catalog(
        customers={c: Customer(customer_id=c, customer_name=c) for c in ("c1", "c2")},
        meters={m: Meter(meter_api_name=m, type="sum") for m in ("calls", "gpu")},
        product_items={
            "calls_us": ProductItem(product_item_id="calls_us", meter_api_name="calls", filter={"region": ["us"]}),
            "calls_eu": ProductItem(product_item_id="calls_eu", meter_api_name="calls", filter={"region": ["eu", "eu2"]}),
            "gpu": ProductItem(product_item_id="gpu", meter_api_name="gpu"),
        },
        plans={p.plan_id: p for p in plans},
        subscriptions={s.subscription_id: s for s in subs},
    )


def _events(seed: int) -> pl.DataFrame:
    rnd = random.Random(seed)
    t0 = dt.datetime(2025, 12, 20, tzinfo=UTC)
    rows = []
    for i in range(400):
        region = rnd.choice(["us", "eu", "eu2", "apac", None])
        rows.append({
            "customer_id": rnd.choice(["c1", "c1", "c2", "c3"]),
            "meter_api_name": rnd.choice(["calls", "calls", "gpu", "disk"]),
            "meter_value": Decimal(rnd.randint(1, 50)),
            "event_time": t0 + dt.timedelta(minutes=rnd.randint(0, 75 * 24 * 60)),
            "unique_id": f"e{i}",
            "dimensions": [] if region is None else [{"key": "region", "value": region}],
            "is_cancel": False,
        })
    for r in rnd.sample(rows, 40):   # cancel records: same customer, meter, unique_id and time
        rows.append({**r, "dimensions": r["dimensions"] + [{"key": "meterbill_cancel", "value": "true"}],
                     "is_cancel": True})
    return conform("events", pl.DataFrame(rows)).filter(pl.col("event_time") < AS_OF)


def _region(dims) -> str | None:
    return dict((d["key"], d["value"]) for d in dims or []).get("region") if not isinstance(dims, dict) else dims.get("region")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reconciliation_counts_equal_brute_force(seed):
    cat = _catalog()
    events = _events(seed)
    counting = apply_cancellations(events)
    periods = all_customer_periods(cat, AS_OF)
    usage = billing.line_usage(cat, counting, periods, AS_OF)
    empty_lines = conform("line_items", pl.DataFrame({"kind": pl.Series([], dtype=pl.String)}))
    rec = billing.reconciliation(cat, events, counting, periods, usage, empty_lines)

    def count(frame, p, pi):
        n = 0
        for e in frame.iter_rows(named=True):
            if (e["customer_id"] == p.customer_id and e["meter_api_name"] == pi.meter_api_name
                    and p.start <= e["event_time"] < p.end
                    and all(_region(e["dimensions"]) in v for k, v in pi.filter.items())):
                n += 1
        return n

    cancels = events.filter(pl.col("is_cancel"))
    expected = {}
    for p in periods:
        for item in cat.plans[p.plan_id].items:
            pi = cat.product_items[item.product_item_id]
            expected[(p.customer_id, p.start, pi.product_item_id)] = (count(counting, p, pi), count(cancels, p, pi))
    got = {(r["customer_id"], r["period_start"], r["product_item_id"]): (r["events_accepted"], r["events_cancelled"])
           for r in rec.iter_rows(named=True)}
    assert got == expected
    assert sum(n for n, _ in got.values()) > 50 and sum(c for _, c in got.values()) > 0
    # usage per row is the item's metered quantity over its period
    assert rec["usage_quantity"].sum() == usage["quantity"].sum()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_counting_event_is_either_priced_or_unbilled(seed):
    """Never dropped (SPEC §5.2): with sum meters and disjoint filters, Σ event values =
    Σ line usage + Σ unbilled usage — including events that lack a filtered dimension."""
    cat = _catalog()
    counting = apply_cancellations(_events(seed))
    periods = all_customer_periods(cat, AS_OF)
    usage = billing.line_usage(cat, counting, periods, AS_OF)
    unbilled = billing.unbilled_usage(cat, counting, periods, AS_OF)
    assert usage["quantity"].sum() + unbilled["quantity"].sum() == counting["meter_value"].sum()
    assert set(unbilled["reason"]) == {"undefined_customer", "undefined_meter", "no_subscription", "not_in_plan"}


def test_an_event_without_the_filtered_dimension_is_reported_not_in_plan():
    cat = _catalog()
    t = dt.datetime(2026, 1, 5, tzinfo=UTC)
    ev = conform("events", pl.DataFrame([
        {"customer_id": "c1", "meter_api_name": "calls", "meter_value": Decimal(7), "event_time": t,
         "unique_id": "x", "dimensions": [], "is_cancel": False},
    ]))
    periods = all_customer_periods(cat, AS_OF)
    unbilled = billing.unbilled_usage(cat, ev, periods, AS_OF)
    assert unbilled.select("customer_id", "meter_api_name", "quantity", "reason").rows() == [
        ("c1", "calls", Decimal(7), "not_in_plan")]


def test_no_unbilled_usage_is_an_empty_table():
    cat = _catalog()
    periods = all_customer_periods(cat, AS_OF)
    assert billing.unbilled_usage(cat, conform("events", pl.DataFrame({"customer_id": pl.Series([], dtype=pl.String)})),
                                  periods, AS_OF).height == 0


def test_undefined_meter_names_are_data_not_catalogue_names():
    """A raw meter name no catalogue would accept (`api; DROP TABLE events`, quotes, unicode, 60
    characters) is reported as an undefined meter with its own name and quantity."""
    cat = _catalog()
    t = dt.datetime(2026, 1, 5, tzinfo=UTC)
    names = ["api; DROP TABLE events", "ラベル 'x' \"y\"", "m" * 60 + "a", "m" * 60 + "b", "9starts_with_a_digit"]
    ev = conform("events", pl.DataFrame([
        {"customer_id": "c1", "meter_api_name": n, "meter_value": Decimal(i + 1), "event_time": t,
         "unique_id": f"u{i}", "dimensions": [], "is_cancel": False} for i, n in enumerate(names)
    ]))
    periods = all_customer_periods(cat, AS_OF)
    unbilled = billing.unbilled_usage(cat, ev, periods, AS_OF)
    jan = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert sorted(unbilled.select("customer_id", "meter_api_name", "period_start", "quantity", "reason").rows()) == sorted(
        ("c1", n, jan, Decimal(i + 1), "undefined_meter") for i, n in enumerate(names))
