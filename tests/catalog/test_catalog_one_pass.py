"""Every problem in one pass (SPEC §3): cross-file references are checked even when records are invalid.

A reference to a record that exists but is invalid is not "missing" (its own problem is reported);
a reference to a record that is nowhere is.
"""

from tests.catalog.conftest import problems, write


def test_product_item_naming_a_missing_meter_is_reported_beside_an_invalid_meter(tmp_path):
    cat = write(tmp_path, {
        "meters.yaml": """
            - {meter_api_name: api_calls, type: bogus}
            - {meter_api_name: storage_gb, type: sum}
        """,
        "product_items.yaml": """
            - {product_item_id: api, meter_api_name: api_calls}
            - {product_item_id: disk, meter_api_name: nope}
            - {product_item_id: ghost, meter_api_name: ghost_meter, filter: {region: []}}
        """,
        "plans.yaml": """
            - plan_id: basic
              currency: USD
              billing_period: {interval: month}
              items:
                - {product_item_id: api, price: {model: per_unit, unit_price: "0.01"}}
                - {product_item_id: missing_item, price: {model: per_unit, unit_price: "0.01"}}
                - {product_item_id: ghost, price: {model: per_unit, unit_price: "0.01"}}
        """,
    })
    p = problems(cat)
    assert p[0].startswith("catalog/meters.yaml: record 1 (meter_api_name=api_calls): type: Input should be 'sum'")
    assert p[1:] == [
        "catalog/product_items.yaml: record 3 (product_item_id=ghost): filter: filter 'region' needs at least one value",
        "catalog/product_items.yaml: record 2 (product_item_id=disk): meter_api_name: unknown meter 'nope'",
        "catalog/product_items.yaml: record 3 (product_item_id=ghost): meter_api_name: unknown meter 'ghost_meter'",
        "catalog/plans.yaml: record 1 (plan_id=basic): items[1].product_item_id: unknown product item 'missing_item'",
    ]


def test_subscription_of_a_missing_customer_is_reported_beside_an_invalid_customer(tmp_path):
    cat = write(tmp_path, {
        "customers.yaml": """
            - {customer_id: c1, customer_name: One Corp, timezone: Mars/Olympus}
            - {customer_id: c2, customer_name: Two Ltd}
        """,
        "subscriptions.yaml": """
            - {subscription_id: s1, customer_id: c1, plan_id: basic, start: 2026-01-01}
            - {subscription_id: s2, customer_id: c2, plan_id: basic, start: not-a-date}
            - {subscription_id: s3, customer_id: c9, plan_id: basic, start: 2026-01-01}
        """,
        "credits.yaml": """
            - {grant_id: g1, customer_id: c1, amount: "5", currency: USD, effective_at: 2026-01-01}
            - {grant_id: g2, customer_id: c7, amount: "-5", currency: USD, effective_at: 2026-01-01}
        """,
    })
    assert problems(cat) == [
        "catalog/customers.yaml: record 1 (customer_id=c1): timezone: unknown IANA time zone 'Mars/Olympus'",
        "catalog/subscriptions.yaml: record 2 (subscription_id=s2): start: not a date or an ISO-8601 instant: "
        "'not-a-date'",
        "catalog/credits.yaml: record 2 (grant_id=g2): amount: must be ≥ 0",
        "catalog/subscriptions: record 3 (subscription_id=s3): customer_id: unknown customer 'c9'",
        "catalog/credits: record 2 (grant_id=g2): customer_id: unknown customer 'c7'",
    ]


def test_cross_reference_record_numbers_count_every_record_of_the_file(tmp_path):
    # the duplicate is record 2 of the file; the unknown plan is record 3, not the 2nd valid record
    cat = write(tmp_path, {"subscriptions.yaml": """
        - {subscription_id: s1, customer_id: c1, plan_id: basic, start: 2026-01-01}
        - {subscription_id: s1, customer_id: c2, plan_id: basic, start: 2026-01-01}
        - {subscription_id: s3, customer_id: c2, plan_id: gold, start: 2026-03-01}
    """})
    assert problems(cat) == [
        "catalog/subscriptions.yaml: record 2 (subscription_id=s1): subscription_id: duplicate subscription_id 's1'",
        "catalog/subscriptions: record 3 (subscription_id=s3): plan_id: unknown plan 'gold'",
    ]
