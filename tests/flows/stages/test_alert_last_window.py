"""A first `alerts` run on a lake with many complete windows judges the last complete one only (SPEC §6),
so one quiet customer gives one firing and one webhook POST, and each later run adds one window."""

import datetime as dt
import json
from decimal import Decimal as D

import polars as pl

from catalog import Lake, load_catalog
from flows.stages.alerts import run_alerts
from tests.transforms.metering.support import event, events_frame

UTC = dt.timezone.utc


def day(d: int) -> dt.datetime:
    return dt.datetime(2026, 1, d, tzinfo=UTC)


def write_lake(root, hook_url: str, tokyo: int = 20, extra_alerts: str = "") -> Lake:
    cat = root / "catalog"
    cat.mkdir(parents=True)
    (cat / "meters.yaml").write_text("- {meter_api_name: calls, type: sum}\n")
    (cat / "customers.yaml").write_text(
        "- {customer_id: acme, customer_name: Acme}\n"
        "- {customer_id: quiet, customer_name: Quiet Co}\n"
        "- {customer_id: tokyo, customer_name: Tokyo KK, timezone: Asia/Tokyo}\n")
    (cat / "alerts.yaml").write_text(f"""
- alert_id: quiet-day
  name: Under 10 calls a day
  metric: usage
  meter_api_name: calls
  scope: per_customer
  window: day
  condition: less_than
  threshold: 10
  channels:
    - {{type: webhook, url: "{hook_url}"}}
- alert_id: busy-day
  name: Over 40 calls a day
  metric: usage
  meter_api_name: calls
  scope: per_customer
  window: day
  condition: greater_than
  threshold: 40
""" + extra_alerts)
    lk = Lake(root)
    rows = []
    for d in range(1, 11):  # Jan 1..10 at 06:00 UTC (15:00 in Tokyo): acme 50 a day, quiet 3, tokyo 20
        for cust, v in (("acme", 50), ("quiet", 3), ("tokyo", tokyo)):
            rows.append(event(day(d) + dt.timedelta(hours=6), v, customer=cust, meter="calls", uid=f"{cust}{d}"))
    df = events_frame(rows).with_columns(pl.col("event_time").dt.date().alias("event_date"))
    lk.write("events", df)
    return lk


def test_first_alerts_run_fires_once_per_quiet_customer_and_posts_one_webhook(tmp_path, httpserver):
    httpserver.expect_request("/quiet", method="POST").respond_with_data("ok")
    lk = write_lake(tmp_path / "lake", httpserver.url_for("/quiet"))
    cat = load_catalog(lk.catalog_dir)

    # as of Jan 8 12:00 UTC: Jan 1..7 are complete, Jan 8 is in progress
    summary = run_alerts(lk, cat, day(8) + dt.timedelta(hours=12), deliver=True)
    fired = lk.read("alerts_fired").sort("alert_id", "customer_id", "window_start")
    got = [(r["alert_id"], r["customer_id"], r["window_start"], r["current_value"])
           for r in fired.iter_rows(named=True)]
    assert got == [
        ("busy-day", "acme", day(7), D(50)),   # the last complete day
        ("busy-day", "acme", day(8), D(50)),   # the day in progress (its 06:00 event is in)
        ("quiet-day", "quiet", day(7), D(3)),  # the last complete day only, not Jan 6 too
    ]
    assert summary["fired"] == 3 and summary["delivered"] == 1
    (req, _), = httpserver.log
    body = json.loads(req.get_data())
    assert (body["alert_id"], body["customer_id"], body["window_start"]) == ("quiet-day", "quiet",
                                                                             "2026-01-07T00:00:00Z")

    # a day later: one new window per alert, one more POST
    summary = run_alerts(lk, cat, day(9) + dt.timedelta(hours=12), deliver=True)
    new = lk.read("alerts_fired").filter(pl.col("fired_at") == day(9) + dt.timedelta(hours=12))
    assert sorted(new.select("alert_id", "customer_id", "window_start").rows()) == [
        ("busy-day", "acme", day(9)), ("quiet-day", "quiet", day(8))]
    assert summary["delivered"] == 1 and len(httpserver.log) == 2
    assert lk.read("deliveries").height == 2


def test_a_replay_at_every_midnight_fires_each_window_once(tmp_path):
    """What a backfill does (an alerts step at every UTC midnight): each day is judged once, when it
    is the last complete one, in the customer's own zone too; nothing before the replay's start."""
    lk = write_lake(tmp_path / "lake", "http://127.0.0.1:9/unused", tokyo=5)
    cat = load_catalog(lk.catalog_dir)
    for d in range(2, 12):  # Jan 2 00:00 .. Jan 11 00:00 UTC
        run_alerts(lk, cat, day(d), deliver=False)
    fired = lk.read("alerts_fired")
    assert fired.select("alert_id", "customer_id", "window_start").is_unique().all()
    tokyo_days = [day(d) - dt.timedelta(hours=9) for d in range(1, 11)]  # Tokyo Jan 1..10 (UTC+9)

    def starts(alert_id, customer):
        return sorted(fired.filter((pl.col("alert_id") == alert_id) & (pl.col("customer_id") == customer))
                      ["window_start"].to_list())

    assert starts("quiet-day", "quiet") == [day(d) for d in range(1, 11)]
    assert starts("quiet-day", "tokyo") == tokyo_days
    assert starts("quiet-day", "acme") == []
    # greater_than: Jan 1..10 (each first seen as the last complete day: at midnight the new day is empty)
    assert starts("busy-day", "acme") == [day(d) for d in range(1, 11)]
    assert fired.height == 30


def test_all_customers_sums_every_customer_in_one_utc_window(tmp_path):
    """The sum over all customers has no customer's zone: its windows are UTC days, and a customer
    in Tokyo counts in them (it was summed apart, under its own day, and never judged)."""
    lk = write_lake(tmp_path / "lake", "http://127.0.0.1:9/unused", extra_alerts="""
- alert_id: platform-day
  name: All customers over 60 calls a day
  metric: usage
  meter_api_name: calls
  scope: all_customers
  window: day
  condition: greater_than
  threshold: 60
""")
    cat = load_catalog(lk.catalog_dir)
    run_alerts(lk, cat, day(8) + dt.timedelta(hours=12), deliver=False)
    fired = lk.read("alerts_fired").filter(pl.col("alert_id") == "platform-day").sort("window_start")
    # acme 50 + quiet 3 + tokyo 20 on each UTC day; the day in progress has its 06:00 events too
    assert fired.select("customer_id", "window_start", "window_end", "current_value", "previous_value").rows() == [
        ("*", day(7), day(8), D(73), D(73)), ("*", day(8), day(9), D(73), D(73))]
    assert fired["message"].to_list() == ["all customers: calls 73 > 60 in day of 2026-01-07",
                                          "all customers: calls 73 > 60 in day of 2026-01-08"]
