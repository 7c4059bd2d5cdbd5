"""Issue 5 end to end: `meterbill run` on a small lake, invoices worked out by hand.

Two customers on different plans:

* acme changes plan mid-period — `starter` (anchored 2026-01-01) ends at 2026-01-16T00:00Z and
  `growth` starts there (anchored 2026-01-16) — and has one prepaid grant of 20.00 USD;
* beta is on `credits`, a plan priced in the custom currency CRD (1 CRD = 0.25 EUR), with one
  promotion (15 % off its first invoice).

The run is as of 2026-02-20T00:00Z with the default 24 h grace period.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import Lake
from tests.e2e.conftest import write_lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

CATALOG = {
    "customers.yaml": """
        - {customer_id: acme, customer_name: Acme Corp}
        - {customer_id: beta, customer_name: Beta GmbH}
    """,
    "meters.yaml": """
        - {meter_api_name: api_calls, label: API calls, type: sum, unit: calls}
    """,
    "product_items.yaml": """
        - {product_item_id: api, name: API calls, meter_api_name: api_calls}
    """,
    "plans.yaml": """
        - plan_id: starter
          currency: USD
          billing_period: {interval: month, count: 1}
          fees: [{fee_id: platform, name: Platform fee, amount: "30.00", cadence: recurring, prorate: true}]
          items:
            - product_item_id: api
              price:
                model: graduated
                tiers:
                  - {up_to: 1000, unit_price: "0"}
                  - {up_to: null, unit_price: "0.01"}
        - plan_id: growth
          currency: USD
          billing_period: {interval: month, count: 1}
          fees:
            - {fee_id: platform, name: Platform fee, amount: "50.00", cadence: recurring}
            - {fee_id: onboarding, name: Onboarding, amount: "25.00", cadence: one_time, prepayable: false}
          items:
            - product_item_id: api
              price:
                model: volume
                tiers:
                  - {up_to: 5000, unit_price: "0.008"}
                  - {up_to: null, unit_price: "0.006"}
        - plan_id: credits
          currency: CRD
          billing_period: {interval: month, count: 1}
          items:
            - {product_item_id: api, price: {model: package, package_size: 100, package_price: "3"}}
    """,
    "subscriptions.yaml": """
        - {subscription_id: acme-1, customer_id: acme, plan_id: starter, start: 2026-01-01, end: 2026-01-16}
        - {subscription_id: acme-2, customer_id: acme, plan_id: growth, start: 2026-01-16}
        - {subscription_id: beta-1, customer_id: beta, plan_id: credits, start: 2026-01-01}
    """,
    "credits.yaml": """
        - {grant_id: acme-prepaid, customer_id: acme, amount: "20.00", currency: USD, effective_at: 2026-01-01}
    """,
    "promotions.yaml": """
        - {promotion_id: welcome, customer_id: beta, type: percentage, value: "15", applies_to: invoice,
           start: 2026-01-01, periods: 1}
    """,
    "currencies.yaml": """
        - {code: CRD, name: Beta credits, minor_units: 2, base_currency: EUR, rate: "0.25"}
    """,
}


def ev(customer, uid, when, value):
    t = dt.datetime.fromisoformat(when).replace(tzinfo=dt.timezone.utc)
    return {"customer_id": customer, "meter_api_name": "api_calls", "meter_value": value,
            "meter_time_in_millis": int(t.timestamp() * 1000), "unique_id": uid}


EVENTS = [
    ev("acme", "a1", "2026-01-10T09:00:00", 1500),   # starter period [01-01, 01-16)
    ev("acme", "a2", "2026-01-20T09:00:00", 3000),   # growth period [01-16, 02-16)
    ev("acme", "a3", "2026-02-10T09:00:00", 2500),   # growth period [01-16, 02-16)
    ev("acme", "a4", "2026-02-18T09:00:00", 400),    # growth period [02-16, 03-16), open
    ev("beta", "b1", "2026-01-12T09:00:00", 1000),   # credits period [01-01, 02-01)
    ev("beta", "b2", "2026-01-25T09:00:00", 234),
    ev("beta", "b3", "2026-02-03T09:00:00", 250),    # credits period [02-01, 03-01), open
]

AS_OF = "2026-02-20T00:00:00Z"


def utc(*args):
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


@pytest.fixture
def priced_lake(tmp_path, cli):
    lake = write_lake(tmp_path / "lake", EVENTS, CATALOG)
    code, out, err = cli("run", "--lake", lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 0, err
    return lake


def test_run_prices_plan_change_grant_promotion_and_custom_currency_by_hand(priced_lake):
    lk = Lake(priced_lake)
    inv = {(r["customer_id"], r["period_start"]): r for r in lk.read("invoices").iter_rows(named=True)}
    assert sorted((c, f"{s:%m-%d}", inv[(c, s)]["plan_id"], inv[(c, s)]["status"]) for c, s in inv) == [
        ("acme", "01-01", "starter", "final"),   # cut short by the plan change at 01-16
        ("acme", "01-16", "growth", "final"),    # ended 02-16, grace over 02-17
        ("acme", "02-16", "growth", "draft"),    # open
        ("beta", "01-01", "credits", "final"),
        ("beta", "02-01", "credits", "draft"),   # open
    ]
    cols = ("usage_amount", "fees_amount", "minimums_amount", "adjustments_amount", "subtotal", "discount",
            "credits_applied", "total_due", "currency", "base_currency", "total_due_base")

    def amounts(c, s):
        r = inv[(c, s)]
        return tuple(r[k] if isinstance(r[k], str) else r[k] for k in cols)

    D = Decimal
    # acme, starter [01-01, 01-16): 15 of 31 days, cut short by the plan change.
    #   usage 1500 calls, graduated: first 1000 at 0, 500 × 0.01 = 5.00
    #   platform fee prorated: 30.00 × 15 d / 31 d = 14.5161… → 14.52
    #   subtotal 19.52; prepaid grant (20.00) pays 19.52 → total due 0.00, 0.48 left
    assert amounts("acme", utc(2026, 1, 1)) == (
        D("5.00"), D("14.52"), D("0.00"), D("0.00"), D("19.52"), D("0.00"), D("19.52"), D("0.00"),
        "USD", "USD", D("0.00"))
    # acme, growth [01-16, 02-16): 3000 + 2500 = 5500 calls, volume: all at tier 2 (> 5000):
    #   5500 × 0.006 = 33.00; platform 50.00 + onboarding 25.00 (first period of the
    #   subscription, not prepayable) = 75.00; subtotal 108.00
    #   grant pays what is left of it, 0.48, of the prepayable 83.00 → total due 107.52
    assert amounts("acme", utc(2026, 1, 16)) == (
        D("33.00"), D("75.00"), D("0.00"), D("0.00"), D("108.00"), D("0.00"), D("0.48"), D("107.52"),
        "USD", "USD", D("107.52"))
    # acme, growth [02-16, 03-16), draft: 400 calls × 0.008 (tier 1) = 3.20 + platform 50.00
    #   (no onboarding any more) = 53.20; the grant is used up → 53.20
    assert amounts("acme", utc(2026, 2, 16)) == (
        D("3.20"), D("50.00"), D("0.00"), D("0.00"), D("53.20"), D("0.00"), D("0.00"), D("53.20"),
        "USD", "USD", D("53.20"))
    # beta, credits [01-01, 02-01) in CRD: 1000 + 234 = 1234 calls → ceil(12.34) = 13 packages
    #   × 3 = 39.00 CRD; promotion 15 % of 39.00 = 5.85 → total due 33.15 CRD
    #   in EUR: 33.15 × 0.25 = 8.2875 → 8.29 (half-up, 2 minor units)
    assert amounts("beta", utc(2026, 1, 1)) == (
        D("39.00"), D("0.00"), D("0.00"), D("0.00"), D("39.00"), D("5.85"), D("0.00"), D("33.15"),
        "CRD", "EUR", D("8.29"))
    # beta, credits [02-01, 03-01), draft: 250 calls → 3 packages × 3 = 9.00 CRD; the promotion
    #   was for one period only → 9.00 CRD = 2.25 EUR
    assert amounts("beta", utc(2026, 2, 1)) == (
        D("9.00"), D("0.00"), D("0.00"), D("0.00"), D("9.00"), D("0.00"), D("0.00"), D("9.00"),
        "CRD", "EUR", D("2.25"))

    # the lines behind them
    li = lk.read("line_items")
    starter = li.filter(pl.col("invoice_id") == inv[("acme", utc(2026, 1, 1))]["invoice_id"])
    assert sorted((r["kind"], r["amount"]) for r in starter.iter_rows(named=True)) == [
        ("credit", D("19.52")), ("fee", D("14.52")), ("usage", D("5.00"))]
    tiers = starter.filter(pl.col("kind") == "usage")["tiers"].to_list()[0]
    assert [(t["tier"], t["quantity"], t["amount"]) for t in tiers] == [(1, D(1000), D(0)), (2, D(500), D(5))]
    beta_jan = li.filter(pl.col("invoice_id") == inv[("beta", utc(2026, 1, 1))]["invoice_id"])
    d = beta_jan.filter(pl.col("kind") == "discount").row(0, named=True)
    assert (d["promotion_id"], d["amount"], d["currency"]) == ("welcome", D("5.85"), "CRD")

    # the credit ledger, in period order: 20.00 → 0.48 → 0.00, never below 0
    led = lk.read("credit_ledger").filter(pl.col("grant_id") == "acme-prepaid")
    by_invoice = {r["invoice_id"]: r for r in led.iter_rows(named=True)}
    first = by_invoice[inv[("acme", utc(2026, 1, 1))]["invoice_id"]]
    second = by_invoice[inv[("acme", utc(2026, 1, 16))]["invoice_id"]]
    assert (first["balance_before"], first["drawn"], first["balance_after"]) == (D("20.00"), D("19.52"), D("0.48"))
    assert (second["balance_before"], second["drawn"], second["balance_after"]) == (D("0.48"), D("0.48"), D("0.00"))
    # nothing drawn on the third invoice (nothing left); nothing expired
    third = by_invoice.get(inv[("acme", utc(2026, 2, 16))]["invoice_id"])
    assert third is None or third["drawn"] == 0
    assert led["expired"].fill_null(0).sum() == 0

    # every event was billed: nothing unbilled
    assert lk.read("unbilled_usage").height == 0


def test_invoice_tables_keep_the_invariants(priced_lake):
    lk = Lake(priced_lake)
    inv, li, led = lk.read("invoices"), lk.read("line_items"), lk.read("credit_ledger")
    # an invoice's amounts equal the sums of its lines by kind
    by_kind = {"usage": "usage_amount", "fee": "fees_amount", "minimum": "minimums_amount",
               "adjustment": "adjustments_amount", "discount": "discount", "credit": "credits_applied"}
    sums = li.pivot(on="kind", index="invoice_id", values="amount", aggregate_function="sum")
    joined = inv.join(sums, on="invoice_id", how="left")
    for kind, col in by_kind.items():
        line_sum = joined[kind].fill_null(0) if kind in joined.columns else pl.Series([Decimal(0)] * inv.height)
        assert (joined[col] == line_sum).all(), kind
    assert (inv["subtotal"] == inv["usage_amount"] + inv["fees_amount"] + inv["minimums_amount"]
            + inv["adjustments_amount"]).all()
    assert (inv["total_due"] == inv["subtotal"] - inv["discount"] - inv["credits_applied"]).all()
    # total_due ≥ 0; no ledger balance below 0
    assert (inv["total_due"] >= 0).all()
    assert (led["balance_before"] >= 0).all() and (led["balance_after"] >= 0).all()
    # line currencies are their invoice's
    assert li.join(inv.select("invoice_id", "currency"), on="invoice_id").filter(
        pl.col("currency") != pl.col("currency_right")).height == 0

    # money columns are DECIMAL in the Parquet files themselves
    money = {
        "invoices": ["usage_amount", "fees_amount", "minimums_amount", "adjustments_amount", "subtotal",
                     "discount", "credits_applied", "total_due", "total_due_base"],
        "line_items": ["quantity", "unit_price", "amount"],
        "credit_ledger": ["balance_before", "drawn", "expired", "balance_after"],
        "reconciliation": ["usage_quantity", "billed_quantity", "adjusted_quantity"],
    }
    for table, columns in money.items():
        files = sorted((priced_lake / "warehouse" / table).rglob("*.parquet"))
        assert files, table
        for f in files:
            schema = pq.read_schema(f)
            for c in columns:
                assert pa.types.is_decimal(schema.field(c).type), (table, c, schema.field(c).type)
            if table == "line_items":
                tier = schema.field("tiers").type.value_type
                for c in ("quantity", "unit_price", "flat_fee", "amount"):
                    assert pa.types.is_decimal(tier.field(c).type), ("tiers", c)
