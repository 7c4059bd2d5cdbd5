"""Property tests: meter_values equals the brute-force reference of SPEC §4 (tests/metering/
reference.py) on random events, windows (overlapping ones too), filters, group_by and as_of."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.config import Meter
from tests.transforms.metering.reference import ref_meter_values
from tests.transforms.metering.support import UTC, WINDOW_SCHEMA, events_frame
from transforms.metering import meter_values

BASE = dt.datetime(2026, 3, 1, tzinfo=UTC)
STEP = dt.timedelta(minutes=30)
VALUES = [Decimal(x) for x in ("-3", "-1", "0", "1", "2", "5", "0.5", "1.000000001", "-2.25", "7.123456789")]
DURATION_VALUES = [Decimal(x) for x in ("-1", "0", "1", "2")]

TYPES = ["sum", "count", "max", "min", "avg", "latest", "unique_count",
         "running_total", "high_watermark", "event_duration", "weighted_sum"]


def meters(typ: str):
    if typ == "high_watermark":
        return st.builds(lambda to: Meter(meter_api_name="m", type=typ, timeout_minutes=to),
                         st.sampled_from([None, 30, 60, 90, 300]))
    if typ == "running_total":
        return st.builds(lambda r: Meter(meter_api_name="m", type=typ, reducer=r), st.sampled_from(["end", "max"]))
    if typ == "unique_count":
        return st.builds(lambda u: Meter(meter_api_name="m", type=typ, unique_dimensions=u),
                         st.sampled_from([["user"], ["user", "region"]]))
    if typ == "event_duration":
        return st.builds(lambda r, u: Meter(meter_api_name="m", type=typ, resource_dimensions=r, duration_unit=u),
                         st.sampled_from([["inst"], ["inst", "region"]]),
                         st.sampled_from(["hour", "minute", "second", "millisecond"]))
    return st.just(Meter(meter_api_name="m", type=typ))


@st.composite
def scenario(draw, typ: str):
    meter = draw(meters(typ))
    vals = DURATION_VALUES if typ == "event_duration" else VALUES
    n = draw(st.integers(0, 30))
    rows = []
    for i in range(n):
        dims = {}
        for key, options in (("region", ["us", "eu"]), ("user", ["a", "b", "c"]), ("inst", ["i1", "i2"])):
            v = draw(st.sampled_from([None, *options]))
            if v is not None:
                dims[key] = v
        value = draw(st.sampled_from(vals))
        if typ in ("count", "unique_count") and draw(st.booleans()):
            value = None
        rows.append({
            "customer_id": draw(st.sampled_from(["c1", "c1", "c1", "c2"])),
            "meter_api_name": draw(st.sampled_from(["m", "m", "m", "m", "other"])),
            "meter_value": value,
            "event_time": BASE + STEP * draw(st.integers(0, 24)),
            "unique_id": draw(st.sampled_from([None, None, *[f"u{k}" for k in range(6)]])),
            "dimensions": dims,
            "is_cancel": False,
        })
    wins = []
    for _ in range(draw(st.integers(1, 6))):
        a = draw(st.integers(-2, 26))
        length = draw(st.sampled_from([1, 2, 3, 4, 6, 12, 30]))
        wins.append((draw(st.sampled_from(["c1", "c2", "c3"])), BASE + STEP * a, BASE + STEP * (a + length)))
    group_by = draw(st.sampled_from([(), ("region",), ("user",), ("user", "region")]))
    flt = draw(st.sampled_from([None, {"region": ["us"]}, {"region": ["us", "eu"]}, {"user": ["a", "c"], "region": ["eu"]}]))
    as_of = draw(st.sampled_from([None, BASE + STEP * draw(st.integers(0, 26))]))
    return meter, rows, wins, group_by, flt, as_of


@pytest.mark.parametrize("typ", TYPES)
def test_meter_values_equal_the_reference(typ):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenario(typ))
    def check(sc):
        meter, rows, wins, group_by, flt, as_of = sc
        ev = events_frame(rows)
        wf = pl.DataFrame(wins, schema=WINDOW_SCHEMA, orient="row")
        got = meter_values(ev, meter, wf, group_by=group_by, filter=flt, as_of=as_of).rows()
        want = ref_meter_values(rows, meter, wins, group_by, flt, as_of)
        assert got == want

    check()
