"""Late data (SPEC §5.4, last paragraph): final invoices never change; what arrives late for a closed
period is billed on the next open invoice as signed adjustment lines."""

from __future__ import annotations

from decimal import Decimal as D

import polars as pl

from transforms.pricing import ADJUSTMENT_PENDING, FrozenState, build_invoices, customer_periods

from tests.pricing.helpers import catalog, check_invariants, one, plan, usage, utc

SUB = {"subscription_id": "s1", "customer_id": "c1", "plan_id": "p", "start": "2026-01-01"}
JAN, FEB, MAR = utc(2026, 1, 1), utc(2026, 2, 1), utc(2026, 3, 1)
VOLUME = {"model": "volume", "tiers": [{"up_to": 5, "unit_price": "0", "flat_fee": "100"},
                                       {"up_to": 10, "unit_price": "0", "flat_fee": "150"},
                                       {"up_to": 15, "unit_price": "10", "flat_fee": "0"},
                                       {"up_to": None, "unit_price": "5", "flat_fee": "0"}]}


def bill(cat, rows, as_of, frozen=None):
    periods = customer_periods(cat, "c1", until=as_of)
    r = build_invoices(cat, periods, usage(rows), as_of, frozen=frozen)
    check_invariants(r)
    return r


def rows_of(df: pl.DataFrame, period_start) -> pl.DataFrame:
    return df.filter(pl.col("period_start") == period_start)


def adjustments(r) -> pl.DataFrame:
    return r.line_items.filter(pl.col("kind") == "adjustment")


def test_final_invoices_are_returned_unchanged_and_late_usage_is_adjusted_next_invoice():
    cat = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "1"})])], subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 5))
    assert r1.invoices["status"].to_list() == ["final", "draft"]
    frozen = FrozenState.from_result(r1)
    r2 = bill(cat, [("c1", JAN, "A", 150), ("c1", FEB, "A", 10)], as_of=utc(2026, 2, 20), frozen=frozen)
    assert rows_of(r2.invoices, JAN).equals(rows_of(r1.invoices, JAN))
    assert rows_of(r2.line_items, JAN).equals(rows_of(r1.line_items, JAN))
    adj = one(adjustments(r2))
    assert (adj["amount"], adj["quantity"], adj["corrects_period"], adj["product_item_id"], adj["period_start"]) == (
        D(50), D(50), JAN, "A", FEB)
    feb = one(r2.invoices, period_start=FEB)
    assert (feb["usage_amount"], feb["adjustments_amount"], feb["subtotal"]) == (D(10), D(50), D(60))


def test_volume_cliff_gives_a_negative_adjustment():
    cat = catalog(plans=[plan(items=[("A", VOLUME)])], subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "A", 15)], as_of=utc(2026, 2, 5))
    assert one(r1.invoices, period_start=JAN)["total_due"] == D(150)
    r2 = bill(cat, [("c1", JAN, "A", 16), ("c1", FEB, "A", 14)], as_of=utc(2026, 2, 20),
              frozen=FrozenState.from_result(r1))
    adj = one(adjustments(r2))
    assert (adj["amount"], adj["quantity"]) == (D(-70), D(1))   # 16 units at 5 = 80, billed 150
    feb = one(r2.invoices, period_start=FEB)
    assert (feb["subtotal"], feb["total_due"]) == (D(140) - D(70), D(70))


def test_adjustments_on_final_invoices_count_as_billed():
    cat = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "1"})])], subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 5))
    f1 = FrozenState.from_result(r1)
    r2 = bill(cat, [("c1", JAN, "A", 150)], as_of=utc(2026, 3, 5), frozen=f1)   # February final now, with +50
    assert one(adjustments(r2))["period_start"] == FEB
    f2 = FrozenState.from_result(r2, f1)
    assert f2.invoices.height == 2
    r3 = bill(cat, [("c1", JAN, "A", 150)], as_of=utc(2026, 3, 20), frozen=f2)
    assert adjustments(r3).height == 1 and one(adjustments(r3))["period_start"] == FEB   # nothing new
    r4 = bill(cat, [("c1", JAN, "A", 160)], as_of=utc(2026, 3, 20), frozen=f2)
    new = adjustments(r4).filter(pl.col("period_start") == MAR)
    assert (one(new)["amount"], one(new)["quantity"]) == (D(10), D(10))              # only the remaining difference


def test_minimum_true_up_is_re_priced_with_the_usage():
    price = {"model": "per_unit", "unit_price": "1", "minimum": "150"}
    cat = catalog(plans=[plan(items=[("A", price)])], subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 5))
    assert one(r1.line_items, kind="minimum", period_start=JAN)["amount"] == D(50)
    r2 = bill(cat, [("c1", JAN, "A", 120)], as_of=utc(2026, 2, 20), frozen=FrozenState.from_result(r1))
    adj = one(adjustments(r2))
    assert (adj["amount"], adj["quantity"]) == (D(0), D(20))   # usage +20, minimum −20: quantity recorded
    r3 = bill(cat, [("c1", JAN, "A", 200)], as_of=utc(2026, 2, 20), frozen=FrozenState.from_result(r1))
    assert (one(adjustments(r3))["amount"], one(adjustments(r3))["quantity"]) == (D(50), D(100))


def test_maximum_cap_limits_the_adjustment():
    cat = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "1", "maximum": "120"})])],
                  subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 5))
    r2 = bill(cat, [("c1", JAN, "A", 500)], as_of=utc(2026, 2, 20), frozen=FrozenState.from_result(r1))
    assert one(adjustments(r2))["amount"] == D(20)


def test_a_negative_adjustment_never_takes_total_due_below_zero_and_carries_to_later_invoices():
    cat = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "1"})])], subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 5))
    # January's events are cancelled; February (final in this run) billed 30, March 200
    r2 = bill(cat, [("c1", FEB, "A", 30), ("c1", MAR, "A", 200)], as_of=utc(2026, 3, 10),
              frozen=FrozenState.from_result(r1))
    adj = adjustments(r2)
    assert adj.select("period_start", "amount", "quantity").rows() == [(FEB, D(-30), D(0)), (MAR, D(-70), D(-100))]
    assert [one(r2.invoices, period_start=p)["total_due"] for p in (FEB, MAR)] == [D(0), D(130)]
    assert r2.unbilled_usage.height == 0


def test_an_adjustment_with_no_open_invoice_stays_pending():
    sub = {**SUB, "end": "2026-02-01"}
    cat = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "1"})])], subscriptions=[sub])
    r1 = bill(cat, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 5))
    r2 = bill(cat, [("c1", JAN, "A", 104)], as_of=utc(2026, 3, 5), frozen=FrozenState.from_result(r1))
    assert adjustments(r2).height == 0
    p = one(r2.unbilled_usage)
    assert (p["reason"], p["quantity"], p["period_start"]) == (ADJUSTMENT_PENDING, D(4), JAN)


def test_a_catalogue_price_edit_does_not_re_bill_a_closed_period():
    cat = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "1"})])], subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 5))
    cat2 = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "2"})])], subscriptions=[SUB])
    r2 = bill(cat2, [("c1", JAN, "A", 100)], as_of=utc(2026, 2, 20), frozen=FrozenState.from_result(r1))
    assert adjustments(r2).height == 0
    assert rows_of(r2.invoices, JAN).equals(rows_of(r1.invoices, JAN))


def test_dimension_combinations_are_adjusted_per_combination():
    price = {"model": "per_unit", "unit_price": "0", "dimensions": {"keys": ["region"], "rates": [
        {"match": {"region": "us"}, "price": {"model": "per_unit", "unit_price": "1"}},
        {"match": {"region": "eu"}, "price": {"model": "per_unit", "unit_price": "2"}}]}}
    cat = catalog(plans=[plan(items=[("C", price)])], subscriptions=[SUB])
    r1 = bill(cat, [("c1", JAN, "C", 10, {"region": "us"}), ("c1", JAN, "C", 10, {"region": "eu"})], as_of=utc(2026, 2, 5))
    r2 = bill(cat, [("c1", JAN, "C", 10, {"region": "us"}), ("c1", FEB, "C", 50, {"region": "us"})],  # eu cancelled
              as_of=utc(2026, 2, 20),
              frozen=FrozenState.from_result(r1))
    adj = one(adjustments(r2))
    assert (adj["dimensions"], adj["amount"], adj["quantity"]) == ({"region": "eu"}, D(-20), D(-10))


def test_credit_balances_continue_from_the_frozen_ledger():
    cat = catalog(plans=[plan(items=[("A", {"model": "per_unit", "unit_price": "1"})])], subscriptions=[SUB],
                  credits=[{"grant_id": "g1", "customer_id": "c1", "amount": "1000", "currency": "USD",
                            "effective_at": "2026-01-01"}])
    r1 = bill(cat, [("c1", JAN, "A", 850)], as_of=utc(2026, 2, 5))
    f1 = FrozenState.from_result(r1)
    assert f1.credit_ledger.height == 1
    # a run that sees January's usage differently must not redraw January's credits
    r2 = bill(cat, [("c1", JAN, "A", 850), ("c1", FEB, "A", 200)], as_of=utc(2026, 2, 20), frozen=f1)
    led = r2.credit_ledger
    assert led.select("balance_before", "drawn", "balance_after").rows() == [
        (D(1000), D(850), D(150)), (D(150), D(150), D(0))]
    assert one(r2.invoices, period_start=FEB)["total_due"] == D(50)
