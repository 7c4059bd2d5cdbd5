"""Property tests (Hypothesis): the SPEC §7 invariants over random catalogues and usage."""

from __future__ import annotations

from decimal import Decimal as D

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.config import Price
from transforms.pricing import FrozenState, build_invoices, customer_periods, rate, round_money

from tests.pricing.helpers import catalog, check_invariants, plan, usage, utc

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

money = st.integers(min_value=0, max_value=50_000).map(lambda n: str(D(n) / 100))
price_units = st.integers(min_value=0, max_value=20_000).map(lambda n: str(D(n) / 10_000))
quantities = st.integers(min_value=0, max_value=10_000_000).map(lambda n: D(n) / 1000)


@st.composite
def tiers(draw):
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=5000), min_size=1, max_size=4)))
    out = [{"up_to": b, "unit_price": draw(price_units), "flat_fee": draw(st.sampled_from(["0", "0", "5", "12.5"]))}
           for b in bounds]
    out.append({"up_to": None, "unit_price": draw(price_units), "flat_fee": "0"})
    return out


@st.composite
def prices(draw, with_dimensions=True):
    model = draw(st.sampled_from(["per_unit", "graduated", "volume", "package"]))
    p: dict = {"model": model, "included_units": draw(st.sampled_from([0, 0, 10, 1000]))}
    if model == "per_unit":
        p["unit_price"] = draw(price_units)
    elif model in ("graduated", "volume"):
        p["tiers"] = draw(tiers())
    else:
        p["package_size"] = draw(st.sampled_from([1, 10, 1000]))
        p["package_price"] = draw(money)
        p["allow_partial"] = draw(st.booleans())
    if draw(st.booleans()):
        p["minimum"] = draw(money)
    if draw(st.booleans()):
        p["maximum"] = str(D(p.get("minimum", "0")) + D(draw(money)))
    if with_dimensions and draw(st.integers(0, 3)) == 0:
        sub = draw(prices(with_dimensions=False))
        p = {**p, "dimensions": {"keys": ["region"], "rates": [{"match": {"region": "us"}, "price": sub}],
                                 "default": draw(st.none() | prices(with_dimensions=False))}}
    return p


@st.composite
def books(draw):
    currency = draw(st.sampled_from(["USD", "JPY", "BHD"]))
    n_items = draw(st.integers(1, 3))
    items = [(f"I{i}", draw(prices())) for i in range(n_items)]
    fees = [{"fee_id": "f", "amount": draw(money), "prorate": draw(st.booleans()),
             "prepayable": draw(st.booleans()), "cadence": draw(st.sampled_from(["recurring", "one_time"]))}]
    end = draw(st.sampled_from([None, "2026-02-20", "2026-03-05"]))
    sub = {"subscription_id": "s1", "customer_id": "c1", "plan_id": "p", "start": "2026-01-01", **({"end": end} if end else {})}
    grants = [{"grant_id": f"g{i}", "customer_id": "c1", "currency": currency, "amount": draw(money),
               "effective_at": draw(st.sampled_from(["2025-12-01", "2026-01-15", "2026-02-01"])),
               "expires_at": draw(st.sampled_from([None, "2026-02-10", "2026-03-15"])),
               "priority": draw(st.integers(1, 3)),
               "product_item_ids": draw(st.sampled_from([None, ["I0"]]))}
              for i in range(draw(st.integers(0, 3)))]
    promos = [{"promotion_id": f"pr{i}", "customer_id": "c1", "type": t,
               "value": draw(st.sampled_from(["5", "12.5", "100"])) if t == "percentage" else draw(money),
               "applies_to": draw(st.sampled_from(["invoice", "I0"])), "start": "2026-01-01",
               "periods": draw(st.sampled_from([None, 1, 2])),
               "max_discount_per_period": draw(st.none() | money)}
              for i, t in enumerate(draw(st.lists(st.sampled_from(["percentage", "fixed"]), max_size=2)))]
    cat = catalog(plans=[plan("p", currency=currency, items=items, fees=fees)], subscriptions=[sub],
                  credits=grants, promotions=promos)
    periods = customer_periods(cat, "c1", until=utc(2026, 4, 1))
    rows = []
    for p in periods:
        for pid, price in items:
            if draw(st.booleans()):
                if "dimensions" in price:
                    for region in draw(st.sets(st.sampled_from(["us", "eu"]))):
                        rows.append(("c1", p.start, pid, draw(quantities), {"region": region}))
                else:
                    rows.append(("c1", p.start, pid, draw(quantities)))
    return cat, periods, rows, currency


def assert_rounded_once(result, minor: int) -> None:
    for df, cols in ((result.line_items, ["amount"]),
                     (result.invoices, ["usage_amount", "fees_amount", "minimums_amount", "adjustments_amount",
                                        "subtotal", "discount", "credits_applied", "total_due"])):
        for c in cols:
            for v in df[c].to_list():
                assert v == round_money(v, minor), (c, v)


@SETTINGS
@given(books(), st.sampled_from([utc(2026, 1, 20), utc(2026, 2, 15), utc(2026, 4, 1)]))
def test_invoice_invariants_hold(book, as_of):
    cat, periods, rows, currency = book
    r = build_invoices(cat, [p for p in periods if p.start < as_of], usage(rows), as_of)
    check_invariants(r)
    assert_rounded_once(r, cat.minor_units(currency))
    # every usage row is billed on a usage line or reported as unbilled, never dropped
    metered = sum((q for *_, q in ((r_[0], r_[3]) for r_ in rows)), D(0))
    billed = sum(r.line_items.filter(pl.col("kind") == "usage")["quantity"].to_list(), D(0))
    assert billed + sum(r.unbilled_usage["quantity"].to_list(), D(0)) == metered


@SETTINGS
@given(books(), st.data())
def test_late_data_bills_each_closed_period_exactly_once(book, data):
    cat, periods, rows, currency = book
    first = build_invoices(cat, periods, usage(rows), utc(2026, 2, 5))
    frozen = FrozenState.from_result(first)
    closed = set(frozen.invoices["period_start"].to_list())
    # late usage for the closed period(s): change some quantities
    late = [(c, s, pid, q + data.draw(quantities) if s in closed and data.draw(st.booleans()) else q, *rest)
            for c, s, pid, q, *rest in rows]
    second = build_invoices(cat, periods, usage(late), utc(2026, 2, 20), frozen=frozen)
    check_invariants(second)
    assert_rounded_once(second, cat.minor_units(currency))
    for s in closed:   # the final invoice is returned unchanged
        a = first.invoices.filter(pl.col("period_start") == s)
        assert second.invoices.filter(pl.col("period_start") == s).equals(a)
    # billed for the closed period = its usage and minimum lines + adjustments (+ what is pending)
    repriced = build_invoices(cat, periods, usage(late), utc(2026, 2, 5))
    for s in closed:
        def amount(res, kinds, col="period_start", promotion=False):
            lines = res.line_items.filter((pl.col(col) == s) & pl.col("kind").is_in(kinds)
                                          & (pl.col("promotion_id").is_null() | promotion))
            return sum(lines["amount"].to_list(), D(0))
        billed = amount(first, ["usage", "minimum"]) + amount(second, ["adjustment"], "corrects_period")
        pending = second.unbilled_usage.filter(pl.col("reason") == "adjustment_pending").height
        if not pending:   # (a negative difference larger than the open invoices waits for later ones)
            assert billed == amount(repriced, ["usage", "minimum"])
            # ... and net of the period's promotions: what the re-priced period's invoice asks
            net = (amount(first, ["usage", "minimum", "fee"]) - amount(first, ["discount"], promotion=True)
                   + amount(second, ["adjustment"], "corrects_period", promotion=True)
                   - amount(second, ["discount"], "corrects_period", promotion=True))
            assert net == (amount(repriced, ["usage", "minimum", "fee"])
                           - amount(repriced, ["discount"], promotion=True))


@settings(max_examples=200, deadline=None)
@given(tiers(), quantities, quantities)
def test_graduated_amount_never_decreases_as_quantity_grows(ts, a, b):
    price = Price.model_validate({"model": "graduated", "tiers": ts})
    lo, hi = sorted((a, b))
    assert rate(lo, price).amount <= rate(hi, price).amount


@settings(max_examples=200, deadline=None)
@given(prices(with_dimensions=False), quantities)
def test_rated_amount_respects_maximum_and_minimum(p, q):
    price = Price.model_validate(p)
    r = rate(q, price)
    assert r.amount >= 0 and r.minimum_amount >= 0
    if price.maximum is not None:
        assert r.amount <= price.maximum
    if price.minimum is not None:
        assert r.amount + r.minimum_amount >= price.minimum
