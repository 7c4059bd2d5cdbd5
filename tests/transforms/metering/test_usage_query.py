"""SPEC §4 usage query: gap filling, percentages, group totals, top N, per-customer time zones."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import polars as pl
import pytest

from catalog.config import Meter
from tests.transforms.metering.support import D, event, events_frame, evs, t, values
from transforms.metering import usage_query
from transforms.shared.percent import percent_change

SUM = Meter(meter_api_name="m", type="sum")
JAN1, JAN5 = dt.date(2026, 1, 1), dt.date(2026, 1, 5)


def test_percent_change_rules():
    """Exact (a Fraction); the query rounds it once to a float, and gives 0 for the first bucket."""
    assert percent_change(D(0), D(0)) == 0
    assert percent_change(D(0), D(3)) == 100
    assert percent_change(D(0), D(-3)) == -100
    assert percent_change(D(4040), D(19605)) == Fraction(1556500, 4040)
    assert float(percent_change(D(4040), D(19605))) == 385.2722772277228
    assert percent_change(D(-4), D(2)) == -150          # (2 − −4) / −4 × 100
    assert float(percent_change(D(3), D(1))) == -66.66666666666667



def test_percent_change_of_decimals_is_the_exact_ratio_rounded_once():
    # the integer-ratio float is the float of the exact Fraction, to the last bit
    import random
    from decimal import Decimal

    from transforms.shared.percent import percent_change, percent_change_float

    rnd = random.Random(11)
    for _ in range(20_000):
        prev, cur = (Decimal(rnd.randint(-10**15, 10**15)).scaleb(-rnd.randint(0, 9)) for _ in range(2))
        if prev == 0:
            continue
        assert percent_change_float(prev, cur) == float(percent_change(prev, cur)), (prev, cur)


def test_gap_filled_with_zeros_for_every_bucket_of_every_group():
    ev = evs([["2026-01-02T10:00:00Z", 5, {"region": "us"}], ["2026-01-04T10:00:00Z", 2, {"region": "eu"}],
              ["2026-01-04T11:00:00Z", 1, {"region": "eu"}], ["2026-01-09T11:00:00Z", 50, {"region": "ap"}]])
    df = usage_query(ev, SUM, window="day", start=JAN1, end=JAN5, group_by=["region"])
    assert df.columns == ["region", "window_start", "window_end", "value", "percent_from_previous", "group_total"]
    assert df["region"].to_list() == ["eu"] * 4 + ["us"] * 4      # ap has nothing in the range
    assert df["window_start"].to_list()[:4] == [t(f"2026-01-0{d}T00:00:00Z") for d in range(1, 5)]
    assert values(df) == [D(0), D(0), D(0), D(3), D(0), D(5), D(0), D(0)]
    assert df["percent_from_previous"].to_list() == [0, 0, 0, 100, 0, 100, -100, 0]
    assert df["group_total"].to_list() == [D(3)] * 4 + [D(5)] * 4


def test_without_group_by_there_is_one_series_even_without_events():
    df = usage_query(evs([]), SUM, window="week", start=JAN1, end=dt.date(2026, 1, 20))
    assert df.columns == ["window_start", "window_end", "value", "percent_from_previous", "group_total"]
    assert df["window_start"].to_list() == [t("2025-12-29T00:00:00Z"), t("2026-01-05T00:00:00Z"), t("2026-01-12T00:00:00Z"),
                                            t("2026-01-19T00:00:00Z")]
    assert values(df) == [D(0)] * 4 and df["group_total"].to_list() == [D(0)] * 4


def test_top_n_groups_by_total():
    ev = evs([["2026-01-01T10:00:00Z", 10, {"r": "a"}], ["2026-01-02T10:00:00Z", 30, {"r": "b"}],
              ["2026-01-03T10:00:00Z", 20, {"r": "c"}], ["2026-01-03T11:00:00Z", 20, {"r": "d"}]])
    df = usage_query(ev, SUM, window="day", start=JAN1, end=JAN5, group_by=["r"], top=2)
    assert sorted(set(df["r"].to_list())) == ["b", "c"]   # 30, then the tie 20/20 goes to c (keys ascending)
    assert df.height == 8


def test_group_total_of_a_non_additive_meter_is_its_value_over_the_range():
    m = Meter(meter_api_name="m", type="unique_count", unique_dimensions=["user"])
    ev = evs([["2026-01-01T10:00:00Z", None, {"user": "u1"}], ["2026-01-02T10:00:00Z", None, {"user": "u1"}],
              ["2026-01-02T11:00:00Z", None, {"user": "u2"}]])
    df = usage_query(ev, m, window="day", start=JAN1, end=dt.date(2026, 1, 3))
    assert values(df) == [D(1), D(2)]
    assert df["group_total"].to_list() == [D(2), D(2)]       # two users, not 1 + 2
    assert df["percent_from_previous"].to_list() == [0, 100]


def test_customers_combined_or_grouped():
    ev = pl.concat([evs([["2026-01-01T10:00:00Z", None, {"user": "u1"}]]),
                    evs([["2026-01-01T11:00:00Z", None, {"user": "u1"}], ["2026-01-01T12:00:00Z", None, {"user": "u2"}]],
                        customer="c2")])
    m = Meter(meter_api_name="m", type="unique_count", unique_dimensions=["user"])
    # combined: distinct users over all the customers' events
    assert values(usage_query(ev, m, window="day", start=JAN1, end=dt.date(2026, 1, 2))) == [D(2)]
    df = usage_query(ev, m, window="day", start=JAN1, end=dt.date(2026, 1, 2), group_by=["customer_id"])
    assert list(zip(df["customer_id"].to_list(), values(df))) == [("c1", D(1)), ("c2", D(2))]


def test_stateful_meters_carry_in_and_add_up_over_customers():
    m = Meter(meter_api_name="m", type="running_total")
    ev = pl.concat([evs([["2025-12-15T00:00:00Z", 2], ["2026-01-02T00:00:00Z", 1]]),
                    evs([["2025-11-01T00:00:00Z", 4]], customer="c2")])
    by_c = usage_query(ev, m, window="day", start=JAN1, end=dt.date(2026, 1, 3), group_by=["customer_id"])
    assert list(zip(by_c["customer_id"].to_list(), values(by_c))) == [("c1", D(2)), ("c1", D(3)), ("c2", D(4)), ("c2", D(4))]
    assert by_c["group_total"].to_list() == [D(3), D(3), D(4), D(4)]   # the level at the range end
    all_c = usage_query(ev, m, window="day", start=JAN1, end=dt.date(2026, 1, 3))
    assert values(all_c) == [D(6), D(7)] and all_c["group_total"].to_list() == [D(7), D(7)]


def test_one_zone_for_every_group_with_or_without_grouping_by_customer():
    ev = events_frame([
        event("2026-01-01T23:30:00Z", 1, customer="bud", uid="a"),   # Jan 2 00:30 in Budapest
        event("2026-01-02T03:00:00Z", 2, customer="ny", uid="b"),    # Jan 2 04:00 in Budapest
        event("2026-01-02T03:00:00Z", 4, customer="utc", uid="c"),
    ])
    df = usage_query(ev, SUM, window="day", start=JAN1, end=dt.date(2026, 1, 3), group_by=["customer_id"],
                     tz="Europe/Budapest")
    got = {(r["customer_id"], r["window_start"]): r["value"] for r in df.iter_rows(named=True)}
    jan1, jan2 = t("2025-12-31T23:00:00Z"), t("2026-01-01T23:00:00Z")   # Budapest midnights
    assert got == {("bud", jan1): D(0), ("bud", jan2): D(1), ("ny", jan1): D(0), ("ny", jan2): D(2),
                   ("utc", jan1): D(0), ("utc", jan2): D(4)}
    flat = usage_query(ev, SUM, window="day", start=JAN1, end=dt.date(2026, 1, 3), tz="Europe/Budapest")
    assert values(flat) == [D(0), D(7)]


def test_filter_and_instant_bounds():
    ev = evs([["2026-01-01T10:00:00Z", 1, {"region": "us"}], ["2026-01-01T11:00:00Z", 2, {"region": "eu"}],
              ["2026-01-01T12:30:00Z", 4, {"region": "us"}]])
    df = usage_query(ev, SUM, window="hour", start=t("2026-01-01T10:00:00Z"), end=t("2026-01-01T13:00:00Z"),
                     filter={"region": ["us"]})
    assert values(df) == [D(1), D(0), D(4)]
    assert df["percent_from_previous"].to_list() == [0, -100, 100]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="window"):
        usage_query(evs([]), SUM, window="year", start=JAN1, end=JAN5)
    with pytest.raises(ValueError, match="top"):
        usage_query(evs([]), SUM, window="day", start=JAN1, end=JAN5, top=0)
    with pytest.raises(ValueError, match="time zone"):
        usage_query(evs([]), SUM, window="day", start=JAN1, end=JAN5, tz="Nowhere/City")
