"""Prices, tier prices, flat fees and fee amounts are never negative (SPEC §3): a discount is a promotion."""

from tests.catalog.conftest import problems, write

NEG = "must not be negative (a discount is a promotion)"


def test_negative_unit_prices_tier_prices_flat_fees_and_fee_amounts_are_refused(tmp_path):
    cat = write(tmp_path, {"plans.yaml": """
        - plan_id: basic
          currency: USD
          billing_period: {interval: month}
          fees: [{fee_id: base, amount: "-10.00"}]
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "-0.01", minimum: "-1", maximum: "-0.5"}}
        - plan_id: tiered
          currency: USD
          billing_period: {interval: month}
          items:
            - product_item_id: api
              price:
                model: graduated
                tiers:
                  - {up_to: 100, unit_price: "0", flat_fee: "-5"}
                  - {up_to: null, unit_price: -0.02}
        - plan_id: packs
          currency: USD
          billing_period: {interval: month}
          items:
            - {product_item_id: api, price: {model: package, package_size: 1000, package_price: "-3"}}
        - plan_id: by-region
          currency: USD
          billing_period: {interval: month}
          items:
            - product_item_id: api
              price:
                model: per_unit
                dimensions:
                  keys: [region]
                  rates: [{match: {region: eu}, price: {model: per_unit, unit_price: "-0.5"}}]
                  default: {model: per_unit, unit_price: "0.5"}
    """})
    assert problems(cat) == [
        f"catalog/plans.yaml: record 1 (plan_id=basic): fees[0].amount: {NEG}",
        f"catalog/plans.yaml: record 1 (plan_id=basic): items[0].price.unit_price: {NEG}",
        f"catalog/plans.yaml: record 1 (plan_id=basic): items[0].price.minimum: {NEG}",
        f"catalog/plans.yaml: record 1 (plan_id=basic): items[0].price.maximum: {NEG}",
        f"catalog/plans.yaml: record 2 (plan_id=tiered): items[0].price.tiers[0].flat_fee: {NEG}",
        f"catalog/plans.yaml: record 2 (plan_id=tiered): items[0].price.tiers[1].unit_price: {NEG}",
        f"catalog/plans.yaml: record 3 (plan_id=packs): items[0].price.package_price: {NEG}",
        f"catalog/plans.yaml: record 4 (plan_id=by-region): items[0].price.dimensions.rates[0].price.unit_price: {NEG}",
    ]


def test_zero_prices_and_fees_are_allowed(tmp_path):
    from catalog import load_catalog

    cat = load_catalog(write(tmp_path, {"plans.yaml": """
        - plan_id: basic
          currency: USD
          billing_period: {interval: month}
          fees: [{fee_id: base, amount: "0"}]
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "0", minimum: "0"}}
    """}))
    assert cat.plans["basic"].fees[0].amount == 0
    assert cat.plans["basic"].items[0].price.unit_price == 0


def test_negative_reward_credit_promotion_cap_and_currency_rate_are_refused(tmp_path):
    cat = write(tmp_path, {
        "rewards.yaml": """
            - {reward_id: r1, meter_api_name: api_calls, per_units: 100, credit: "-1"}
        """,
        "promotions.yaml": """
            - {promotion_id: p1, customer_id: c1, type: percentage, value: 10, start: 2026-01-01,
               max_discount_per_period: "-5"}
        """,
        "currencies.yaml": """
            - {code: CRD, name: Credits, minor_units: 2, base_currency: USD, rate: "0"}
        """,
    })
    got = problems(cat)
    assert any(p.startswith("catalog/rewards.yaml: record 1") and "credit" in p and "must not be negative" in p
               for p in got), got
    assert any(p.startswith("catalog/promotions.yaml: record 1") and "max_discount_per_period must be ≥ 0" in p
               for p in got), got
    assert any(p.startswith("catalog/currencies.yaml: record 1") and "rate" in p and "must be > 0" in p
               for p in got), got
