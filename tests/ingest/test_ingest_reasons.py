"""One test per SPEC §2 reason code: the exact records quarantined, with reason and detail."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import polars as pl

from tests.ingest.conftest import (
    AS_OF, T0, event, events, files, ingest, land, ndjson, parquet_bytes, quarantine,
)

AS_OF_MS = int(AS_OF.timestamp() * 1000)
DAY_MS = 86_400_000


def details(lk) -> list[tuple]:
    return [(r["row_number"], r["reason"], r["detail"]) for r in quarantine(lk).iter_rows(named=True)]


def test_missing_field(lake):
    land(lake, "m.ndjson", ndjson(
        {"meter_api_name": "api_calls", "meter_value": 1, "meter_time_in_millis": T0},
        {"customer_id": "c1", "meter_value": 1, "meter_time_in_millis": T0},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_time_in_millis": T0},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1},
        {"customer_id": "  ", "meter_api_name": "api_calls", "meter_value": 1, "meter_time_in_millis": T0},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": None, "meter_time_in_millis": T0},
        # count and unique_count meters need no value
        {"customer_id": "c1", "meter_api_name": "seats", "meter_time_in_millis": T0},
        {"customer_id": "c1", "meter_api_name": "users", "meter_time_in_millis": T0, "dimensions": {"user": "u"}},
    ))
    ingest(lake)
    value = "meter_value is missing (required unless the meter is a count or unique_count meter)"
    assert details(lake) == [
        (1, "missing_field", "customer_id is missing or empty"),
        (2, "missing_field", "meter_api_name is missing or empty"),
        (3, "missing_field", value),
        (4, "missing_field", "meter_time_in_millis (or event_time) is missing"),
        (5, "missing_field", "customer_id is missing or empty"),
        (6, "missing_field", value),
    ]
    assert events(lake)["meter_api_name"].to_list() == ["seats", "users"]


def test_bad_type(lake):
    land(lake, "t.ndjson", ndjson(
        event(value="abc"),
        event(value=True),
        event(cid={"id": 1}),
        event(unique_id=["a"]),
        event(dimensions=["region", "us"]),
        event(value="1e40"),
        event(cid="c" * 201),
        "{not json",
        "[1, 2]",
        event(value="1_000"),
        event(meter=7),
    ))
    land(lake, "t.csv", "customer_id,meter_api_name,meter_value,meter_time_in_millis,region\n"
                        f"c1,api_calls,1,{T0},us\n"
                        f"c1,api_calls,2,{T0},us,extra\n"
                        f"c1,api_calls,3,{T0 + 1}\n"
                        f"c1,api_calls,4,{T0 + 2},eu\n")
    ingest(lake)
    q = quarantine(lake)
    got = [(r["source_file"], r["row_number"], r["reason"], r["detail"]) for r in q.iter_rows(named=True)]
    assert got == [
        ("t.csv", 2, "bad_type", "CSV record has 6 fields, the header has 5"),
        ("t.csv", 3, "bad_type", "CSV record has 4 fields, the header has 5"),
        ("t.ndjson", 1, "bad_type", 'meter_value "abc" is not a number'),
        ("t.ndjson", 2, "bad_type", "meter_value must be a number, got bool"),
        ("t.ndjson", 3, "bad_type", "customer_id must be a string, got object"),
        ("t.ndjson", 4, "bad_type", "unique_id must be a string, got array"),
        ("t.ndjson", 5, "bad_type", "dimensions must be an object of string values, got array"),
        ("t.ndjson", 6, "bad_type", 'meter_value "1e40" is out of range for DECIMAL(38, 9)'),
        ("t.ndjson", 7, "bad_type", "customer_id must be 1–200 characters, got 201"),
        ("t.ndjson", 8, "bad_type", "the record is not valid JSON"),
        ("t.ndjson", 9, "bad_type", "the record is a JSON array, not an object"),
        ("t.ndjson", 10, "bad_type", 'meter_value "1_000" is not a number'),
    ]
    # a record of the wrong width keeps what it had, and its raw fields
    assert json.loads(q.row(0, named=True)["raw"]) == ["c1", "api_calls", "2", str(T0), "us", "extra"]
    assert q.row(0, named=True)["customer_id"] == "c1"
    # an integer meter name is read as its text; the good CSV rows are kept
    assert events(lake).select("source_file", "row_number", "meter_api_name").rows() == [
        ("t.csv", 1, "api_calls"), ("t.csv", 4, "api_calls"), ("t.ndjson", 11, "7")]


def test_non_finite_value(lake):
    land(lake, "n.ndjson", "\n".join([
        json.dumps(event(value="NaN")),
        json.dumps(event(value="-Infinity")),
        '{"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": NaN, "meter_time_in_millis": %d}' % T0,
        json.dumps(event(value="1e400")),
        json.dumps(event(meter="seats", value="NaN")),  # ignored for a count meter
    ]) + "\n")
    land(lake, "n.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1"], "meter_api_name": ["api_calls"] * 2,
        "meter_value": [float("inf"), float("nan")], "meter_time_in_millis": [T0, T0]})))
    ingest(lake)
    assert [(r["source_file"], r["row_number"], r["reason"], r["detail"]) for r in quarantine(lake).iter_rows(named=True)] == [
        ("n.ndjson", 1, "non_finite_value", 'meter_value "NaN" is not finite'),
        ("n.ndjson", 2, "non_finite_value", 'meter_value "-Infinity" is not finite'),
        ("n.ndjson", 3, "non_finite_value", 'meter_value "NaN" is not finite'),
        ("n.ndjson", 4, "non_finite_value", 'meter_value "1e400" is not finite'),
        ("n.parquet", 1, "non_finite_value", 'meter_value "inf" is not finite'),
        ("n.parquet", 2, "non_finite_value", 'meter_value "nan" is not finite'),
    ]
    assert events(lake).select("meter_api_name", "meter_value").rows() == [("seats", None)]


def test_bad_timestamp(lake):
    land(lake, "b.ndjson", ndjson(
        event(ms=0),
        event(ms=-5),
        event(ms="soon"),
        event(ms=T0 + 0.5),
        event(ms=253402300800000),  # year 10000
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1, "event_time": "yesterday"},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1, "event_time": "1969-12-31T23:59:59Z"},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1, "event_time": "infinity"},
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1, "event_time": 1770000000},
        event(ms=True),
    ))
    ingest(lake)
    whole = " is not a whole number of epoch milliseconds (up to year 9999)"
    assert details(lake) == [
        (1, "bad_timestamp", 'meter_time_in_millis "0" is not after 1970-01-01T00:00:00Z'),
        (2, "bad_timestamp", 'meter_time_in_millis "-5" is not after 1970-01-01T00:00:00Z'),
        (3, "bad_timestamp", 'meter_time_in_millis "soon"' + whole),
        (4, "bad_timestamp", f'meter_time_in_millis "{T0 + 0.5}"' + whole),
        (5, "bad_timestamp", 'meter_time_in_millis "253402300800000"' + whole),
        (6, "bad_timestamp", 'event_time "yesterday" is not an ISO-8601 timestamp'),
        (7, "bad_timestamp", 'event_time "1969-12-31T23:59:59Z" is not after 1970-01-01T00:00:00Z'),
        (8, "bad_timestamp", 'event_time "infinity" is not an ISO-8601 timestamp'),
        (9, "bad_timestamp", 'event_time "1770000000" is not an ISO-8601 timestamp'),
        (10, "bad_timestamp", 'meter_time_in_millis "true"' + whole),
    ]
    assert events(lake).height == 0


def test_future_event(lake):
    five_min = 5 * 60_000
    land(lake, "f.ndjson", ndjson(event(ms=AS_OF_MS + five_min), event(ms=AS_OF_MS + five_min + 1),
                                  event(ms=AS_OF_MS + DAY_MS)))
    ingest(lake)
    assert details(lake) == [
        (2, "future_event", "event time 2026-02-10T00:05:00.001000Z is more than 5 minutes after as_of 2026-02-10T00:00:00Z"),
        (3, "future_event", "event time 2026-02-11T00:00:00Z is more than 5 minutes after as_of 2026-02-10T00:00:00Z"),
    ]
    assert events(lake)["row_number"].to_list() == [1]


def test_too_old(lake):
    limit = AS_OF_MS - 60 * DAY_MS
    land(lake, "o.ndjson", ndjson(event(ms=limit), event(ms=limit - 1), event(ms=limit - 30 * DAY_MS)))
    ingest(lake)
    assert details(lake) == [
        (2, "too_old", "event time 2025-12-11T23:59:59.999000Z is older than as_of 2026-02-10T00:00:00Z minus max_event_age_days=60"),
        (3, "too_old", "event time 2025-11-12T00:00:00Z is older than as_of 2026-02-10T00:00:00Z minus max_event_age_days=60"),
    ]


def test_too_old_is_lifted_by_the_argument_for_backfills(lake):
    limit = AS_OF_MS - 60 * DAY_MS
    land(lake, "o.ndjson", ndjson(event(ms=limit - 1), event(ms=limit - 30 * DAY_MS), event(ms=limit - 40 * DAY_MS)))
    rep = ingest(lake, max_event_age_days=95)
    assert rep.max_event_age_days == 95
    assert details(lake) == [
        (3, "too_old", "event time 2025-11-02T00:00:00Z is older than as_of 2026-02-10T00:00:00Z minus max_event_age_days=95")]


def test_too_old_follows_the_catalogue_setting(lake):
    (lake.catalog_dir / "settings.yaml").write_text("max_event_age_days: 10\n")
    land(lake, "o.ndjson", ndjson(event(ms=AS_OF_MS - 11 * DAY_MS), event(ms=AS_OF_MS - 9 * DAY_MS)))
    ingest(lake)
    assert [r[:2] for r in details(lake)] == [(1, "too_old")]


def test_bad_dimension(lake):
    land(lake, "d.ndjson", "\n".join([
        json.dumps(event(dimensions={"bad key": "x"})),
        json.dumps(event(dimensions={"1st": "x"})),
        json.dumps(event(dimensions={"k" * 65: "x"})),
        json.dumps(event(dimensions={"region": ""})),
        json.dumps(event(dimensions={"region": "v" * 201})),
        json.dumps(event(dimensions={"tier": 3})),
        json.dumps(event(dimensions={"region": None})),
        '{"customer_id":"c1","meter_api_name":"api_calls","meter_value":1,"meter_time_in_millis":%d,'
        '"dimensions":{"region":"us","region":"eu"}}' % T0,
        json.dumps(event(dimensions={"ok_key.with-dots": "v" * 200, "_x": "1"})),
    ]) + "\n")
    land(lake, "d.csv", 'customer_id,meter_api_name,meter_value,meter_time_in_millis,dimensions,region\n'
                        f'c1,api_calls,1,{T0},"{{""region"":""us""}}",eu\n'
                        f'c1,api_calls,1,{T0 + 1},,eu\n')
    ingest(lake)
    got = [(r["source_file"], r["row_number"], r["reason"], r["detail"]) for r in quarantine(lake).iter_rows(named=True)]
    rule = "^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
    assert got == [
        ("d.csv", 1, "bad_dimension", 'dimension key "region" appears more than once'),
        ("d.ndjson", 1, "bad_dimension", f'dimension key "bad key" does not match {rule}'),
        ("d.ndjson", 2, "bad_dimension", f'dimension key "1st" does not match {rule}'),
        ("d.ndjson", 3, "bad_dimension", f'dimension key "{"k" * 65}" does not match {rule}'),
        ("d.ndjson", 4, "bad_dimension", 'dimension "region" value must be a string of 1–200 characters'),
        ("d.ndjson", 5, "bad_dimension", 'dimension "region" value must be a string of 1–200 characters'),
        ("d.ndjson", 6, "bad_dimension", 'dimension "tier" value must be a string of 1–200 characters'),
        ("d.ndjson", 7, "bad_dimension", 'dimension "region" value must be a string of 1–200 characters'),
        ("d.ndjson", 8, "bad_dimension", 'dimension key "region" appears more than once'),
    ]
    assert events(lake).select("source_file", "row_number").rows() == [("d.csv", 2), ("d.ndjson", 9)]


def test_bad_dimension_in_parquet_map_and_struct(lake):
    land(lake, "m.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1"], "meter_api_name": ["api_calls"] * 2, "meter_value": [1, 2],
        "meter_time_in_millis": [T0, T0 + 1],
        "dimensions": pl.Series([[{"key": "no way", "value": "x"}], [{"key": "ok", "value": "y"}]])
        .cast(pl.Map(pl.String, pl.String))})))
    land(lake, "s.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1"], "meter_api_name": ["api_calls"] * 2, "meter_value": [1, 2],
        "meter_time_in_millis": [T0, T0 + 1],
        "dimensions": [{"ok": "a", "n": None}, {"ok": "b", "n": 5}]})))
    ingest(lake)
    assert [(r["source_file"], r["row_number"], r["detail"]) for r in quarantine(lake).iter_rows(named=True)] == [
        ("m.parquet", 1, 'dimension key "no way" does not match ^[A-Za-z_][A-Za-z0-9_.-]{0,63}$'),
        ("s.parquet", 2, 'dimension "n" value must be a string of 1–200 characters'),
    ]


def test_unreadable_file(lake):
    good = ndjson(event())
    land(lake, "a-good.ndjson", good)
    (lake.raw_dir / "b-truncated.ndjson.gz").write_bytes(gzip.compress((good * 500).encode())[:60])
    land(lake, "c-not.parquet", b"PAR1 garbage")
    land(lake, "d-notes.txt", "hello")
    land(lake, "e-latin1.csv", "customer_id,meter_api_name,meter_value,meter_time_in_millis,city\n".encode()
         + f"c1,api_calls,1,{T0},".encode() + "Zürich\n".encode("latin-1"))
    land(lake, "f-broken.json", '[{"customer_id": "c1"}, {"customer_id": ')
    land(lake, "g-dup-header.csv", "customer_id,customer_id\nc1,c2\n")
    land(lake, "h-also-good.csv", f"customer_id,meter_api_name,meter_value,meter_time_in_millis\nc2,api_calls,1,{T0}\n")
    rep = ingest(lake)
    f = files(lake)
    assert f.select("source_file", "status", "rows_read", "accepted", "duplicates", "quarantined").rows() == [
        ("a-good.ndjson", "ingested", 1, 1, 0, 0),
        ("b-truncated.ndjson.gz", "unreadable", 0, 0, 0, 0),
        ("c-not.parquet", "unreadable", 0, 0, 0, 0),
        ("d-notes.txt", "unreadable", 0, 0, 0, 0),
        ("e-latin1.csv", "unreadable", 0, 0, 0, 0),
        ("f-broken.json", "unreadable", 0, 0, 0, 0),
        ("g-dup-header.csv", "unreadable", 0, 0, 0, 0),
        ("h-also-good.csv", "ingested", 1, 1, 0, 0),
    ]
    q = quarantine(lake)
    assert q.select("source_file", "row_number", "reason").rows() == [
        (name, None, "unreadable_file") for name in
        ["b-truncated.ndjson.gz", "c-not.parquet", "d-notes.txt", "e-latin1.csv", "f-broken.json", "g-dup-header.csv"]]
    detail = dict(zip(q["source_file"], q["detail"]))
    assert detail["d-notes.txt"].startswith("unsupported file type")
    assert detail["g-dup-header.csv"] == "CSV header names column 'customer_id' twice"
    assert "end-of-stream" in detail["b-truncated.ndjson.gz"] and "Parquet" in detail["c-not.parquet"]
    assert all(str(lake.root) not in d for d in detail.values())  # no absolute paths in the table
    assert f.filter(pl.col("status") == "unreadable")["error"].to_list() == q["detail"].to_list()
    assert rep.quarantine_by_reason == {"unreadable_file": 6}
    assert events(lake).height == 2
    # the bytes are kept, and a re-run does not try again
    assert (lake.raw_dir / "c-not.parquet").read_bytes() == b"PAR1 garbage"
    assert ingest(lake).files_unreadable == 0


def test_each_record_gets_the_first_reason_in_spec_order(lake):
    land(lake, "x.ndjson", ndjson(
        {"meter_api_name": "api_calls", "meter_value": "abc", "meter_time_in_millis": -1, "dimensions": {"a b": "x"}},
        event(value="abc", ms=-1, dimensions={"a b": "x"}),
        event(value="NaN", ms=-1, dimensions={"a b": "x"}),
        event(ms=-1, dimensions={"a b": "x"}),
        event(ms=AS_OF_MS + DAY_MS, dimensions={"a b": "x"}),
    ))
    ingest(lake)
    assert [r[1] for r in details(lake)] == [
        "missing_field", "bad_type", "non_finite_value", "bad_timestamp", "future_event"]


def test_conservation_per_file(lake):
    land(lake, "x.ndjson", ndjson(event(), event(), event(cid=None), "oops", event(ms=T0 + 1)))
    ingest(lake)
    f = files(lake).row(0, named=True)
    assert (f["rows_read"], f["accepted"], f["duplicates"], f["quarantined"]) == (5, 2, 1, 2)
    assert f["rows_read"] == f["accepted"] + f["duplicates"] + f["quarantined"]
    assert quarantine(lake).height == f["quarantined"] and events(lake).height == f["accepted"]


INVISIBLE = "has an invisible or control character"
PADDED = "has leading or trailing whitespace"


def test_bad_identifier(lake):
    """Ids with control characters, zero-width or other format characters, or padding would show
    as another id: quarantined `bad_identifier`, the id shown escaped. Ordinary punctuation is data."""
    land(lake, "i.ndjson", ndjson(
        event(cid="c1\u200b"),  # zero-width space
        event(cid="c\x001"),  # NUL
        event(cid=" c1"),
        event(cid="c1\u00a0"),  # a no-break space at the end
        event(meter="api_calls\u2060"),  # word joiner
        event(meter="api_calls\x85"),  # a C1 control (NEL)
        event(unique_id="\ufeffu1"),  # byte-order mark
        event(unique_id="u1\n"),
        event(cid="c2", meter="api; DROP TABLE events", ms=T0 + 1),
        event(cid="c-1 (EU) #2", ms=T0 + 2),
        event(unique_id="  ", ms=T0 + 3),  # a blank unique_id means none
        event(cid="", meter="x\u200b"),  # missing_field comes first
    ))
    land(lake, "i.csv", "customer_id,meter_api_name,meter_value,meter_time_in_millis\n"
                        f"c1, api_calls,1,{T0}\n"
                        f"c1,api_calls,1,{T0 + 5}\n")
    ingest(lake)
    got = [(r["source_file"], r["row_number"], r["reason"], r["detail"]) for r in quarantine(lake).iter_rows(named=True)]
    assert got == [
        ("i.csv", 1, "bad_identifier", f'meter_api_name " api_calls" {PADDED}'),
        ("i.ndjson", 1, "bad_identifier", f'customer_id "c1\\u200b" {INVISIBLE} (U+200B) at character 3'),
        ("i.ndjson", 2, "bad_identifier", f'customer_id "c\\u00001" {INVISIBLE} (U+0000) at character 2'),
        ("i.ndjson", 3, "bad_identifier", f'customer_id " c1" {PADDED}'),
        ("i.ndjson", 4, "bad_identifier", f'customer_id "c1\\u00a0" {PADDED}'),
        ("i.ndjson", 5, "bad_identifier", f'meter_api_name "api_calls\\u2060" {INVISIBLE} (U+2060) at character 10'),
        ("i.ndjson", 6, "bad_identifier", f'meter_api_name "api_calls\\u0085" {INVISIBLE} (U+0085) at character 10'),
        ("i.ndjson", 7, "bad_identifier", f'unique_id "\\ufeffu1" {INVISIBLE} (U+FEFF) at character 1'),
        ("i.ndjson", 8, "bad_identifier", f'unique_id "u1\\u000a" {INVISIBLE} (U+000A) at character 3'),
        ("i.ndjson", 12, "missing_field", "customer_id is missing or empty"),
    ]
    assert events(lake).select("source_file", "row_number", "customer_id", "meter_api_name", "unique_id").rows() == [
        ("i.csv", 2, "c1", "api_calls", None),
        ("i.ndjson", 9, "c2", "api; DROP TABLE events", None),
        ("i.ndjson", 10, "c-1 (EU) #2", "api_calls", None),
        ("i.ndjson", 11, "c1", "api_calls", None),
    ]


def test_bad_identifier_is_the_same_on_the_typed_and_the_general_parquet_path(lake):
    ids = ["c1\u200b", " c1", "c1", "c1", "c\x001"]
    meters = ["api_calls", "api_calls", "api_calls\u2060", "api_calls", "api_calls"]
    uids = [None, None, None, "u\ufeff", None]
    base = {"customer_id": ids, "meter_api_name": meters, "meter_value": [1, 2, 3, 4, 5],
            "meter_time_in_millis": [T0 + i for i in range(5)], "unique_id": uids}
    typed = pl.DataFrame({**base, "dimensions": pl.Series([[{"key": "r", "value": "x"}]] * 5)
                          .cast(pl.Map(pl.String, pl.String))})
    general = pl.DataFrame({**base, "dimensions": [{"r": "x"}] * 5})  # a STRUCT: the general path
    land(lake, "a-typed.parquet", parquet_bytes(typed))
    land(lake, "b-general.parquet", parquet_bytes(general))
    land(lake, "c.ndjson", ndjson(*[{k: v[i] for k, v in base.items() if v[i] is not None} | {"dimensions": {"r": "x"}}
                                    for i in range(5)]))
    ingest(lake)
    q = quarantine(lake)
    by_file = {f: q.filter(pl.col("source_file") == f).select("row_number", "reason", "detail").rows()
               for f in ("a-typed.parquet", "b-general.parquet", "c.ndjson")}
    assert by_file["a-typed.parquet"] == [
        (1, "bad_identifier", f'customer_id "c1\\u200b" {INVISIBLE} (U+200B) at character 3'),
        (2, "bad_identifier", f'customer_id " c1" {PADDED}'),
        (3, "bad_identifier", f'meter_api_name "api_calls\\u2060" {INVISIBLE} (U+2060) at character 10'),
        (4, "bad_identifier", f'unique_id "u\\ufeff" {INVISIBLE} (U+FEFF) at character 2'),
        (5, "bad_identifier", f'customer_id "c\\u00001" {INVISIBLE} (U+0000) at character 2'),
    ]
    assert by_file["b-general.parquet"] == by_file["a-typed.parquet"] == by_file["c.ndjson"]
    assert events(lake).height == 0
