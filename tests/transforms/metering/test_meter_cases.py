"""The worked numbers of the shared metering cases (Amberflo, Lago, OpenMeter, Stripe),
transcribed here so the project never reads the shared folder at test time."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest

from catalog.config import Meter
from tests.transforms.metering.support import D, evs, month, t, values, windows_frame
from transforms.metering import meter_values, usage_query
from transforms.shared.windows import window_containing

# id, meter, events [time, value, dims?], windows, expected values (one per window)
CASES = [
    ("amberflo-high-watermark",
     Meter(meter_api_name="items", type="high_watermark", timeout_minutes=525600),
     [["2026-01-01T00:00:00Z", 1000], ["2026-03-15T00:00:00Z", 500]],
     [month("2026-01"), month("2026-02"), month("2026-03"), month("2026-04")],
     [1000, 1000, 1000, 500]),
    ("amberflo-event-duration",
     Meter(meter_api_name="instance_hours", type="event_duration", resource_dimensions=["instance_id"],
           duration_unit="hour"),
     [["2026-01-05T06:00:00Z", 1, {"instance_id": "i-1"}], ["2026-01-05T08:00:00Z", -1, {"instance_id": "i-1"}]],
     [("2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")],
     [2]),
    ("openmeter-latest",
     Meter(meter_api_name="gauge", type="latest"),
     [["2024-01-01T00:00:10Z", 5], ["2024-01-01T00:00:40Z", 3], ["2024-01-01T00:00:20Z", 9]],
     [("2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z")],
     [3]),
    ("openmeter-half-open",
     Meter(meter_api_name="calls", type="count"),
     [["2024-01-01T00:00:00Z", 1], ["2024-01-01T12:00:00Z", 1], ["2024-01-02T00:00:00Z", 1]],
     [("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")],
     [2]),
    ("running-total-seats-end",
     Meter(meter_api_name="seats", type="running_total", reducer="end"),
     [["2026-01-03T00:00:00Z", 1, {"seat": "a"}], ["2026-01-10T00:00:00Z", 1, {"seat": "b"}],
      ["2026-01-20T00:00:00Z", -1, {"seat": "a"}], ["2026-02-02T00:00:00Z", 1, {"seat": "c"}]],
     [month("2026-01"), month("2026-02")],
     [1, 2]),
    ("running-total-seats-max",
     Meter(meter_api_name="seats", type="running_total", reducer="max"),
     [["2026-01-03T00:00:00Z", 1, {"seat": "a"}], ["2026-01-10T00:00:00Z", 1, {"seat": "b"}],
      ["2026-01-20T00:00:00Z", -1, {"seat": "a"}], ["2026-02-02T00:00:00Z", 1, {"seat": "c"}]],
     [month("2026-01"), month("2026-02")],
     [2, 2]),
    ("stripe-negative-total",
     Meter(meter_api_name="calls", type="sum"),
     [["2026-01-02T00:00:00Z", 5], ["2026-01-03T00:00:00Z", -8]],
     [month("2026-01")],
     [-3]),  # billed quantity 0 is the pricing room's rule (negative quantity prices as 0)
]


@pytest.mark.parametrize("case_id, meter, events, windows, expected", CASES, ids=[c[0] for c in CASES])
def test_worked_case(case_id, meter, events, windows, expected):
    ev = evs(events, meter=meter.meter_api_name)
    got = meter_values(ev, meter, windows_frame(windows))
    assert values(got) == [D(x) for x in expected]


def test_lago_weighted_sum_over_a_31_day_window():
    # level 2 (1h) + 5 (0.5h) + 6 (0.5h) + 2 (2h) + 0 (1h) + 10 (0.5h) = 16.5 GB·h over 744 h
    meter = Meter(meter_api_name="storage_gb", type="weighted_sum")
    ev = evs([["2023-08-01T00:00:00Z", 2], ["2023-08-01T01:00:00Z", 3], ["2023-08-01T01:30:00Z", 1],
              ["2023-08-01T02:00:00Z", -4], ["2023-08-01T04:00:00Z", -2], ["2023-08-01T05:00:00Z", 10],
              ["2023-08-01T05:30:00Z", -10]], meter="storage_gb")
    got = values(meter_values(ev, meter, windows_frame([("2023-08-01T00:00:00Z", "2023-09-01T00:00:00Z")])))[0]
    assert got == Decimal("0.022177419")  # 16.5 / 744 = 0.0221774193548…, 9 places
    assert got.quantize(Decimal("0.00001"), rounding=ROUND_HALF_UP) == Decimal("0.02218")


def test_openmeter_day_window_in_budapest():
    start, end = window_containing(t("2023-11-07T23:30:00Z"), "day", "Europe/Budapest")
    assert start == dt.datetime.fromisoformat("2023-11-08T00:00:00+01:00")
    assert end == dt.datetime.fromisoformat("2023-11-09T00:00:00+01:00")


@pytest.mark.parametrize("unit, cur, prev, total", [
    ("xxx", [0, 4040, 19605], [0, 100, 385.2722772277228], 23645),
    ("yyy", [0, 2507, 20101], [0, 100, 701.7949740725967], 22608),
])
def test_amberflo_usage_query_percentages_and_totals(unit, cur, prev, total):
    rows = [["2026-01-0%dT12:00:00Z" % (i + 1), v, {"business_unit": u}]
            for u, vs in (("xxx", [0, 4040, 19605]), ("yyy", [0, 2507, 20101])) for i, v in enumerate(vs) if v]
    ev = evs(rows, meter="calls")
    df = usage_query(ev, Meter(meter_api_name="calls", type="sum"), window="day",
                     start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 4), group_by=["business_unit"])
    g = df.filter(df["business_unit"] == unit)
    assert values(g) == [D(x) for x in cur]
    assert g["percent_from_previous"].to_list() == prev
    assert g["group_total"].to_list() == [D(total)] * 3
