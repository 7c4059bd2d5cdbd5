"""Price models (SPEC §5.1): every worked case of the shared pricing cases, and the formulas."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from catalog.config import Price, Tier
from transforms.pricing import (
    price_graduated,
    price_package,
    price_per_unit,
    price_volume,
    rate,
    resolve_price,
    round_money,
)

from tests.pricing.cases import PRICING_CASES


@pytest.mark.parametrize("case", PRICING_CASES, ids=[c["id"] for c in PRICING_CASES])
def test_worked_price_cases(case):
    price = Price.model_validate(case["price"])
    r = rate(D(case["quantity"]), price)
    usage = round_money(r.amount, 2)
    minimum = round_money(r.minimum_amount, 2)
    assert usage == D(case["expected_usage"])
    assert minimum == D(case["expected_minimum"])
    assert usage + minimum == D(case["expected_total"])
    # the breakdown explains the uncapped amount
    assert sum((t["amount"] for t in r.tiers), D(0)) == r.uncapped_amount


STRIPE_TIERS = [Tier(up_to=D(5), unit_price=D(7)), Tier(up_to=D(10), unit_price=D("6.5")), Tier(unit_price=D(6))]


@pytest.mark.parametrize("q,expected", [(5, "35"), (6, "41.5"), (20, "127.5"), (25, "157.5"), (0, "0")])
def test_graduated_stripe_table(q, expected):
    amount, unit_price, tiers = price_graduated(D(q), STRIPE_TIERS)
    assert amount == D(expected)
    assert unit_price is None


def test_graduated_breakdown_lists_entered_tiers_and_first_tier_flat_fee_at_zero():
    tiers = [Tier(up_to=D(10), unit_price=D(10), flat_fee=D(2)), Tier(up_to=D(20), unit_price=D(5), flat_fee=D(3)),
             Tier(unit_price=D(5), flat_fee=D(3))]
    amount, _, br = price_graduated(D(0), tiers)
    assert amount == D(2) and br == [(1, D(0), D(10), D(2), D(2))]
    amount, _, br = price_graduated(D(11), tiers)
    assert amount == D(110)
    assert [(t[0], t[1], t[4]) for t in br] == [(1, D(10), D(102)), (2, D(1), D(8))]
    amount, _, br = price_graduated(D(20), tiers)  # up_to is inclusive: tier 3 not entered
    assert amount == D(155) and len(br) == 2


def test_volume_uses_first_tier_with_q_at_most_up_to():
    assert price_volume(D(5), STRIPE_TIERS)[0] == D(35)       # boundary: tier 1
    assert price_volume(D(6), STRIPE_TIERS)[:2] == (D(39), D("6.5"))
    assert price_volume(D(11), STRIPE_TIERS)[:2] == (D(66), D(6))


def test_per_unit():
    assert price_per_unit(D(100), D(50))[0] == D(5000)
    assert price_per_unit(D("0.5"), D("0.002"))[0] == D("0.001")


@pytest.mark.parametrize("q,partial,expected", [(121, False, 1300), (120, False, 1200), (0, False, 0),
                                                 (121, True, "1210"), (D("0.1"), False, 100)])
def test_package(q, partial, expected):
    assert price_package(D(q), D(10), D(100), partial)[0] == D(expected)


def test_included_units_and_negative_quantity():
    p = Price(model="per_unit", unit_price=D("0.002"), included_units=D(1000))
    assert rate(D(1500), p).amount == D(1)
    assert rate(D(999), p).amount == D(0)
    assert rate(D(-5), Price(model="per_unit", unit_price=D(3))).amount == D(0)
    g = Price.model_validate({"model": "graduated", "tiers": [{"up_to": 10, "unit_price": "1", "flat_fee": "5"},
                                                              {"up_to": None, "unit_price": "2"}]})
    assert rate(D(-3), g).amount == D(5)  # a negative quantity prices as 0: tier 1's flat fee


def test_maximum_caps_before_minimum_true_up():
    p = Price(model="per_unit", unit_price=D(1), minimum=D(10), maximum=D(100))
    r = rate(D(500), p)
    assert (r.amount, r.uncapped_amount, r.minimum_amount, r.capped) == (D(100), D(500), D(0), True)
    r = rate(D(4), p)
    assert (r.amount, r.minimum_amount) == (D(4), D(6))


def test_rate_refuses_a_dimensioned_price_and_resolve_picks_the_combination():
    p = Price.model_validate({"model": "per_unit", "unit_price": "0", "dimensions": {
        "keys": ["region"], "rates": [{"match": {"region": "us"}, "price": {"model": "per_unit", "unit_price": "2"}}],
        "default": {"model": "per_unit", "unit_price": "3"}}})
    with pytest.raises(ValueError):
        rate(D(1), p)
    assert resolve_price(p, {"region": "us"}).unit_price == D(2)
    assert resolve_price(p, {"region": "eu"}).unit_price == D(3)
    assert resolve_price(p, {}).unit_price == D(3)
    no_default = p.model_copy(update={"dimensions": p.dimensions.model_copy(update={"default": None})})
    assert resolve_price(no_default, {"region": "eu"}) is None


@pytest.mark.parametrize("amount,minor,expected", [
    ("2.675", 2, "2.68"), ("2.665", 2, "2.67"), ("-2.675", 2, "-2.68"), ("2.6749999", 2, "2.67"),
    ("0.5", 0, "1"), ("1.5", 0, "2"), ("2.5", 0, "3"),          # JPY: half-up, not banker's
    ("1.0005", 3, "1.001"), ("1.00049", 3, "1.000"),            # BHD
    ("47.903225806451612903", 2, "47.90"), ("123456789012345678901234.5", 0, "123456789012345678901235"),
])
def test_round_money_half_up(amount, minor, expected):
    r = round_money(D(amount), minor)
    assert r == D(expected) and r.as_tuple().exponent == -minor
