"""The shared invoicing cases (SPEC §5), transcribed, through the public periods/invoicing API."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import polars as pl

from transforms.pricing import build_invoices, burn_down_order, customer_periods, grant_from_credit
from catalog.config import Credit

from tests.pricing.helpers import catalog, check_invariants, one, plan, reward_usage, usage, utc

UNIT = {"model": "per_unit", "unit_price": "0.01"}


def _book(subtotals, grants, *, start="2026-01-01", promotions=(), lines=None, fees=()):
    """One customer on a monthly plan whose item A bills `subtotals[k]` in period k."""
    cat = catalog(plans=[plan("p", items=lines or [("A", UNIT)], fees=fees)],
                  subscriptions=[{"subscription_id": "s1", "customer_id": "c1", "plan_id": "p", "start": start}],
                  credits=grants, promotions=promotions)
    periods = customer_periods(cat, "c1", until=utc(2026, 1, 1) + dt.timedelta(days=31 * len(subtotals) - 15))
    assert len(periods) == len(subtotals)
    u = usage(("c1", p.start, "A", D(s) * 100) for p, s in zip(periods, subtotals))
    return cat, periods, u


def test_amberflo_prepaid_applied():
    cat, periods, u = _book(["6794.03"], [{"grant_id": "g1", "customer_id": "c1", "amount": "1000.00",
                                          "currency": "USD", "effective_at": "2026-01-01"}])
    r = build_invoices(cat, periods, u, as_of=utc(2026, 3, 1))
    inv = r.invoices.row(0, named=True)
    assert (inv["subtotal"], inv["discount"], inv["credits_applied"], inv["total_due"]) == (
        D("6794.03"), D(0), D("1000.00"), D("5794.03"))
    assert one(r.credit_ledger, grant_id="g1")["balance_after"] == D(0)
    assert one(r.line_items, kind="credit")["grant_id"] == "g1"
    check_invariants(r)


def test_prepaid_carry_over_across_two_invoices():
    cat, periods, u = _book(["850.00", "200.00"], [{"grant_id": "g1", "customer_id": "c1", "amount": "1000.00",
                                                   "currency": "USD", "effective_at": "2026-01-01"}])
    r = build_invoices(cat, periods, u, as_of=utc(2026, 4, 1))
    got = [(i["credits_applied"], i["total_due"]) for i in r.invoices.iter_rows(named=True)]
    assert got == [(D("850.00"), D("0.00")), (D("150.00"), D("50.00"))]
    led = r.credit_ledger.filter(pl.col("entry") == "draw")
    assert led["balance_before"].to_list() == [D(1000), D(150)]
    assert led["balance_after"].to_list() == [D(150), D(0)]
    assert led["invoice_id"].to_list() == r.invoices["invoice_id"].to_list()
    check_invariants(r)


BURN = [
    {"grant_id": "g1", "priority": 10, "expires_at": "2026-03-01"},
    {"grant_id": "g2", "priority": 5, "expires_at": None},
    {"grant_id": "g3", "priority": 10, "expires_at": "2026-02-15"},
    {"grant_id": "g4", "priority": 10, "expires_at": None},
]


def test_burn_down_order():
    grants = [grant_from_credit(Credit.model_validate({**g, "customer_id": "c1", "amount": "10", "currency": "USD",
                                                       "effective_at": "2026-01-01"})) for g in BURN]
    assert [g.grant_id for g in burn_down_order(grants)] == ["g2", "g3", "g1", "g4"]


def test_burn_down_order_on_an_invoice():
    grants = [{**g, "customer_id": "c1", "amount": "10", "currency": "USD", "effective_at": "2026-01-01"} for g in BURN]
    cat, periods, u = _book(["25.00"], grants)
    r = build_invoices(cat, periods, u, as_of=utc(2026, 1, 20))
    credit = r.line_items.filter(pl.col("kind") == "credit")
    assert credit["grant_id"].to_list() == ["g2", "g3", "g1"]
    assert credit["amount"].to_list() == [D(10), D(10), D(5)]
    draws = r.credit_ledger.filter(pl.col("entry") == "draw")
    assert draws["grant_id"].to_list() == ["g2", "g3", "g1", "g4"]
    assert draws["drawn"].to_list() == [D(10), D(10), D(5), D(0)]
    assert one(r.invoices)["total_due"] == D(0)
    assert one(r.invoices)["status"] == "draft"


def test_promotions_then_credits():
    cat, periods, _ = _book(["1"], [{"grant_id": "g1", "customer_id": "c1", "amount": "100.00", "currency": "USD",
                                     "effective_at": "2026-01-01"}],
                            lines=[("A", UNIT), ("B", UNIT)],
                            fees=[{"fee_id": "platform", "amount": "99.00"}],
                            promotions=[
                                {"promotion_id": "a10", "customer_id": "c1", "type": "percentage", "value": "10",
                                 "applies_to": "A", "start": "2026-01-01"},
                                {"promotion_id": "flat50", "customer_id": "c1", "type": "fixed", "value": "50",
                                 "applies_to": "invoice", "start": "2026-01-01"}])
    u = usage([("c1", periods[0].start, "A", 20000), ("c1", periods[0].start, "B", 10000)])
    r = build_invoices(cat, periods, u, as_of=utc(2026, 3, 1))
    inv = one(r.invoices)
    assert (inv["subtotal"], inv["discount"], inv["credits_applied"], inv["total_due"]) == (
        D("399.00"), D("70.00"), D("100.00"), D("229.00"))
    disc = r.line_items.filter(pl.col("kind") == "discount")
    assert dict(zip(disc["promotion_id"].to_list(), disc["amount"].to_list())) == {"a10": D(20), "flat50": D(50)}
    assert one(disc, promotion_id="a10")["product_item_id"] == "A"
    check_invariants(r)


def test_fee_proration():
    cat = catalog(plans=[plan("p", fees=[{"fee_id": "platform", "amount": "99.00", "cadence": "recurring",
                                          "prorate": True}])],
                  subscriptions=[{"subscription_id": "s1", "customer_id": "c1", "plan_id": "p",
                                  "start": "2026-01-01", "end": "2026-01-16"}])
    periods = customer_periods(cat, "c1", until=utc(2026, 6, 1))
    assert [(p.start, p.end) for p in periods] == [(utc(2026, 1, 1), utc(2026, 1, 16))]
    r = build_invoices(cat, periods, usage([]), as_of=utc(2026, 6, 1))
    fee = one(r.line_items, kind="fee")
    assert fee["amount"] == D("47.90")    # 99 × 15/31 = 47.903… rounded half-up
    assert one(r.invoices)["fees_amount"] == D("47.90")


def test_month_end_anchor_invoices():
    cat = catalog(plans=[plan("p", items=[("A", UNIT)])],
                  subscriptions=[{"subscription_id": "s1", "customer_id": "c1", "plan_id": "p", "start": "2026-01-31"}])
    periods = customer_periods(cat, "c1", until=utc(2026, 6, 1))
    r = build_invoices(cat, periods, usage([]), as_of=utc(2026, 6, 1))
    assert [d.date().isoformat() for d in r.invoices["period_start"].to_list()] == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]
    assert r.invoices["status"].to_list() == ["final"] * 4 + ["draft"]


def test_amberflo_rewards_earned_at_period_end():
    cat = catalog(plans=[plan("p", items=[("A", UNIT)])],
                  subscriptions=[{"subscription_id": "s1", "customer_id": "c1", "plan_id": "p", "start": "2026-01-01"}],
                  rewards=[{"reward_id": "r5", "customer_id": "*", "meter_api_name": "api_calls", "per_units": 5,
                            "credit": "1.00"}])
    periods = customer_periods(cat, "c1", until=utc(2026, 2, 15))
    u = usage([("c1", periods[0].start, "A", 1000), ("c1", periods[1].start, "A", 1000)])  # 10.00 each
    ru = reward_usage([("c1", periods[0].start, "api_calls", 23)])
    r = build_invoices(cat, periods, u, as_of=utc(2026, 2, 15), reward_usage=ru)
    jan, feb = r.invoices.iter_rows(named=True)
    assert jan["credits_applied"] == D(0)           # effective at the period end: not on January
    assert feb["credits_applied"] == D("4.00")      # floor(23 / 5) × 1.00
    draw = one(r.credit_ledger, entry="draw")
    assert draw["grant_id"] == "reward:r5:c1:20260101T000000Z" and draw["balance_before"] == D("4.00")
    assert draw["at"] == periods[1].end
