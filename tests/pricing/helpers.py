"""Small builders for pricing tests: a catalogue from plain dicts, usage frames, instants."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Iterable, Optional

import polars as pl

from catalog.config import Catalog, Credit, Currency, Customer, Meter, Plan, ProductItem, Promotion, Reward, Settings, Subscription
from catalog.schemas import DEC, DIMS, TS

UTC = dt.timezone.utc
D = Decimal


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def catalog(
    *,
    plans: Iterable[dict],
    subscriptions: Iterable[dict] = (),
    customers: Iterable[dict] | None = None,
    items: Iterable[str] | None = None,
    credits: Iterable[dict] = (),
    promotions: Iterable[dict] = (),
    rewards: Iterable[dict] = (),
    currencies: Iterable[dict] = (),
    settings: Optional[dict] = None,
) -> Catalog:
    """A validated catalogue; product items (one meter each, `m_<item>`) default to the plans' items."""
    plans = [Plan.model_validate(p) for p in plans]
    subs = [Subscription.model_validate(s) for s in subscriptions]
    if customers is None:
        customers = [{"customer_id": c, "customer_name": c} for c in sorted({s.customer_id for s in subs} | {"c1"})]
    custs = [Customer.model_validate(c) for c in customers]
    if items is None:
        items = sorted({it.product_item_id for p in plans for it in p.items}
                       | {pid for c in credits for pid in (c.get("product_item_ids") or [])})
    items = list(items)
    meters = {f"m_{i}": Meter(meter_api_name=f"m_{i}", type="sum") for i in items}
    for r in rewards:
        meters.setdefault(r["meter_api_name"], Meter(meter_api_name=r["meter_api_name"], type="sum"))
    return Catalog(
        customers={c.customer_id: c for c in custs},
        meters=meters,
        product_items={i: ProductItem(product_item_id=i, meter_api_name=f"m_{i}") for i in items},
        plans={p.plan_id: p for p in plans},
        subscriptions={s.subscription_id: s for s in subs},
        credits={c["grant_id"]: Credit.model_validate(c) for c in credits},
        promotions={p["promotion_id"]: Promotion.model_validate(p) for p in promotions},
        rewards={r["reward_id"]: Reward.model_validate(r) for r in rewards},
        currencies={c["code"]: Currency.model_validate(c) for c in currencies},
        settings=Settings.model_validate(settings or {}),
    )


def plan(plan_id: str = "p", currency: str = "USD", interval: str = "month", count: int = 1,
         items: Iterable[tuple[str, dict]] = (), fees: Iterable[dict] = ()) -> dict:
    return {"plan_id": plan_id, "currency": currency, "billing_period": {"interval": interval, "count": count},
            "items": [{"product_item_id": i, "price": p} for i, p in items], "fees": list(fees)}


def usage(rows: Iterable[tuple[Any, ...]]) -> pl.DataFrame:
    """Rows (customer_id, period_start, product_item_id, quantity[, dimensions dict])."""
    cols: dict[str, list] = {"customer_id": [], "period_start": [], "product_item_id": [], "dimensions": [], "quantity": []}
    for r in rows:
        cols["customer_id"].append(r[0])
        cols["period_start"].append(r[1])
        cols["product_item_id"].append(r[2])
        cols["quantity"].append(str(r[3]))
        dims = r[4] if len(r) > 4 else None
        cols["dimensions"].append(None if dims is None else [{"key": k, "value": v} for k, v in dims.items()])
    return pl.DataFrame({
        "customer_id": pl.Series(cols["customer_id"], dtype=pl.String),
        "period_start": pl.Series(cols["period_start"], dtype=TS),
        "product_item_id": pl.Series(cols["product_item_id"], dtype=pl.String),
        "dimensions": pl.Series(cols["dimensions"], dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.String}))).cast(DIMS),
        "quantity": pl.Series(cols["quantity"], dtype=pl.String).cast(DEC),
    })


def reward_usage(rows: Iterable[tuple[str, dt.datetime, str, Any]]) -> pl.DataFrame:
    rows = list(rows)
    return pl.DataFrame({
        "customer_id": pl.Series([r[0] for r in rows], dtype=pl.String),
        "period_start": pl.Series([r[1] for r in rows], dtype=TS),
        "meter_api_name": pl.Series([r[2] for r in rows], dtype=pl.String),
        "quantity": pl.Series([str(r[3]) for r in rows], dtype=pl.String).cast(DEC),
    })


def by_kind(lines: pl.DataFrame, invoice_id: str | None = None) -> dict[str, list[Decimal]]:
    df = lines if invoice_id is None else lines.filter(pl.col("invoice_id") == invoice_id)
    out: dict[str, list[Decimal]] = {}
    for k, a in zip(df["kind"].to_list(), df["amount"].to_list()):
        out.setdefault(k, []).append(a)
    return out


def one(df: pl.DataFrame, **eq: Any) -> dict:
    """The only row of `df` matching column == value filters, as a dict."""
    for k, v in eq.items():
        df = df.filter(pl.col(k).is_null() if v is None else pl.col(k) == v)
    assert df.height == 1, f"expected one row for {eq}, got {df.height}"
    return df.row(0, named=True)


def check_invariants(result) -> None:
    """SPEC §7 invariants: amounts = sums of lines by kind; total_due ≥ 0; ledger balances ≥ 0;
    every amount has at most the currency's minor units (checked by the caller's currency)."""
    lines = result.line_items
    sums = lines.group_by("invoice_id", "kind").agg(pl.col("amount").sum()).rows()
    per: dict[str, dict[str, Decimal]] = {}
    for iid, kind, amt in sums:
        per.setdefault(iid, {})[kind] = amt
    for inv in result.invoices.iter_rows(named=True):
        s = per.get(inv["invoice_id"], {})
        z = Decimal(0)
        assert inv["usage_amount"] == s.get("usage", z)
        assert inv["fees_amount"] == s.get("fee", z)
        assert inv["minimums_amount"] == s.get("minimum", z)
        assert inv["adjustments_amount"] == s.get("adjustment", z)
        assert inv["subtotal"] == inv["usage_amount"] + inv["fees_amount"] + inv["minimums_amount"] + inv["adjustments_amount"]
        assert inv["discount"] == s.get("discount", z)
        assert inv["credits_applied"] == s.get("credit", z)
        assert inv["total_due"] >= 0
        assert inv["total_due"] == max(inv["subtotal"] - inv["discount"] - inv["credits_applied"], z)
    for kind in ("discount", "credit"):
        assert all(a >= 0 for a in lines.filter(pl.col("kind") == kind)["amount"].to_list())
    led = result.credit_ledger
    for col in ("balance_before", "drawn", "expired", "balance_after"):
        assert all(v >= 0 for v in led[col].to_list()), col
    for r in led.iter_rows(named=True):
        assert r["balance_after"] == r["balance_before"] - r["drawn"] - r["expired"]
