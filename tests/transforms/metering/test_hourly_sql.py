"""The DuckDB path for mergeable meters (transforms/metering/hourly_sql.py) gives exactly hourly_usage's rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import polars as pl

from catalog.config import Meter
from catalog.schemas import SCHEMAS
from transforms.metering.hourly_sql import FILE_COLUMNS, mergeable_hourly_sql
from transforms.metering import hourly_usage

UTC = dt.timezone.utc
T = dt.datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
METERS = {
    "calls": Meter(meter_api_name="calls", label="c", type="sum"),
    "reqs": Meter(meter_api_name="reqs", label="r", type="count"),
    "peak": Meter(meter_api_name="peak", label="p", type="max"),
    "low": Meter(meter_api_name="low", label="l", type="min"),
}


def _events() -> pl.DataFrame:
    m = lambda **kv: [{"key": k, "value": v} for k, v in kv.items()]  # noqa: E731
    rows = [
        # customer, meter, value, minutes after T, unique_id, dims, is_cancel
        ("c1", "calls", "1.5", 0, "a", m(region="us", endpoint="/x"), False),
        ("c1", "calls", "2.25", 10, "b", m(endpoint="/x", region="us"), False),   # same combination, other order
        ("c1", "calls", None, 20, "n", m(region="us", endpoint="/x"), False),     # no value: does not count
        ("c1", "calls", "4", 70, "c", [], False),                                 # next hour, no dimensions
        ("c1", "calls", "7", 5, "d", m(region="eu"), False),                      # cancelled below
        ("c1", "calls", "7", 5, "d", m(region="eu", meterbill_cancel="true"), True),
        ("c2", "reqs", None, 1, "e", m(region="us"), False),                      # count ignores the value
        ("c2", "reqs", "3", 2, None, m(region="us"), False),
        ("c2", "peak", "3.000000001", 3, "f", [], False),
        ("c2", "peak", "-2", 4, "g", [], False),
        ("c2", "low", "5", 3, "h", [], False),
        ("c2", "low", "-0.5", 59, "i", [], False),
        ("c3", "mystery", "2", 30, "j", [], False),                               # unknown meter: a sum
        ("c3", "mystery", "2", 30, None, [], True),                               # cancel without unique_id: matches nothing
        ("c1", "calls", "1", 60 * 24, "k", [], False),                            # next UTC date
    ]
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows], "meter_api_name": [r[1] for r in rows],
            "meter_value": [Decimal(r[2]) if r[2] is not None else None for r in rows],
            "event_time": [T + dt.timedelta(minutes=r[3]) for r in rows],
            "unique_id": [r[4] for r in rows], "dimensions": [r[5] for r in rows],
            "is_cancel": [r[6] for r in rows],
        },
        schema_overrides={"meter_value": SCHEMAS["events"]["meter_value"],
                          "dimensions": pl.List(pl.Struct({"key": pl.String, "value": pl.String}))},
    ).with_columns(pl.col("dimensions").cast(SCHEMAS["events"]["dimensions"]),
                   pl.col("event_time").cast(SCHEMAS["events"]["event_time"]))


def _fast(events: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("ev", events.to_arrow())
    con.register("meter_types", pl.DataFrame({"meter_api_name": list(METERS),
                                              "type": [m.type for m in METERS.values()]}).to_arrow())
    out = con.sql(mergeable_hourly_sql("ev", with_hour_date=True)).pl()
    return out.select([pl.col(c).cast(t) for c, t in SCHEMAS["usage_hourly"].items()])


def test_mergeable_meters_in_duckdb_equal_hourly_usage_row_for_row():
    ev = _events()
    fast = _fast(ev)
    slow = hourly_usage(ev, METERS)
    assert list(fast.columns) == list(slow.columns)
    assert fast.height == slow.height == 7
    order = ["customer_id", "meter_api_name", "dims_key", "hour"]  # the SQL promises no row order
    assert fast.sort(order).equals(slow.sort(order))


def test_file_columns_are_the_table_without_its_partition():
    assert list(FILE_COLUMNS) == [c for c in SCHEMAS["usage_hourly"] if c != "hour_date"]
