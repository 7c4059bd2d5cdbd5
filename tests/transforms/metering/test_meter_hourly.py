"""usage_hourly: each row is the meter's exact value over its UTC hour and dimension combination;
rebuilding only the dates that late events touch equals a full rebuild, row for row."""

from __future__ import annotations

import datetime as dt

import polars as pl

from catalog.config import Meter
from catalog.schemas import SCHEMAS
from tests.transforms.metering.support import D, event, events_frame, t, windows_frame
from transforms.metering import hourly_rebuild_dates, hourly_usage, meter_values

METERS = {
    "calls": Meter(meter_api_name="calls", type="sum"),
    "hits": Meter(meter_api_name="hits", type="count"),
    "lat": Meter(meter_api_name="lat", type="avg"),
    "gauge": Meter(meter_api_name="gauge", type="latest"),
    "users": Meter(meter_api_name="users", type="unique_count", unique_dimensions=["user"]),
    "seats": Meter(meter_api_name="seats", type="running_total"),
    "items": Meter(meter_api_name="items", type="high_watermark", timeout_minutes=90),
    "vm": Meter(meter_api_name="vm", type="event_duration", resource_dimensions=["vm"], duration_unit="minute"),
    "gb": Meter(meter_api_name="gb", type="weighted_sum"),
}


def cell(df: pl.DataFrame, meter: str, hour: str, dims_key: str = "") -> dict:
    rows = df.filter((pl.col("meter_api_name") == meter) & (pl.col("hour") == t(hour)) & (pl.col("dims_key") == dims_key))
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def test_hourly_rows_are_each_meters_own_value():
    ev = events_frame([
        event("2026-01-01T10:05:00Z", 2, {"region": "us"}, meter="calls"),
        event("2026-01-01T10:55:00Z", 3, {"region": "us"}, meter="calls"),
        event("2026-01-01T10:10:00Z", 4, {"region": "eu"}, meter="calls"),
        event("2026-01-01T11:00:00Z", 1, {"region": "us"}, meter="calls"),   # next hour
        event("2026-01-01T10:01:00Z", None, meter="hits"),
        event("2026-01-01T10:02:00Z", None, meter="hits"),
        event("2026-01-01T10:01:00Z", 1, meter="lat"),
        event("2026-01-01T10:02:00Z", 2, meter="lat"),
        event("2026-01-01T10:30:00Z", 9, meter="gauge"),
        event("2026-01-01T10:20:00Z", 4, meter="gauge"),
        event("2026-01-01T10:20:00Z", None, {"user": "u1"}, meter="users"),
        event("2026-01-01T10:40:00Z", None, {"user": "u1"}, meter="users"),
        event("2026-01-01T10:40:00Z", None, {"team": "x"}, meter="users"),
        event("2026-01-01T10:15:00Z", 6, meter="unknown_meter"),
        event("2026-01-01T10:25:00Z", 1, meter="unknown_meter"),
    ])
    df = hourly_usage(ev, METERS)
    assert df.schema == pl.Schema(SCHEMAS["usage_hourly"])
    us = cell(df, "calls", "2026-01-01T10:00:00Z", "region\x1eus")
    assert (us["value"], us["event_count"], us["value_sum"], us["value_min"], us["value_max"]) == (D(5), 2, D(5), D(2), D(3))
    assert us["dimensions"] == {"region": "us"} and us["hour_date"] == dt.date(2026, 1, 1)
    assert cell(df, "calls", "2026-01-01T10:00:00Z", "region\x1eeu")["value"] == D(4)
    assert cell(df, "calls", "2026-01-01T11:00:00Z", "region\x1eus")["value"] == D(1)
    hits = cell(df, "hits", "2026-01-01T10:00:00Z")
    assert (hits["value"], hits["event_count"], hits["value_sum"]) == (D(2), 2, None)
    assert cell(df, "lat", "2026-01-01T10:00:00Z")["value"] == D("1.5")
    assert cell(df, "gauge", "2026-01-01T10:00:00Z")["value"] == D(9)
    assert cell(df, "users", "2026-01-01T10:00:00Z", "user\x1eu1")["value"] == D(1)
    assert cell(df, "users", "2026-01-01T10:00:00Z", "team\x1ex")["value"] == D(0)   # no user: no tuple
    assert cell(df, "unknown_meter", "2026-01-01T10:00:00Z")["value"] == D(7)          # not in the catalogue: sum
    assert df.height == 9  # calls 3, hits, lat, gauge, users 2, unknown_meter


def test_dimension_maps_are_canonical():
    ev = events_frame([event("2026-01-01T10:05:00Z", 1, {"b": "2", "a": "1"}, meter="calls"),
                       event("2026-01-01T10:06:00Z", 1, {"a": "1", "b": "2"}, meter="calls")])
    df = hourly_usage(ev, METERS)
    assert df.height == 1 and df["dims_key"][0] == "a\x1e1\x1fb\x1e2"
    assert list(df["dimensions"][0].keys()) == ["a", "b"] and df["value"][0] == D(2)


def test_stateful_hours_carry_their_combinations_history():
    ev = events_frame([
        event("2026-01-01T09:00:00Z", 2, {"plan": "x"}, meter="seats"),
        event("2026-01-01T12:30:00Z", 1, {"plan": "x"}, meter="seats"),
        event("2026-01-01T09:00:00Z", 40, meter="items"),
        event("2026-01-01T10:15:00Z", 10, meter="items"),
        event("2026-01-01T08:00:00Z", 1, {"vm": "a"}, meter="vm"),
        event("2026-01-01T10:20:00Z", -1, {"vm": "a"}, meter="vm"),
        event("2026-01-01T10:00:00Z", 6, meter="gb"),
        event("2026-01-01T10:30:00Z", -6, meter="gb"),
    ])
    df = hourly_usage(ev, METERS)
    assert cell(df, "seats", "2026-01-01T12:00:00Z", "plan\x1ex")["value"] == D(3)     # 2 carried + 1
    assert cell(df, "items", "2026-01-01T10:00:00Z")["value"] == D(40)                 # 40 carried in until 10:15
    assert cell(df, "vm", "2026-01-01T10:00:00Z", "vm\x1ea")["value"] == D(20)         # minutes 10:00–10:20
    assert cell(df, "gb", "2026-01-01T10:00:00Z")["value"] == D(3)                     # 6 for half the hour
    # the same as meter_values over that hour with the combination's events
    hw = meter_values(ev, METERS["items"], windows_frame([("2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z")]))
    assert hw["value"].to_list() == [D(40)]
    assert df.filter(pl.col("meter_api_name") == "seats").height == 2   # only hours with events


def _day_events(days: range, hours=(1, 9, 17)) -> list[dict]:
    rows = []
    for d in days:
        for h in hours:
            at = dt.datetime(2026, 1, d, h, 15, tzinfo=dt.timezone.utc)
            rows += [
                event(at, d + h, {"region": "us" if h % 2 else "eu"}, meter="calls", uid=f"c{d}-{h}"),
                event(at, None, {"user": f"u{h % 3}"}, meter="users", uid=f"u{d}-{h}"),
                event(at, 1 if h < 12 else -1, {"plan": "x"}, meter="seats", uid=f"s{d}-{h}"),
                event(at, h, meter="items", uid=f"i{d}-{h}"),
                event(at, 1 if h != 17 else -1, {"vm": "a"}, meter="vm", uid=f"v{d}-{h}"),
                event(at, 2, meter="gb", uid=f"g{d}-{h}"),
            ]
            rows.append(event(at, 1, meter="calls", customer="c2", uid=f"x{d}-{h}"))
    return rows


def test_rebuilding_only_the_touched_dates_equals_a_full_rebuild():
    old = events_frame(_day_events(range(1, 8)))
    late = events_frame([
        event("2026-01-03T05:00:00Z", 100, {"region": "us"}, meter="calls", uid="late1"),
        event("2026-01-03T05:30:00Z", 5, {"plan": "x"}, meter="seats", uid="late2"),      # stateful: later days change
        event("2026-01-05T09:15:00Z", 14, {"meterbill_cancel": "true"}, meter="calls", uid="c5-9",
              cancel=True),  # cancels an old event (c1, calls, c5-9, 2026-01-05T09:15)
    ])
    before = hourly_usage(old, METERS)
    all_events = pl.concat([old, late])
    dates = hourly_rebuild_dates(late, all_events, METERS)
    # seats is stateful: every later date of c1's seats events is rebuilt too
    assert dates == [dt.date(2026, 1, d) for d in range(3, 8)]
    part = hourly_usage(all_events, METERS, hours=pl.DataFrame({"hour_date": dates}))
    assert set(part["hour_date"].to_list()) <= set(dates)
    merged = pl.concat([before.filter(~pl.col("hour_date").is_in(dates)), part]).sort(
        ["customer_id", "meter_api_name", "dims_key", "hour"])
    full = hourly_usage(all_events, METERS)
    assert merged.equals(full)
    # the late numbers are really in: 100 at 05:00 on the 3rd, the cancelled event gone from the 5th
    assert cell(full, "calls", "2026-01-03T05:00:00Z", "region\x1eus")["value"] == D(100)
    assert full.filter((pl.col("meter_api_name") == "calls") & (pl.col("hour") == t("2026-01-05T09:00:00Z"))
                       & (pl.col("customer_id") == "c1")).height == 0
    # and rebuilding the touched dates only (without the stateful spill-over) would be wrong
    naive = sorted({d.date() for d in late["event_time"].to_list()})
    part2 = hourly_usage(all_events, METERS, hours=pl.DataFrame({"hour_date": naive}))
    merged2 = pl.concat([before.filter(~pl.col("hour_date").is_in(naive)), part2]).sort(
        ["customer_id", "meter_api_name", "dims_key", "hour"])
    assert not merged2.equals(full)


def test_hours_can_be_restricted_per_customer():
    ev = events_frame(_day_events(range(1, 4)))
    full = hourly_usage(ev, METERS)
    only = hourly_usage(ev, METERS, hours=pl.DataFrame({"customer_id": ["c2"], "hour_date": [dt.date(2026, 1, 2)]}))
    want = full.filter((pl.col("customer_id") == "c2") & (pl.col("hour_date") == dt.date(2026, 1, 2)))
    assert only.height == 3 and only.equals(want)
