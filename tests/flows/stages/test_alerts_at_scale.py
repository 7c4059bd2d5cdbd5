"""The alerts stage over a customer base does per-customer work only in frames: no catalogue model
per customer, the billing periods of every customer asked of pricing at once, each calendar
window made once per time zone (SPEC §6's windows are the customer's local ones)."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal as D

import polars as pl
import pytest

from catalog import Lake, load_catalog
from tests.transforms.metering.support import event, events_frame
from transforms.pricing import all_customer_periods

UTC = dt.timezone.utc
AS_OF = dt.datetime(2026, 2, 2, tzinfo=UTC)
ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata"]
N = 300

ALERTS = """\
- {alert_id: busy-day, name: busy, metric: usage, meter_api_name: calls, scope: per_customer, window: day,
   condition: greater_than, threshold: 20}
- {alert_id: quiet-week, name: quiet, metric: usage, meter_api_name: calls, scope: per_customer, window: week,
   condition: less_than, threshold: 5}
- {alert_id: period-calls, name: period, metric: usage, meter_api_name: calls, scope: per_customer,
   window: billing_period, condition: greater_than, threshold: 30}
- {alert_id: big-spender, name: spend, metric: spend, scope: per_customer, window: billing_period,
   condition: greater_than, threshold: 100}
- {alert_id: calls-jump, name: jump, metric: usage, meter_api_name: calls, scope: all_customers, window: day,
   condition: percent_change_above, threshold: 50}
- {alert_id: low-balance, name: balance, metric: prepaid_balance, scope: per_customer, window: day,
   condition: less_than, threshold: 5}
"""


@pytest.fixture
def lake(tmp_path) -> Lake:
    cat = tmp_path / "lake" / "catalog"
    cat.mkdir(parents=True)
    (cat / "meters.yaml").write_text("- {meter_api_name: calls, type: sum}\n")
    (cat / "product_items.yaml").write_text("- {product_item_id: api, name: API calls, meter_api_name: calls}\n")
    (cat / "plans.yaml").write_text(
        "- plan_id: basic\n  currency: USD\n  billing_period: {interval: month, count: 1}\n"
        "  items:\n    - {product_item_id: api, price: {model: per_unit, unit_price: \"0.01\"}}\n")
    ids = [f"cus_{i:04d}" for i in range(N)]
    (cat / "customers.yaml").write_text("".join(
        f"- {{customer_id: {c}, customer_name: Customer {i}, timezone: {ZONES[i % len(ZONES)]}}}\n"
        for i, c in enumerate(ids)))
    (cat / "subscriptions.yaml").write_text("".join(
        f"- {{subscription_id: sub_{i:04d}, customer_id: {c}, plan_id: basic, start: 2025-12-01}}\n"
        for i, c in enumerate(ids)))
    (cat / "credits.yaml").write_text("".join(
        f"- {{grant_id: g_{i:04d}, customer_id: {ids[i]}, amount: \"25.00\", currency: USD, "
        f"effective_at: 2026-01-01, priority: 10}}\n" for i in range(0, N, 10)))
    (cat / "alerts.yaml").write_text(ALERTS)
    lk = Lake(tmp_path / "lake")
    rows = [event(dt.datetime(2026, 1, 31, 12, tzinfo=UTC), 1 + i % 40, customer=c, meter="calls", uid=f"u{i}")
            for i, c in enumerate(ids)]
    lk.write("events", events_frame(rows).with_columns(pl.col("event_time").dt.date().alias("event_date")))
    return lk


def test_alerts_stage_builds_no_customer_models(lake, monkeypatch):
    """Time zones come from the catalogue's column (cat.timezones()), not from a model per customer."""
    from flows.stages.alerts import run_alerts

    cat = load_catalog(lake.catalog_dir)

    def no_model(pos):
        raise AssertionError("a customer model was built")

    monkeypatch.setattr(cat.customers, "_at", no_model)
    summary = run_alerts(lake, cat, AS_OF, deliver=False)
    fired = lake.read("alerts_fired")
    assert summary["fired"] == fired.height > 0
    # as of Feb 2 00:00 UTC the last complete local day holds the Jan 31 12:00 UTC event only in
    # New York (Jan 31 05:00Z to Feb 1 05:00Z; i % 4 == 2): 1 + i % 40 calls, over 20 for i % 40 in
    # 22, 26, 30, 34, 38: 5 of each 40 customers below 280, none of 280..299
    busy = fired.filter(pl.col("alert_id") == "busy-day")
    assert busy.height == 35
    assert busy.filter(pl.col("customer_id") == "cus_0022").select("window_start", "current_value", "message").rows() == [
        (dt.datetime(2026, 1, 31, 5, tzinfo=UTC), D(23), "cus_0022: calls 23 > 20 in day of 2026-01-31")]


def test_values_all_asks_pricing_for_every_customers_periods_at_once(lake, monkeypatch):
    """One all_customer_periods call for the base, not customer_periods 300 times."""
    stage = importlib.import_module("flows.stages.alerts")
    calls = []
    monkeypatch.setattr(stage, "all_customer_periods", lambda *a, **k: calls.append(a) or all_customer_periods(*a, **k),
                        raising=False)

    def one_at_a_time(*a, **k):
        raise AssertionError("customer_periods called for one customer")

    monkeypatch.setattr(stage, "customer_periods", one_at_a_time)
    cat = load_catalog(lake.catalog_dir)
    vals = stage.values_all(lake, cat, AS_OF)["period-calls"]
    assert len(calls) == 1
    # Tokyo's January: 2025-12-31 15:00Z to 2026-01-31 15:00Z, complete; February in progress
    tokyo = vals.filter(pl.col("customer_id") == "cus_0001").select("window_start", "window_end", "value", "complete")
    assert tokyo.rows() == [
        (dt.datetime(2025, 11, 30, 15, tzinfo=UTC), dt.datetime(2025, 12, 31, 15, tzinfo=UTC), D(0), True),
        (dt.datetime(2025, 12, 31, 15, tzinfo=UTC), dt.datetime(2026, 1, 31, 15, tzinfo=UTC), D(2), True),
        (dt.datetime(2026, 1, 31, 15, tzinfo=UTC), dt.datetime(2026, 2, 28, 15, tzinfo=UTC), D(0), False),
    ]


def test_alert_windows_are_made_per_zone_not_per_customer(lake, monkeypatch):
    """Calendar windows once per zone, billing-period windows from the periods frame: never a call
    per customer; each customer still has its own zone's windows."""
    values = importlib.import_module("transforms.alerts.values")
    calls = []
    real = values.alert_windows
    monkeypatch.setattr(values, "alert_windows", lambda *a, **k: calls.append(a) or real(*a, **k))
    stage = importlib.import_module("flows.stages.alerts")
    cat = load_catalog(lake.catalog_dir)
    vals = stage.values_all(lake, cat, AS_OF)
    assert len(calls) <= len(cat.alerts) * len(ZONES)
    for alert_id in ("busy-day", "quiet-week"):
        got = vals[alert_id]
        for c in ("cus_0000", "cus_0001", "cus_0002", "cus_0003"):
            w = real(cat.alerts[alert_id], AS_OF, cat.timezone(c))
            mine = got.filter(pl.col("customer_id") == c)
            assert mine.select("window_start", "window_end", "complete").rows() == [
                (*w.before_last, True), (*w.last_complete, True), (*w.current, False)]
    star = vals["calls-jump"]  # all customers: UTC days, a Tokyo customer's too
    assert star.filter(pl.col("customer_id") == "cus_0001")["window_start"].to_list() == [
        dt.datetime(2026, 1, 31, tzinfo=UTC), dt.datetime(2026, 2, 1, tzinfo=UTC), dt.datetime(2026, 2, 2, tzinfo=UTC)]
