"""Invoice rules of SPEC §5, one test per rule."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import polars as pl
import pytest

from catalog.schemas import SCHEMAS
from transforms.pricing import (
    ITEM_NOT_IN_PLAN,
    NO_PRICE_FOR_DIMENSIONS,
    NO_SUBSCRIPTION,
    build_invoices,
    customer_periods,
    invoice_id,
    periods_frame,
)

from tests.pricing.helpers import catalog, check_invariants, one, plan, usage, utc

UNIT = {"model": "per_unit", "unit_price": "0.01"}
SUB = {"subscription_id": "s1", "customer_id": "c1", "plan_id": "p", "start": "2026-01-01"}
REGION_PRICE = {"model": "per_unit", "unit_price": "0", "dimensions": {
    "keys": ["region"],
    "rates": [{"match": {"region": "us"}, "price": {"model": "graduated", "included_units": 10, "tiers": [
        {"up_to": 100, "unit_price": "1", "flat_fee": "5"}, {"up_to": None, "unit_price": "0.5"}]}},
              {"match": {"region": "eu"}, "price": {"model": "per_unit", "unit_price": "2"}}],
}}


def run(cat, rows, as_of=utc(2026, 2, 15), until=None, **kw):
    periods = [p for c in sorted(cat.customers) for p in customer_periods(cat, c, until or as_of)]
    r = build_invoices(cat, periods, usage(rows), as_of, **kw)
    check_invariants(r)
    for name, frame in (("invoices", r.invoices), ("line_items", r.line_items),
                        ("credit_ledger", r.credit_ledger), ("unbilled_usage", r.unbilled_usage)):
        assert frame.schema == pl.Schema(SCHEMAS[name]), name
    return r, periods


def test_every_item_has_a_usage_line_every_period_even_without_usage():
    cat = catalog(plans=[plan(items=[("A", UNIT), ("B", {"model": "graduated", "tiers": [
        {"up_to": 10, "unit_price": "0", "flat_fee": "20"}, {"up_to": None, "unit_price": "1"}]})])],
        subscriptions=[SUB])
    r, periods = run(cat, [], as_of=utc(2026, 3, 5))
    assert r.line_items.height == 6  # January, February, March × 2 items
    feb = r.line_items.filter(pl.col("period_start") == utc(2026, 2, 1))
    assert feb["amount"].to_list() == [D(0), D(20)]  # flat rate still owed without usage
    assert feb["quantity"].to_list() == [D(0), D(0)]
    assert one(feb, product_item_id="B")["tiers"] == [
        {"tier": 1, "quantity": D(0), "unit_price": D(0), "flat_fee": D(20), "amount": D(20)}]


def test_dimension_combinations_are_own_lines_with_restarting_tiers_and_unpriced_usage_is_reported():
    cat = catalog(plans=[plan(items=[("C", REGION_PRICE)])], subscriptions=[SUB])
    s = utc(2026, 1, 1)
    r, _ = run(cat, [("c1", s, "C", 30, {"region": "us"}), ("c1", s, "C", 7, {"region": "eu"}),
                     ("c1", s, "C", 4, {"region": "ap"})], as_of=utc(2026, 1, 20))
    lines = r.line_items.filter(pl.col("kind") == "usage").sort("amount")
    assert [(d, a) for d, a in zip(lines["dimensions"].to_list(), lines["amount"].to_list())] == [
        ({"region": "eu"}, D(14)), ({"region": "us"}, D(25))]          # us: 20 billable units ×1 + 5 flat
    us = one(r.line_items, kind="usage", unit_price=None)
    assert us["quantity"] == D(30) and us["tiers"][0]["quantity"] == D(20)
    ub = one(r.unbilled_usage)
    assert (ub["reason"], ub["dimensions"], ub["quantity"], ub["meter_api_name"]) == (
        NO_PRICE_FOR_DIMENSIONS, {"region": "ap"}, D(4), "m_C")
    assert one(r.invoices)["usage_amount"] == D(39)


def test_default_rate_prices_unmatched_combinations():
    price = {**REGION_PRICE, "dimensions": {**REGION_PRICE["dimensions"], "default": {"model": "per_unit", "unit_price": "3"}}}
    cat = catalog(plans=[plan(items=[("C", price)])], subscriptions=[SUB])
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "C", 4, {"region": "ap"})], as_of=utc(2026, 1, 20))
    assert one(r.line_items, kind="usage")["amount"] == D(12)
    assert r.unbilled_usage.height == 0


def test_usage_outside_any_period_or_plan_is_unbilled_never_dropped():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB], items=["A", "Z"])
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "Z", 5), ("c9", utc(2026, 1, 1), "A", 3),
                     ("c1", utc(2025, 12, 1), "A", 2)], as_of=utc(2026, 1, 20))
    got = sorted(zip(r.unbilled_usage["customer_id"].to_list(), r.unbilled_usage["product_item_id"].to_list(),
                     r.unbilled_usage["reason"].to_list()))
    assert got == [("c1", "A", NO_SUBSCRIPTION), ("c1", "Z", ITEM_NOT_IN_PLAN), ("c9", "A", NO_SUBSCRIPTION)]


def test_minimum_line_and_maximum_cap():
    cat = catalog(plans=[plan(items=[
        ("A", {"model": "per_unit", "unit_price": "1", "minimum": "10.00"}),
        ("B", {"model": "per_unit", "unit_price": "1", "maximum": "50"}),
    ])], subscriptions=[SUB])
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "A", "3.5"), ("c1", utc(2026, 1, 1), "B", 80)], as_of=utc(2026, 1, 20))
    assert one(r.line_items, kind="minimum")["amount"] == D("6.50")
    assert one(r.line_items, product_item_id="B")["amount"] == D(50)
    inv = one(r.invoices)
    assert (inv["usage_amount"], inv["minimums_amount"], inv["subtotal"]) == (D("53.50"), D("6.50"), D(60))


def test_item_level_maximum_and_minimum_over_dimension_combinations():
    price = {**REGION_PRICE, "maximum": "30", "minimum": "20"}
    cat = catalog(plans=[plan(items=[("C", price)])], subscriptions=[SUB])
    s = utc(2026, 1, 1)
    r, _ = run(cat, [("c1", s, "C", 30, {"region": "us"}), ("c1", s, "C", 7, {"region": "eu"})], as_of=utc(2026, 1, 20))
    assert sum(r.line_items["amount"].to_list()) == D(30)   # 14 + 25 capped at 30 in combination order
    r, _ = run(cat, [("c1", s, "C", 2, {"region": "eu"})], as_of=utc(2026, 1, 20))
    assert one(r.line_items, kind="minimum")["amount"] == D(16)  # 20 − 4


def test_fees_recurring_one_time_and_prepayable():
    cat = catalog(plans=[plan(fees=[{"fee_id": "setup", "amount": "500", "cadence": "one_time"},
                                    {"fee_id": "platform", "amount": "99", "prepayable": False}])],
                  subscriptions=[SUB],
                  credits=[{"grant_id": "g1", "customer_id": "c1", "amount": "10000", "currency": "USD",
                            "effective_at": "2026-01-01"}])
    r, _ = run(cat, [], as_of=utc(2026, 3, 5))
    fees = r.line_items.filter(pl.col("kind") == "fee")
    assert fees["fee_id"].to_list() == ["setup", "platform", "platform", "platform"]
    assert r.invoices["credits_applied"].to_list() == [D(500), D(0), D(0)]   # the platform fee is not prepayable
    assert r.invoices["total_due"].to_list() == [D(99), D(99), D(99)]


def test_draft_until_period_end_plus_grace_then_final():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB], settings={"grace_period_hours": 48})
    assert run(cat, [], as_of=utc(2026, 2, 2, 23, 59))[0].invoices["status"].to_list() == ["draft", "draft"]
    assert run(cat, [], as_of=utc(2026, 2, 3))[0].invoices["status"].to_list() == ["final", "draft"]


def test_invoice_ids_are_deterministic_and_reruns_give_identical_frames():
    cat = catalog(plans=[plan(items=[("A", UNIT), ("C", REGION_PRICE)])], subscriptions=[SUB])
    rows = [("c1", utc(2026, 1, 1), "A", 123), ("c1", utc(2026, 1, 1), "C", 30, {"region": "us"})]
    r1, periods = run(cat, rows)
    r2 = build_invoices(cat, periods_frame(reversed(periods)), usage(reversed(rows)), utc(2026, 2, 15))
    for name in ("invoices", "line_items", "credit_ledger", "unbilled_usage"):
        assert getattr(r1, name).equals(getattr(r2, name)), name
    assert r1.invoices["invoice_id"][0] == invoice_id("c1", "p", utc(2026, 1, 1))
    assert r1.line_items.select("invoice_id", "line_id").is_unique().all()


@pytest.mark.parametrize("currency,qty,unit,expected", [
    ("JPY", "3", "33.5", "101"),     # 100.5 → 101 (half-up, 0 decimals)
    ("BHD", "3", "0.3335", "1.001"),   # 1.0005 → 1.001 (3 decimals)
    ("USD", "3", "0.3335", "1.00"),
])
def test_minor_units_of_the_currency(currency, qty, unit, expected):
    cat = catalog(plans=[plan(currency=currency, items=[("A", {"model": "per_unit", "unit_price": unit})])],
                  subscriptions=[SUB])
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "A", qty)], as_of=utc(2026, 1, 20))
    amount = one(r.line_items)["amount"]
    assert amount == D(expected)
    inv = one(r.invoices)
    assert inv["total_due"] == D(expected) and inv["base_currency"] == currency and inv["total_due_base"] == D(expected)


def test_custom_currency_plan_states_total_in_base_currency():
    cat = catalog(plans=[plan(currency="CRED", items=[("A", {"model": "per_unit", "unit_price": "1"})])],
                  subscriptions=[SUB],
                  currencies=[{"code": "CRED", "name": "compute credits", "minor_units": 0, "base_currency": "EUR",
                               "rate": "0.0125"}])
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "A", "1234.5")], as_of=utc(2026, 1, 20))
    inv = one(r.invoices)
    assert (inv["currency"], inv["total_due"], inv["base_currency"], inv["total_due_base"]) == (
        "CRED", D(1235), "EUR", D("15.44"))  # 1235 × 0.0125 = 15.4375 → 15.44


def test_plan_change_mid_period_gives_two_invoices():
    cat = catalog(plans=[plan("basic", items=[("A", UNIT)], fees=[{"fee_id": "base", "amount": "31", "prorate": True}]),
                         plan("pro", items=[("A", {"model": "per_unit", "unit_price": "0.02"})])],
                  subscriptions=[{"subscription_id": "s1", "customer_id": "c1", "plan_id": "basic",
                                  "start": "2026-01-01", "end": "2026-01-11"},
                                 {"subscription_id": "s2", "customer_id": "c1", "plan_id": "pro", "start": "2026-01-11"}])
    periods = customer_periods(cat, "c1", until=utc(2026, 1, 20))
    assert [(p.plan_id, p.start, p.end) for p in periods] == [
        ("basic", utc(2026, 1, 1), utc(2026, 1, 11)), ("pro", utc(2026, 1, 11), utc(2026, 2, 11))]
    u = usage([("c1", utc(2026, 1, 1), "A", 1000), ("c1", utc(2026, 1, 11), "A", 1000)])
    r = build_invoices(cat, periods, u, utc(2026, 1, 20))
    check_invariants(r)
    assert r.invoices["plan_id"].to_list() == ["basic", "pro"]
    assert r.invoices["subtotal"].to_list() == [D(10) + D(10), D(20)]    # fee 31 × 10/31
    assert r.invoices["status"].to_list() == ["final", "draft"]
    assert len(set(r.invoices["invoice_id"].to_list())) == 2


def test_promotion_periods_start_and_cap():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB], promotions=[
        {"promotion_id": "half", "customer_id": "c1", "type": "percentage", "value": "50", "start": "2026-01-15",
         "periods": 2, "max_discount_per_period": "30"},
        {"promotion_id": "five", "customer_id": "c1", "type": "fixed", "value": "5", "applies_to": "A",
         "start": "2026-01-01", "periods": 1}])
    rows = [("c1", utc(2026, m, 1), "A", "100") for m in (1, 2, 3, 4)]        # 1.00 per period
    rows[1] = ("c1", utc(2026, 2, 1), "A", "10000")                           # 100.00 in February
    r, _ = run(cat, rows, as_of=utc(2026, 4, 15))
    disc = r.line_items.filter(pl.col("kind") == "discount")
    got = [(d.month, p, a) for d, p, a in zip(disc["period_start"].to_list(), disc["promotion_id"].to_list(),
                                              disc["amount"].to_list())]
    # five: January only, at most its base (1.00); half: the 2 periods starting on/after Jan 15, capped at 30
    assert got == [(1, "five", D(1)), (2, "half", D(30)), (3, "half", D("0.50"))]


def test_percentage_discount_rounds_half_up():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB], promotions=[
        {"promotion_id": "p", "customer_id": "c1", "type": "percentage", "value": "12.5", "start": "2026-01-01"}])
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "A", "1")], as_of=utc(2026, 1, 20))  # 0.01 × 12.5% = 0.00125
    assert r.line_items.filter(pl.col("kind") == "discount").height == 0
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "A", "4")], as_of=utc(2026, 1, 20))  # 0.04 × 12.5% = 0.005 → 0.01
    assert one(r.line_items, kind="discount")["amount"] == D("0.01")


def test_restricted_grant_pays_only_its_items_and_expiry_is_recorded():
    cat = catalog(plans=[plan(items=[("A", UNIT), ("B", UNIT)])], subscriptions=[SUB], credits=[
        {"grant_id": "gA", "customer_id": "c1", "amount": "30", "currency": "USD", "effective_at": "2026-01-01",
         "expires_at": "2026-02-10", "product_item_ids": ["A"]},
        {"grant_id": "eur", "customer_id": "c1", "amount": "30", "currency": "EUR", "effective_at": "2026-01-01"}])
    s = utc(2026, 1, 1)
    r, _ = run(cat, [("c1", s, "A", 1000), ("c1", s, "B", 5000)], as_of=utc(2026, 3, 15))
    jan = r.invoices.row(0, named=True)
    assert (jan["credits_applied"], jan["total_due"]) == (D(10), D(50))
    led = r.credit_ledger
    assert led.select("entry", "drawn", "expired", "balance_after").rows() == [
        ("draw", D(10), D(0), D(20)), ("draw", D(0), D(0), D(20)), ("expire", D(0), D(20), D(0))]
    assert led["invoice_id"].to_list()[-1] == r.invoices["invoice_id"][1]   # expires in February's period
    assert one(led, entry="expire")["at"] == utc(2026, 2, 10)
    assert "eur" not in led["grant_id"].to_list()                           # other currency: never drawn


def test_grant_not_yet_effective_or_already_expired_is_not_used():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB], credits=[
        {"grant_id": "late", "customer_id": "c1", "amount": "5", "currency": "USD", "effective_at": "2026-02-01"},
        {"grant_id": "old", "customer_id": "c1", "amount": "5", "currency": "USD", "effective_at": "2025-01-01",
         "expires_at": "2026-01-01"}])
    r, _ = run(cat, [("c1", utc(2026, 1, 1), "A", 1000)], as_of=utc(2026, 1, 20))
    assert one(r.invoices)["credits_applied"] == D(0)
    assert one(r.credit_ledger)["grant_id"] == "old" and one(r.credit_ledger)["entry"] == "expire"


def test_duplicate_usage_rows_for_one_line_are_refused():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB])
    with pytest.raises(ValueError, match="needs one row"):
        run(cat, [("c1", utc(2026, 1, 1), "A", 1), ("c1", utc(2026, 1, 1), "A", 2)], as_of=utc(2026, 1, 20))


def test_empty_inputs():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB])
    r = build_invoices(cat, [], usage([]), utc(2026, 1, 20))
    assert (r.invoices.height, r.line_items.height, r.credit_ledger.height, r.unbilled_usage.height) == (0, 0, 0, 0)
    r = build_invoices(cat, [], usage([("c1", utc(2026, 1, 1), "A", 5)]), utc(2026, 1, 20))
    assert one(r.unbilled_usage)["reason"] == NO_SUBSCRIPTION


def test_a_synthetic_book_prices_consistently():
    from tests.pricing.timing import synthetic_book

    cat, periods, u, as_of = synthetic_book(300)
    r = build_invoices(cat, periods, u, as_of)
    check_invariants(r)
    assert r.invoices.height == 300 and r.unbilled_usage.height == 0
    assert set(r.invoices["status"].to_list()) == {"final"}


def test_the_line_object_path_and_the_column_path_give_the_same_lines():
    """Customers with credits go through line objects, others through the column store only."""
    items = [("A", UNIT), ("C", {**REGION_PRICE, "minimum": "100"}),
             ("V", {"model": "volume", "maximum": "20", "tiers": [{"up_to": 5, "unit_price": "3", "flat_fee": "1"},
                                                                  {"up_to": None, "unit_price": "2"}]})]
    fees = [{"fee_id": "setup", "amount": "9.99", "cadence": "one_time"}, {"fee_id": "base", "amount": "5", "prorate": True}]
    sub = {**SUB, "end": "2026-02-11"}
    s1, s2 = utc(2026, 1, 1), utc(2026, 2, 1)
    rows = [("c1", s1, "A", 1234), ("c1", s1, "C", 30, {"region": "us"}), ("c1", s1, "V", 12),
            ("c1", s2, "C", 3, {"region": "eu"})]
    plain = catalog(plans=[plan(items=items, fees=fees)], subscriptions=[sub])
    with_grant = catalog(plans=[plan(items=items, fees=fees)], subscriptions=[sub], credits=[
        {"grant_id": "g0", "customer_id": "c1", "amount": "0", "currency": "USD", "effective_at": "2026-01-01"}])
    a, _ = run(plain, rows, as_of=utc(2026, 3, 1))
    b, _ = run(with_grant, rows, as_of=utc(2026, 3, 1))
    assert a.line_items.equals(b.line_items)
    assert a.invoices.equals(b.invoices)
    assert a.line_items.height == 11


def test_reward_credit_expires_after_its_days():
    cat = catalog(plans=[plan(items=[("A", UNIT)])], subscriptions=[SUB], rewards=[
        {"reward_id": "r", "customer_id": "c1", "meter_api_name": "calls", "per_units": 10, "credit": "2.5",
         "expires_after_days": 10}])
    from tests.pricing.helpers import reward_usage

    ru = reward_usage([("c1", utc(2026, 1, 1), "calls", 45)])   # 4 × 2.50 = 10.00, 1 Feb → 11 Feb
    r, _ = run(cat, [("c1", utc(2026, 2, 1), "A", 300)], as_of=utc(2026, 3, 15), reward_usage=ru)
    led = r.credit_ledger
    assert led.select("entry", "balance_before", "drawn", "expired", "balance_after").rows() == [
        ("draw", D(10), D(3), D(0), D(7)), ("expire", D(7), D(0), D(7), D(0))]
    assert one(led, entry="expire")["at"] == utc(2026, 2, 11)
