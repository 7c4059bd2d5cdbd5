"""Every SPEC §2 file format (and its .gz), field synonyms, and every way to give dimensions and time."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import polars as pl
import pytest

from tests.ingest.conftest import (
    T0, T0_ISO, event, events, files, ingest, land, ndjson, parquet_bytes, quarantine,
)

UTC = dt.timezone.utc
T0_DT = dt.datetime(2026, 2, 2, 2, 40, tzinfo=UTC)

# the same three records in every format: a sum event, a count event without a value, and a
# record without its customer
CSV_TEXT = (
    "customer_id,meter_api_name,meter_value,meter_time_in_millis,unique_id,region\n"
    f"c1,api_calls,1.5,{T0},u1,us\n"
    f"c2,seats,,{T0 + 1000},,\n"
    f",api_calls,2,{T0 + 2000},u3,eu\n"
)
RECORDS = [
    {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1.5, "meter_time_in_millis": T0,
     "unique_id": "u1", "dimensions": {"region": "us"}},
    {"customer_id": "c2", "meter_api_name": "seats", "meter_time_in_millis": T0 + 1000},
    {"meter_api_name": "api_calls", "meter_value": 2, "meter_time_in_millis": T0 + 2000, "unique_id": "u3",
     "dimensions": {"region": "eu"}},
]


def _parquet() -> bytes:
    df = pl.DataFrame({
        "customer_id": ["c1", "c2", None],
        "meter_api_name": ["api_calls", "seats", "api_calls"],
        "meter_value": [1.5, None, 2.0],
        "meter_time_in_millis": [T0, T0 + 1000, T0 + 2000],
        "unique_id": ["u1", None, "u3"],
        "dimensions": pl.Series([[{"key": "region", "value": "us"}], [], [{"key": "region", "value": "eu"}]])
        .cast(pl.Map(pl.String, pl.String)),
    })
    return parquet_bytes(df)


CONTENT = {
    "parquet": _parquet,
    "ndjson": lambda: ndjson(*RECORDS),
    "jsonl": lambda: ndjson(*RECORDS),
    "json": lambda: json.dumps(RECORDS, indent=2),
    "csv": lambda: CSV_TEXT,
}


def _assert_the_three_records(lk, name):
    ev = events(lk)
    assert ev.select("customer_id", "meter_api_name", "meter_value", "event_time", "unique_id", "row_number").rows() == [
        ("c1", "api_calls", Decimal("1.5"), T0_DT, "u1", 1),
        ("c2", "seats", None, T0_DT + dt.timedelta(seconds=1), None, 2),
    ]
    assert ev["dimensions"].to_list() == [{"region": "us"}, {}]
    assert ev["source_file"].to_list() == [name, name]
    assert ev["event_date"].to_list() == [dt.date(2026, 2, 2)] * 2
    assert ev["is_cancel"].to_list() == [False, False]
    q = quarantine(lk)
    assert q.select("source_file", "row_number", "reason", "detail", "meter_api_name", "unique_id").rows() == [
        (name, 3, "missing_field", "customer_id is missing or empty", "api_calls", "u3"),
    ]
    assert q["customer_id"].to_list() == [None]
    f = files(lk).row(0, named=True)
    assert (f["source_file"], f["rows_read"], f["accepted"], f["duplicates"], f["quarantined"], f["status"]) == (
        name, 3, 2, 0, 1, "ingested")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("kind", ["parquet", "ndjson", "jsonl", "json", "csv"])
def test_format(lake, kind, gz):
    name = f"in/events.{kind}" + (".gz" if gz else "")
    land(lake, name, CONTENT[kind]())
    rep = ingest(lake)
    _assert_the_three_records(lake, name)
    assert files(lake)["format"].to_list() == [("ndjson" if kind == "jsonl" else kind) + (".gz" if gz else "")]
    assert rep.files[0].line(1, 1) == f"[1/1] raw/{name}: 3 rows, 2 accepted, 0 duplicates, 1 quarantined"


def test_quarantine_keeps_the_raw_record_as_read(lake):
    land(lake, "a.csv", CSV_TEXT)
    land(lake, "b.ndjson", ndjson(*RECORDS))
    ingest(lake)
    q = {r["source_file"]: r for r in quarantine(lake).iter_rows(named=True)}
    assert json.loads(q["a.csv"]["raw"]) == {
        "customer_id": "", "meter_api_name": "api_calls", "meter_value": "2",
        "meter_time_in_millis": str(T0 + 2000), "unique_id": "u3", "region": "eu"}
    assert q["a.csv"]["dimensions"] == '{"region":"eu"}'
    assert q["a.csv"]["meter_time_in_millis"] == str(T0 + 2000)
    assert json.loads(q["b.ndjson"]["raw"]) == RECORDS[2]
    assert json.loads(q["b.ndjson"]["dimensions"]) == {"region": "eu"}
    assert q["b.ndjson"]["meter_value"] == "2"


def test_amberflo_camelcase_names(lake):
    land(lake, "camel.ndjson", ndjson(
        {"customerId": "c1", "meterApiName": "api_calls", "meterValue": "3", "meterTimeInMillis": T0,
         "uniqueId": "x-1", "dimensions": {"region": "us"}}))
    land(lake, "camel.csv", f"customerId,meterApiName,meterValue,meterTimeInMillis,uniqueId\nc2,api_calls,4,{T0},x-2\n")
    land(lake, "camel.parquet", parquet_bytes(pl.DataFrame({
        "customerId": ["c1"], "meterApiName": ["api_calls"], "meterValue": [5.25], "meterTimeInMillis": [T0],
        "uniqueId": ["x-3"]})))
    ingest(lake)
    assert events(lake).select("source_file", "customer_id", "meter_value", "unique_id", "event_time").rows() == [
        ("camel.csv", "c2", Decimal(4), "x-2", T0_DT),
        ("camel.ndjson", "c1", Decimal(3), "x-1", T0_DT),
        ("camel.parquet", "c1", Decimal("5.25"), "x-3", T0_DT),
    ]
    assert quarantine(lake).height == 0


def test_csv_extra_columns_are_dimensions(lake):
    land(lake, "x.csv", "customer_id,meter_api_name,meter_value,meter_time_in_millis,region,tier,user\n"
                        f"c1,api_calls,1,{T0},us,gold,\n"
                        f"c1,api_calls,2,{T0 + 1},eu,,ann\n")
    ingest(lake)
    assert events(lake)["dimensions"].to_list() == [
        {"region": "us", "tier": "gold"},  # an empty cell is an absent dimension
        {"region": "eu", "user": "ann"},
    ]


def test_csv_dimensions_column_holds_a_json_object(lake):
    land(lake, "x.csv", 'customer_id,meter_api_name,meter_value,meter_time_in_millis,dimensions,zone\n'
                        f'c1,api_calls,1,{T0},"{{""region"": ""us""}}",z1\n')
    ingest(lake)
    assert events(lake)["dimensions"].to_list() == [{"region": "us", "zone": "z1"}]


def test_json_unknown_top_level_keys_are_ignored(lake):
    land(lake, "x.ndjson", ndjson(event(note="hello", region="not a dimension")))
    ingest(lake)
    assert events(lake)["dimensions"].to_list() == [{}]


@pytest.mark.parametrize("how", ["map", "struct", "json_string"])
def test_parquet_dimensions_as_map_struct_or_json(lake, how):
    if how == "map":
        dims = pl.Series([[{"key": "region", "value": "us"}, {"key": "tier", "value": "gold"}],
                          [{"key": "region", "value": "eu"}]]).cast(pl.Map(pl.String, pl.String))
    elif how == "struct":  # a null field is an absent dimension
        dims = pl.Series([{"region": "us", "tier": "gold"}, {"region": "eu", "tier": None}])
    else:
        dims = pl.Series(['{"region": "us", "tier": "gold"}', '{"region": "eu"}'])
    land(lake, "d.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c2"], "meter_api_name": ["api_calls"] * 2, "meter_value": [1, 2],
        "meter_time_in_millis": [T0, T0], "dimensions": dims})))
    ingest(lake)
    assert events(lake)["dimensions"].to_list() == [{"region": "us", "tier": "gold"}, {"region": "eu"}]


def test_json_dimensions_object_or_encoded_string(lake):
    land(lake, "d.ndjson", ndjson(event(dimensions={"tier": "gold", "region": "us"}),
                                  event(ms=T0 + 1, dimensions='{"region": "eu"}')))
    ingest(lake)
    # stored as a MAP, keys sorted
    assert [list(d.items()) for d in events(lake)["dimensions"].to_list()] == [
        [("region", "us"), ("tier", "gold")], [("region", "eu")]]


def test_event_time_iso_strings_tz_aware_or_naive(lake):
    land(lake, "t.ndjson", ndjson(
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1, "event_time": T0_ISO},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 2, "event_time": "2026-02-02T03:40:00+01:00"},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 3, "event_time": "2026-02-02T02:40:00.250"},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 4, "event_time": "2026-02-02 02:40:00"},
    ))
    ingest(lake)
    assert events(lake)["event_time"].to_list() == [
        T0_DT, T0_DT, T0_DT + dt.timedelta(milliseconds=250), T0_DT]


def test_meter_time_in_millis_wins_over_event_time(lake):
    land(lake, "t.ndjson", ndjson(event(event_time="2026-01-20T00:00:00Z")))
    ingest(lake)
    assert events(lake)["event_time"].to_list() == [T0_DT]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", None], ids=["utc", "paris", "naive"])
def test_parquet_timestamp_event_time(lake, tz):
    local = dt.datetime(2026, 2, 2, 3, 40) if tz == "Europe/Paris" else dt.datetime(2026, 2, 2, 2, 40)
    col = pl.Series("event_time", [local], dtype=pl.Datetime("us"))
    if tz:
        col = col.dt.replace_time_zone(tz)
    land(lake, "t.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1"], "meter_api_name": ["api_calls"], "meter_value": [1.0]}).with_columns(col)))
    ingest(lake)
    assert events(lake)["event_time"].to_list() == [T0_DT]  # naive = UTC


def test_parquet_decimal_and_integer_values(lake):
    land(lake, "v.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1"], "meter_api_name": ["api_calls"] * 2,
        "meter_value": pl.Series([Decimal("0.123456789"), Decimal("10")], dtype=pl.Decimal(20, 9)),
        "meter_time_in_millis": [T0, T0 + 1]})))
    land(lake, "w.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c2"], "meter_api_name": ["api_calls"], "meter_value": [7],
        "meter_time_in_millis": [T0]})))
    ingest(lake)
    assert events(lake)["meter_value"].to_list() == [Decimal("0.123456789"), Decimal(10), Decimal(7)]


def test_json_array_may_hold_concatenated_objects(lake):
    land(lake, "x.json", json.dumps(event()) + "\n" + json.dumps(event(ms=T0 + 1), indent=1))
    ingest(lake)
    assert events(lake)["row_number"].to_list() == [1, 2]


def test_csv_quoted_line_breaks_and_blank_lines(lake):
    land(lake, "x.csv", "customer_id,meter_api_name,meter_value,meter_time_in_millis,note\n\n"
                        f'c1,api_calls,1,{T0},"two\nlines"\n\n'
                        f"c2,api_calls,2,{T0}, \n")
    ingest(lake)
    ev = events(lake)
    assert ev.select("customer_id", "row_number").rows() == [("c1", 1), ("c2", 2)]  # blank lines are not records
    assert ev["dimensions"].to_list()[0] == {"note": "two\nlines"}


def test_files_in_sub_folders_are_found_in_path_order(lake):
    land(lake, "b/2.ndjson", ndjson(event(ms=T0 + 2)))
    land(lake, "a/z/1.ndjson", ndjson(event(ms=T0 + 1)))
    land(lake, "a/.hidden.ndjson", ndjson(event(ms=T0 + 3)))
    lines: list[str] = []
    ingest(lake, progress=lines.append)
    assert files(lake)["source_file"].to_list() == ["a/z/1.ndjson", "b/2.ndjson"]
    assert lines == ["[1/2] raw/a/z/1.ndjson: 1 rows, 1 accepted, 0 duplicates, 0 quarantined",
                     "[2/2] raw/b/2.ndjson: 1 rows, 1 accepted, 0 duplicates, 0 quarantined"]


def test_empty_files(lake):
    land(lake, "e.ndjson", "\n\n")
    land(lake, "e.csv", "")
    land(lake, "h.csv", "customer_id,meter_api_name,meter_value,meter_time_in_millis\n")
    ingest(lake)
    f = files(lake)
    assert f.select("source_file", "rows_read", "status").rows() == [
        ("e.csv", 0, "ingested"), ("e.ndjson", 0, "ingested"), ("h.csv", 0, "ingested")]
