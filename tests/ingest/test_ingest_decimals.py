"""Meter values are exact decimals with 9 fractional digits; a float from a file is rounded to 9
places (through its shortest representation); a numeric string never goes through a float."""

from __future__ import annotations

import json
from decimal import Decimal

import polars as pl
import pytest

from tests.ingest.conftest import T0, event, events, ingest, land, ndjson, parquet_bytes


def values(lk) -> list[Decimal]:
    return events(lk)["meter_value"].to_list()


def test_point_one_plus_point_two(lake):
    # 0.1 + 0.2 as floats is 0.30000000000000004; read exactly, the sum is 0.3
    land(lake, "a.ndjson", ndjson(event(value=0.1), event(value=0.2, ms=T0 + 1), event(value="0.30000000000000004", ms=T0 + 2)))
    land(lake, "b.csv", f"customer_id,meter_api_name,meter_value,meter_time_in_millis\nc1,api_calls,0.1,{T0 + 3}\nc1,api_calls,0.2,{T0 + 4}\n")
    ingest(lake)
    v = values(lake)
    assert v[:2] == [Decimal("0.1"), Decimal("0.2")] and v[3:] == [Decimal("0.1"), Decimal("0.2")]
    assert v[0] + v[1] == Decimal("0.3")
    assert v[2] == Decimal("0.300000000")  # the float's noise is below the 9th place
    assert all(d.as_tuple().exponent == -9 for d in v)


@pytest.mark.parametrize("text, expected", [
    ("1.0000000004", "1.000000000"),
    ("1.0000000005", "1.000000001"),  # half away from zero
    ("-1.0000000005", "-1.000000001"),
    ("123456789012345678901.123456789", "123456789012345678901.123456789"),  # beyond a double
    ("1e-9", "0.000000001"),
    ("2.5E3", "2500"),
    (" 7 ", "7"),
    ("+3", "3"),
    (".5", "0.5"),
])
def test_numeric_strings_are_exact(lake, text, expected):
    land(lake, "a.ndjson", ndjson(event(value=text)))
    land(lake, "a.csv", f'customer_id,meter_api_name,meter_value,meter_time_in_millis\nc1,api_calls,"{text}",{T0 + 1}\n')
    ingest(lake)
    assert values(lake) == [Decimal(expected), Decimal(expected)]


def test_floats_in_parquet_round_to_nine_places(lake):
    land(lake, "f.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1"] * 4, "meter_api_name": ["api_calls"] * 4,
        "meter_value": [0.1, 1 / 3, 1e-10, 12345678.123456789],
        "meter_time_in_millis": [T0, T0 + 1, T0 + 2, T0 + 3]})))
    land(lake, "g.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1"], "meter_api_name": ["api_calls"],
        "meter_value": pl.Series([0.1], dtype=pl.Float32), "meter_time_in_millis": [T0 + 4]})))
    ingest(lake)
    # 12345678.123456789 is not a double: its shortest repr is 12345678.12345679
    assert values(lake) == [Decimal("0.1"), Decimal("0.333333333"), Decimal(0), Decimal("12345678.12345679"),
                            Decimal("0.1")]


def test_json_numbers(lake):
    land(lake, "j.json", json.dumps([event(value=2.675), event(value=10 ** 15, ms=T0 + 1), event(value=-0.5, ms=T0 + 2)]))
    ingest(lake)
    assert values(lake) == [Decimal("2.675"), Decimal(10 ** 15), Decimal("-0.5")]


def test_stored_as_decimal_38_9(lake):
    land(lake, "a.ndjson", ndjson(event(value="1.5")))
    ingest(lake)
    assert lake.read("events").schema["meter_value"] == pl.Decimal(38, 9)
