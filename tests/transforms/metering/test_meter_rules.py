"""Rules of SPEC §4 worked by hand: ties, non-additivity, filters, group_by, carried levels,
timeouts, open resources and as_of, overlapping windows, exact decimals."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from catalog.config import Meter
from tests.transforms.metering.support import D, event, events_frame, evs, month, t, values, windows_frame
from transforms.metering import meter_values

DAY = ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")


def test_latest_tie_goes_to_the_later_unique_id_and_a_missing_one_sorts_first():
    m = Meter(meter_api_name="m", type="latest")
    ev = events_frame([
        event("2026-01-01T10:00:00Z", 7, uid="b"),
        event("2026-01-01T10:00:00Z", 8, uid="a"),
        event("2026-01-01T10:00:00Z", 9, uid=None),
        event("2026-01-01T09:00:00Z", 100, uid="z"),
    ])
    assert values(meter_values(ev, m, windows_frame([DAY]))) == [D(7)]
    # only a missing and a present unique_id at the latest instant: the present one is later
    ev2 = events_frame([event("2026-01-01T10:00:00Z", 9, uid=None), event("2026-01-01T10:00:00Z", 8, uid="a")])
    assert values(meter_values(ev2, m, windows_frame([DAY]))) == [D(8)]


def test_high_watermark_counts_every_value_set_at_an_instant_and_holds_the_last():
    # at 10:00 three events: 10 (uid a), 50 (uid b), 20 (uid c, the last): 50 is reached, 20 holds
    m = Meter(meter_api_name="m", type="high_watermark")
    ev = events_frame([event("2026-01-01T10:00:00Z", 20, uid="c"), event("2026-01-01T10:00:00Z", 50, uid="b"),
                       event("2026-01-01T10:00:00Z", 10, uid="a")])
    w = windows_frame([DAY, ("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")])
    assert values(meter_values(ev, m, w)) == [D(50), D(20)]


def test_high_watermark_timeout_drops_the_level_to_zero():
    m = Meter(meter_api_name="m", type="high_watermark", timeout_minutes=60)
    ev = evs([["2026-01-01T10:00:00Z", 5]])
    w = windows_frame([("2026-01-01T10:30:00Z", "2026-01-01T11:30:00Z"),   # carried 5, then 0
                       ("2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z"),   # timed out exactly at start
                       ("2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z")])  # before the event
    assert values(meter_values(ev, m, w)) == [D(0), D(5), D(0)]
    # negative levels: the 0 after the timeout is the highest level of the window
    ev = evs([["2026-01-01T10:00:00Z", -5]])
    w = windows_frame([("2026-01-01T10:30:00Z", "2026-01-01T11:30:00Z"), ("2026-01-01T10:00:00Z", "2026-01-01T10:30:00Z")])
    assert values(meter_values(ev, m, w)) == [D(-5), D(0)]


def test_running_total_max_ignores_the_level_replaced_at_window_start():
    # level 3 before the window; an event exactly at the start takes it to 2: max is 2, not 3
    m = Meter(meter_api_name="m", type="running_total", reducer="max")
    ev = evs([["2025-12-31T00:00:00Z", 3], ["2026-01-01T00:00:00Z", -1]])
    assert values(meter_values(ev, m, windows_frame([DAY]))) == [D(2)]


def test_event_duration_open_resource_runs_to_as_of_or_window_end():
    m = Meter(meter_api_name="m", type="event_duration", resource_dimensions=["vm"], duration_unit="minute")
    ev = evs([["2026-01-01T10:00:00Z", 1, {"vm": "a"}],
              ["2026-01-01T10:00:00Z", 1, {"vm": "b"}],
              ["2026-01-01T10:30:00Z", 0, {"vm": "b"}],      # value <= 0 stops
              ["2026-01-01T10:45:00Z", -1, {"vm": "b"}],     # a stop while stopped is ignored
              ["2026-01-01T11:00:00Z", 1, {"vm": "b"}],
              ["2026-01-01T11:10:00Z", 5, {"vm": "b"}],      # a start while running is ignored
              ["2026-01-01T11:20:00Z", -1, {"vm": "b"}]])
    w = windows_frame([DAY])
    # a: 10:00 → 12:00 (as_of) = 120; b: 30 + 20 = 50
    assert values(meter_values(ev, m, w, as_of=t("2026-01-01T12:00:00Z"))) == [D(170)]
    # without as_of the open resource runs to the window end: a = 14 h = 840 min
    assert values(meter_values(ev, m, w)) == [D(890)]
    # a window wholly after as_of counts nothing, but still has a row (a resource is running)
    assert values(meter_values(ev, m, windows_frame([("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")]),
                               as_of=t("2026-01-01T12:00:00Z"))) == [D(0)]


def test_event_duration_units_are_exact():
    ev = evs([["2026-01-01T10:00:00Z", 1, {"vm": "a"}], ["2026-01-01T10:00:01.5Z", -1, {"vm": "a"}]])
    w = windows_frame([DAY])
    got = {u: values(meter_values(ev, Meter(meter_api_name="m", type="event_duration", resource_dimensions=["vm"],
                                             duration_unit=u), w))[0]
           for u in ("hour", "minute", "second", "millisecond")}
    # 1.5 s: 1.5/3600 = 0.000416666…, 1.5/60 = 0.025
    assert got == {"hour": D("0.000416667"), "minute": D("0.025"), "second": D("1.5"), "millisecond": D(1500)}


def test_unique_count_is_exact_across_groups_and_windows():
    m = Meter(meter_api_name="m", type="unique_count", unique_dimensions=["user"])
    ev = evs([["2026-01-01T01:00:00Z", None, {"user": "u1", "region": "us"}],
              ["2026-01-01T02:00:00Z", None, {"user": "u1", "region": "eu"}],
              ["2026-01-02T01:00:00Z", None, {"user": "u1", "region": "eu"}],
              ["2026-01-02T02:00:00Z", None, {"user": "u2", "region": "eu"}],
              ["2026-01-02T03:00:00Z", None, {"region": "eu"}]])  # no user: no tuple
    days = [DAY, ("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")]
    assert values(meter_values(ev, m, windows_frame(days))) == [D(1), D(2)]
    # the two days together: 2 distinct users, not 1 + 2
    assert values(meter_values(ev, m, windows_frame([("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z")]))) == [D(2)]
    # by region: us 1, eu 1 on day 1 — the customer's value (1) is not their sum
    by = meter_values(ev, m, windows_frame(days), group_by=["region"])
    assert by.rows() == [
        ("c1", t(DAY[0]), t(DAY[1]), "eu", D(1)), ("c1", t(DAY[0]), t(DAY[1]), "us", D(1)),
        ("c1", t(DAY[1]), t("2026-01-03T00:00:00Z"), "eu", D(2)),
    ]


def test_avg_is_exact_then_rounded_half_even_to_9_places():
    m = Meter(meter_api_name="m", type="avg")
    ev = evs([["2026-01-01T01:00:00Z", "1"], ["2026-01-01T02:00:00Z", "1"], ["2026-01-01T03:00:00Z", "0.000000001"]])
    # 2.000000001 / 3 = 0.666666667
    assert values(meter_values(ev, m, windows_frame([DAY]))) == [D("0.666666667")]
    ev = evs([["2026-01-01T01:00:00Z", "0.000000004"], ["2026-01-01T02:00:00Z", "0.000000002"],
              ["2026-01-01T03:00:00Z", "0.000000004"], ["2026-01-01T04:00:00Z", "0"]])
    # 0.000000010 / 4 = 0.0000000025 -> half to even: 0.000000002
    assert values(meter_values(ev, m, windows_frame([DAY]))) == [D("0.000000002")]
    ev = evs([["2026-01-01T01:00:00Z", "12345678901234567890.123456789"], ["2026-01-01T02:00:00Z", "0.000000001"]])
    # exact beyond binary floats: 12345678901234567890.123456790 / 2
    assert values(meter_values(ev, m, windows_frame([DAY]))) == [D("6172839450617283945.061728395")]


def test_sum_keeps_38_digit_decimals_exact():
    m = Meter(meter_api_name="m", type="sum")
    big = "12345678901234567890.123456789"
    ev = evs([["2026-01-01T01:00:00Z", big], ["2026-01-01T02:00:00Z", "0.000000001"]])
    assert values(meter_values(ev, m, windows_frame([DAY]))) == [D("12345678901234567890.123456790")]


def test_filter_keys_and_values_or_and_group_by_columns():
    m = Meter(meter_api_name="m", type="sum")
    ev = evs([["2026-01-01T01:00:00Z", 1, {"region": "us", "tier": "a"}],
              ["2026-01-01T02:00:00Z", 2, {"region": "eu", "tier": "a"}],
              ["2026-01-01T03:00:00Z", 4, {"region": "ap", "tier": "a"}],
              ["2026-01-01T04:00:00Z", 8, {"region": "us", "tier": "b"}],
              ["2026-01-01T05:00:00Z", 16, {"tier": "a"}]])
    w = windows_frame([DAY])
    assert values(meter_values(ev, m, w, filter={"region": ["us", "eu"], "tier": ["a"]})) == [D(3)]
    got = meter_values(ev, m, w, group_by=["region"])
    assert got.columns == ["customer_id", "window_start", "window_end", "region", "value"]
    assert list(zip(got["region"].to_list(), values(got))) == [(None, D(16)), ("ap", D(4)), ("eu", D(2)), ("us", D(9))]


def test_every_window_gets_a_row_without_group_by_and_other_meters_are_ignored():
    m = Meter(meter_api_name="m", type="max")
    ev = pl.concat([evs([["2026-01-01T01:00:00Z", 5]]), evs([["2026-01-02T01:00:00Z", 50]], meter="other"),
                    evs([["2026-01-01T01:00:00Z", 70]], customer="c2")])
    w = windows_frame([DAY, ("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z")])
    assert values(meter_values(ev, m, w)) == [D(5), D(0)]


def test_overlapping_windows_each_count_all_their_events():
    m = Meter(meter_api_name="m", type="count")
    ev = evs([["2026-01-01T01:00:00Z", 1], ["2026-01-01T05:00:00Z", 1], ["2026-01-01T23:00:00Z", 1]])
    w = windows_frame([DAY, ("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z"), ("2026-01-01T04:00:00Z", "2026-01-02T00:00:00Z"),
                       DAY])  # a duplicate window gives one row
    assert values(meter_values(ev, m, w)) == [D(2), D(3), D(2)]


def test_per_customer_windows_and_stateful_carry_in_with_group_by():
    m = Meter(meter_api_name="m", type="running_total")
    ev = pl.concat([evs([["2025-12-01T00:00:00Z", 2, {"plan": "x"}], ["2026-02-10T00:00:00Z", 1, {"plan": "y"}]]),
                    evs([["2026-01-05T00:00:00Z", 4, {"plan": "x"}]], customer="c2")])
    w = pl.concat([windows_frame([month("2026-01"), month("2026-02")]), windows_frame([month("2026-01")], customer="c2")])
    got = meter_values(ev, m, w, group_by=["plan"])
    jan, feb = month("2026-01"), month("2026-02")
    assert got.rows() == [
        ("c1", *jan, "x", D(2)),   # carried in from December, no events in January
        ("c1", *feb, "x", D(2)),
        ("c1", *feb, "y", D(1)),
        ("c2", *jan, "x", D(4)),
    ]


def test_bad_windows_and_group_by_are_refused():
    m = Meter(meter_api_name="m", type="sum")
    with pytest.raises(ValueError, match="window_end must be after window_start"):
        meter_values(evs([]), m, windows_frame([("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z")]))
    with pytest.raises(ValueError, match="clashes"):
        meter_values(evs([]), m, windows_frame([DAY]), group_by=["value"])
