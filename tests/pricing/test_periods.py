"""Billing periods (SPEC §5.2): anchored at the subscription start, local wall clock, clamped months."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from catalog.config import BillingPeriod, to_utc
from transforms.pricing import billing_periods, customer_periods, periods_frame, periods_from_frame

from tests.pricing.helpers import catalog, plan, utc

MONTH = BillingPeriod(interval="month")


def starts(periods):
    return [p.start for p in periods]


def test_month_end_anchor_clamps_and_steps_from_the_anchor():
    # shared case "month-end-anchor": start 2026-01-31, monthly
    ps = billing_periods(utc(2026, 1, 31), None, MONTH, "UTC", until=utc(2026, 6, 1))
    assert [p.start.date().isoformat() for p in ps] == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]
    assert [p.index for p in ps] == [0, 1, 2, 3, 4]
    assert all(a.end == b.start for a, b in zip(ps, ps[1:]))


def test_leap_year_february_and_yearly_anchor_on_feb_29():
    ps = billing_periods(utc(2028, 1, 30), None, MONTH, "UTC", until=utc(2028, 4, 1))
    assert [p.start.date().isoformat() for p in ps] == ["2028-01-30", "2028-02-29", "2028-03-30"]
    ys = billing_periods(utc(2028, 2, 29), None, BillingPeriod(interval="year"), "UTC", until=utc(2033, 1, 1))
    assert [p.start.date().isoformat() for p in ys] == [
        "2028-02-29", "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]


def test_periods_are_cut_in_the_customer_zone_across_dst():
    tz = "America/New_York"
    start = to_utc(dt.date(2026, 1, 1), tz)
    ps = billing_periods(start, None, MONTH, tz, until=utc(2026, 12, 31))
    zone = ZoneInfo(tz)
    for p in ps:  # every boundary is local midnight on the 1st, whatever the offset
        local = p.start.astimezone(zone)
        assert (local.day, local.hour, local.minute) == (1, 0, 0)
    march = ps[2]
    assert march.end - march.start == dt.timedelta(days=31, hours=-1)   # DST starts 2026-03-08
    nov = ps[10]
    assert nov.end - nov.start == dt.timedelta(days=30, hours=1)       # DST ends 2026-11-01


def test_daily_periods_keep_local_midnight_over_dst():
    tz = "Europe/Berlin"
    ps = billing_periods(to_utc(dt.date(2026, 3, 28), tz), None, BillingPeriod(interval="day"), tz,
                         until=to_utc(dt.date(2026, 3, 31), tz))
    assert [p.end - p.start for p in ps] == [dt.timedelta(hours=24), dt.timedelta(hours=23), dt.timedelta(hours=24)]


def test_weekly_count_and_subscription_end_cuts_last_period():
    bp = BillingPeriod(interval="week", count=2)
    ps = billing_periods(utc(2026, 1, 5), utc(2026, 2, 10), bp, "UTC", until=utc(2027, 1, 1))
    assert starts(ps) == [utc(2026, 1, 5), utc(2026, 1, 19), utc(2026, 2, 2)]
    assert ps[-1].end == utc(2026, 2, 10) and ps[-1].nominal_end == utc(2026, 2, 16)


def test_only_periods_starting_before_until():
    ps = billing_periods(utc(2026, 1, 1), None, MONTH, "UTC", until=utc(2026, 3, 1))
    assert starts(ps) == [utc(2026, 1, 1), utc(2026, 2, 1)]
    assert billing_periods(utc(2026, 1, 1), None, MONTH, "UTC", until=utc(2026, 1, 1)) == []


def test_fee_proration_case_period():
    # shared case "fee-proration": start 2026-01-01, end 2026-01-16 → one period [Jan 1, Jan 16)
    ps = billing_periods(dt.date(2026, 1, 1), dt.date(2026, 1, 16), MONTH, "UTC", until=utc(2026, 3, 1))
    assert [(p.start, p.end, p.nominal_end) for p in ps] == [(utc(2026, 1, 1), utc(2026, 1, 16), utc(2026, 2, 1))]


def test_customer_periods_over_a_plan_change():
    cat = catalog(plans=[plan("basic"), plan("pro", interval="month")], subscriptions=[
        {"subscription_id": "s1", "customer_id": "c1", "plan_id": "basic", "start": "2026-01-01", "end": "2026-02-15"},
        {"subscription_id": "s2", "customer_id": "c1", "plan_id": "pro", "start": "2026-02-15"},
    ])
    ps = customer_periods(cat, "c1", until=utc(2026, 4, 1))
    assert [(p.subscription_id, p.start.date().isoformat(), p.end.date().isoformat(), p.index) for p in ps] == [
        ("s1", "2026-01-01", "2026-02-01", 0), ("s1", "2026-02-01", "2026-02-15", 1),
        ("s2", "2026-02-15", "2026-03-15", 0), ("s2", "2026-03-15", "2026-04-15", 1)]
    assert periods_from_frame(periods_frame(ps)) == ps


def test_default_plan_from_the_start_of_the_first_event_day_until_the_next_subscription():
    tz = "Asia/Tokyo"
    cat = catalog(plans=[plan("free"), plan("pro")],
                  customers=[{"customer_id": "c1", "customer_name": "x", "timezone": tz},
                             {"customer_id": "c2", "customer_name": "y"}],
                  subscriptions=[{"subscription_id": "s1", "customer_id": "c1", "plan_id": "pro", "start": "2026-03-10"}],
                  settings={"default_plan_id": "free"})
    first = utc(2026, 2, 3, 20, 0)  # 2026-02-04 05:00 in Tokyo
    ps = customer_periods(cat, "c1", until=utc(2026, 4, 1), first_event_time=first)
    d = [p for p in ps if p.subscription_id == "default:c1"]
    assert d[0].start == to_utc(dt.date(2026, 2, 4), tz) and d[0].plan_id == "free"
    assert d[-1].end == to_utc(dt.date(2026, 3, 10), tz)
    assert [p.subscription_id for p in ps][-1] == "s1"
    # a first event while a subscription is in force: no default plan
    assert all(p.subscription_id == "s1" for p in customer_periods(cat, "c1", utc(2026, 4, 1), utc(2026, 3, 20)))
    # a customer with no subscription at all gets the default plan from that day on
    ps2 = customer_periods(cat, "c2", until=utc(2026, 3, 1), first_event_time=utc(2026, 1, 15, 13))
    assert [p.start for p in ps2] == [utc(2026, 1, 15), utc(2026, 2, 15)]
    # unknown customers are not billed
    assert customer_periods(cat, "ghost", until=utc(2026, 3, 1), first_event_time=utc(2026, 1, 15)) == []


def test_no_default_plan_without_the_setting():
    cat = catalog(plans=[plan("free")], customers=[{"customer_id": "c1", "customer_name": "x"}])
    assert customer_periods(cat, "c1", until=utc(2026, 3, 1), first_event_time=utc(2026, 1, 15)) == []


def test_local_days_of_a_frame_are_the_rule_of_one_period():
    import polars as pl

    from catalog.schemas import TS
    # with_local_days (one pass per zone) gives local_days row by row: Sydney's month starting at
    # its local midnight (UTC+11), Los Angeles across the November DST change, a UTC month, an
    # unknown customer (UTC), and a period cut mid-day
    from transforms.pricing.periods import local_days, with_local_days

    utc = dt.timezone.utc
    rows = [("syd", dt.datetime(2026, 10, 14, 13, tzinfo=utc), dt.datetime(2026, 11, 14, 13, tzinfo=utc)),
            ("la", dt.datetime(2026, 10, 1, 7, tzinfo=utc), dt.datetime(2026, 11, 1, 7, tzinfo=utc)),
            ("la", dt.datetime(2026, 11, 1, 7, tzinfo=utc), dt.datetime(2026, 12, 1, 8, tzinfo=utc)),
            ("utc", dt.datetime(2026, 11, 1, tzinfo=utc), dt.datetime(2026, 12, 1, tzinfo=utc)),
            ("who", dt.datetime(2026, 11, 1, tzinfo=utc), dt.datetime(2026, 11, 15, 12, tzinfo=utc))]
    zones = {"syd": "Australia/Sydney", "la": "America/Los_Angeles", "utc": "UTC"}
    df = pl.DataFrame(rows, schema={"customer_id": pl.String, "period_start": TS, "period_end": TS}, orient="row")
    got = with_local_days(df, zones).select("local_first", "local_last").rows()
    assert got == [local_days(s, e, zones.get(c, "UTC")) for c, s, e in rows]
    assert got == [(dt.date(2026, 10, 15), dt.date(2026, 11, 14)), (dt.date(2026, 10, 1), dt.date(2026, 10, 31)),
                   (dt.date(2026, 11, 1), dt.date(2026, 11, 30)), (dt.date(2026, 11, 1), dt.date(2026, 11, 30)),
                   (dt.date(2026, 11, 1), dt.date(2026, 11, 15))]
