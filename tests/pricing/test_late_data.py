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


# ---------------------------------------------------------------- a re-priced period keeps its promotions
# (SPEC §5.4: the closed period is re-priced with the change). The next invoice shows the late
# usage as an adjustment line at its price and the promotion's share as a discount line of the
# same promotion that names the corrected period (`corrects_period`), as the closed invoice
# showed them; a discount that shrinks is given back as an adjustment line of the promotion.

CENT = {"model": "per_unit", "unit_price": "0.01"}


def promo(**kw):
    return {"promotion_id": "p10", "customer_id": "c1", "type": "percentage", "value": "10",
            "start": "2026-01-01", "periods": 1, **kw}


def lines_of(r, period_start, kind):
    return r.line_items.filter((pl.col("period_start") == period_start) & (pl.col("kind") == kind))


def promoted(promotions, jan, late_jan, feb=0):
    """January billed (final) with `jan` units at 0.01, then billed again with `late_jan`."""
    cat = catalog(plans=[plan(items=[("A", CENT)])], subscriptions=[SUB], promotions=promotions)
    r1 = bill(cat, [("c1", JAN, "A", jan)], as_of=utc(2026, 2, 5))
    r2 = bill(cat, [("c1", JAN, "A", late_jan), ("c1", FEB, "A", feb)], as_of=utc(2026, 2, 20),
              frozen=FrozenState.from_result(r1))
    assert rows_of(r2.invoices, JAN).equals(rows_of(r1.invoices, JAN))   # the final invoice never changes
    return r1, r2


def test_late_usage_of_a_promoted_period_keeps_the_promotion():
    r1, r2 = promoted([promo()], 1000, 1130)
    # January: 1000 × 0.01 = 10.00, 10 % off = 1.00 → 9.00
    jan = one(r1.invoices, period_start=JAN)
    assert (jan["subtotal"], jan["discount"], jan["total_due"]) == (D("10.00"), D("1.00"), D("9.00"))
    # re-priced: 1130 × 0.01 = 11.30, 10 % = 1.13; billed 10.00 and 1.00 → +1.30 and a further 0.13 off
    adj = one(lines_of(r2, FEB, "adjustment"))
    assert (adj["amount"], adj["quantity"], adj["corrects_period"]) == (D("1.30"), D(130), JAN)
    disc = one(lines_of(r2, FEB, "discount"))
    assert (disc["amount"], disc["promotion_id"], disc["corrects_period"], disc["product_item_id"]) == (
        D("0.13"), "p10", JAN, None)
    feb = one(r2.invoices, period_start=FEB)
    # February itself is not promoted (one period): 1.30 − 0.13 = 1.17
    assert (feb["adjustments_amount"], feb["subtotal"], feb["discount"], feb["total_due"]) == (
        D("1.30"), D("1.30"), D("0.13"), D("1.17"))


def test_late_usage_gets_no_further_discount_once_the_promotion_cap_is_used_up():
    # January: 1500 × 0.01 = 15.00, 10 % = 1.50 capped at 1.00; re-priced 16.30 → 1.63, still 1.00
    r1, r2 = promoted([promo(max_discount_per_period="1.00")], 1500, 1630)
    assert one(r1.invoices, period_start=JAN)["discount"] == D("1.00")
    assert one(lines_of(r2, FEB, "adjustment"))["amount"] == D("1.30")
    assert lines_of(r2, FEB, "discount").height == 0
    assert one(r2.invoices, period_start=FEB)["total_due"] == D("1.30")


def test_late_usage_gets_what_is_left_of_the_promotion_cap():
    # cap 1.05: January 10.00 → 1.00 off; re-priced 11.30 → 1.13, capped 1.05 → a further 0.05
    r1, r2 = promoted([promo(max_discount_per_period="1.05")], 1000, 1130)
    assert one(lines_of(r2, FEB, "discount"))["amount"] == D("0.05")
    assert one(r2.invoices, period_start=FEB)["total_due"] == D("1.25")   # 1.30 − 0.05


def test_a_fixed_promotion_covers_late_usage_up_to_its_value():
    # 5.00 off: January 300 units = 3.00 → 3.00 off (at most its base) → 0; re-priced 5.00 → 5.00 off
    r1, r2 = promoted([promo(type="fixed", value="5")], 300, 500)
    assert one(r1.invoices, period_start=JAN)["total_due"] == D(0)
    assert one(lines_of(r2, FEB, "adjustment"))["amount"] == D("2.00")
    assert one(lines_of(r2, FEB, "discount"))["amount"] == D("2.00")
    assert one(r2.invoices, period_start=FEB)["total_due"] == D(0)


def test_an_item_promotion_discounts_its_items_late_usage():
    r1, r2 = promoted([promo(value="20", applies_to="A")], 1000, 1050)
    # A: 10.00 → 2.00 off; re-priced 10.50 → 2.10 → a further 0.10 on A's line
    disc = one(lines_of(r2, FEB, "discount"))
    assert (disc["amount"], disc["product_item_id"], disc["corrects_period"]) == (D("0.10"), "A", JAN)
    assert one(r2.invoices, period_start=FEB)["total_due"] == D("0.40")   # 0.50 − 0.10


def test_a_cancellation_in_a_promoted_period_gives_back_the_discount_it_no_longer_earns():
    # January 1000 → 10.00 − 1.00 = 9.00 paid; 200 cancelled: 800 → 8.00 − 0.80 = 7.20 → 1.80 back
    r1, r2 = promoted([promo()], 1000, 800, feb=500)
    adj = lines_of(r2, FEB, "adjustment").sort("amount")
    assert adj.select("amount", "quantity", "promotion_id", "corrects_period").rows() == [
        (D("-2.00"), D(-200), None, JAN), (D("0.20"), None, "p10", JAN)]
    feb = one(r2.invoices, period_start=FEB)
    # February: 500 × 0.01 = 5.00 (not promoted) − 2.00 + 0.20 = 3.20
    assert (feb["adjustments_amount"], feb["subtotal"], feb["discount"], feb["total_due"]) == (
        D("-1.80"), D("3.20"), D(0), D("3.20"))


def test_the_invoice_an_adjustment_lands_on_does_not_discount_it_again():
    # 10.00 off every period. January: 1000 × 0.01 = 10.00, all of it off; re-priced 11.30, still
    # 10.00 off: its late 1.30 is owed. February's own 10.00 off covers February's own 5.00 only.
    r1, r2 = promoted([promo(type="fixed", value="10", periods=None)], 1000, 1130, feb=500)
    assert one(r1.invoices, period_start=JAN)["total_due"] == D(0)
    disc = lines_of(r2, FEB, "discount")
    assert disc.select("amount", "corrects_period").rows() == [(D("5.00"), None)]
    feb = one(r2.invoices, period_start=FEB)
    assert (feb["subtotal"], feb["discount"], feb["total_due"]) == (D("6.30"), D("5.00"), D("1.30"))


def test_a_second_late_arrival_gets_only_the_rest_of_the_promotion():
    cat = catalog(plans=[plan(items=[("A", CENT)])], subscriptions=[SUB], promotions=[promo()])
    r1 = bill(cat, [("c1", JAN, "A", 1000)], as_of=utc(2026, 2, 5))
    f1 = FrozenState.from_result(r1)
    r2 = bill(cat, [("c1", JAN, "A", 1130)], as_of=utc(2026, 3, 5), frozen=f1)   # February final, with +1.30 −0.13
    f2 = FrozenState.from_result(r2, f1)
    r3 = bill(cat, [("c1", JAN, "A", 1200)], as_of=utc(2026, 3, 20), frozen=f2)
    # January now 12.00 → 1.20 off; billed 10.00 + 1.30 and 1.00 + 0.13 → +0.70 and 0.07 off on March
    assert one(lines_of(r3, MAR, "adjustment"))["amount"] == D("0.70")
    assert one(lines_of(r3, MAR, "discount"))["amount"] == D("0.07")
    assert one(r3.invoices, period_start=MAR)["total_due"] == D("0.63")
    r4 = bill(cat, [("c1", JAN, "A", 1200)], as_of=utc(2026, 3, 25), frozen=f2)   # nothing new: the same
    assert lines_of(r4, MAR, "discount").rows() == lines_of(r3, MAR, "discount").rows()
