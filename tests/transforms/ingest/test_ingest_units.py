"""The ingest transforms on tiny inputs, without Prefect and without a lake."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pyarrow as pa
import pytest

from transforms.ingest.dedupe import create_seen_sql, firsts_sql, taken_sql, winners_sql
from transforms.ingest.formats import Format, detect_format
from transforms.ingest.parse import parse_batch, prepare
from transforms.ingest.readers import RawBatch
from transforms.ingest.report import FileResult, IngestReport
from transforms.ingest.validate import REASONS, Rules, validate

UTC = dt.timezone.utc
AS_OF = dt.datetime(2026, 2, 10, tzinfo=UTC)


@pytest.mark.parametrize("name, fmt", [
    ("a.parquet", Format("parquet", False)), ("a.PARQUET.GZ", Format("parquet", True)),
    ("x/y.ndjson", Format("ndjson", False)), ("y.jsonl.gz", Format("ndjson", True)),
    ("z.json", Format("json", False)), ("z.csv.gz", Format("csv", True)),
    ("notes.txt", None), ("data.csv.zip", None), ("gz", None),
])
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


def _json_batch(*records) -> RawBatch:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return RawBatch("json", pa.table({"__rn": pa.array(range(1, len(lines) + 1), pa.int64()), "c0": lines}))


def _run(*records, rules=None, valueless=("seats",)):
    con = duckdb.connect()
    prepare(con, list(valueless))
    parsed = parse_batch(con, _json_batch(*records))
    return validate(parsed, rules or Rules(AS_OF, 60, frozenset(valueless)))


def _ev(**kw):
    rec = {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 1, "meter_time_in_millis": 1_770_000_000_000}
    rec.update(kw)
    return {k: v for k, v in rec.items() if v is not ...}


def test_validate_splits_and_names_one_reason_per_record():
    v = _run(_ev(), _ev(customer_id=...), _ev(meter_value="x"), _ev(meter_api_name="seats", meter_value=...))
    assert v.accepted["row_number"].to_list() == [1, 4]
    assert v.rejected.select("row_number", "reason").rows() == [(2, "missing_field"), (3, "bad_type")]
    assert set(v.rejected["reason"]) <= set(REASONS)


def test_future_tolerance_and_age_limit_are_inclusive():
    ms = int(AS_OF.timestamp() * 1000)
    rules = Rules(AS_OF, 1, frozenset())
    v = _run(_ev(meter_time_in_millis=ms + 300_000), _ev(meter_time_in_millis=ms + 300_001),
             _ev(meter_time_in_millis=ms - 86_400_000), _ev(meter_time_in_millis=ms - 86_400_001), rules=rules)
    assert v.accepted["row_number"].to_list() == [1, 3]
    assert v.rejected["reason"].to_list() == ["future_event", "too_old"]


def test_rules_need_an_aware_instant():
    with pytest.raises(ValueError):
        Rules(dt.datetime(2026, 1, 1))


def test_parse_gives_exact_values_keys_and_dates():
    con = duckdb.connect()
    prepare(con, [])
    df = parse_batch(con, _json_batch(
        _ev(meter_value="0.1", unique_id="u"),
        _ev(meter_value=0.1, dimensions={"b": "2", "a": "1"}),
        _ev(meter_value=0.1, dimensions={"a": "1", "b": "2"}),
        _ev(meter_time_in_millis=..., event_time="2026-02-01T23:30:00-01:00"),
    ))
    assert [str(v) for v in df["p_value"]] == ["0.100000000", "0.100000000", "0.100000000", "1.000000000"]
    k = df["dedup_key"].to_list()
    assert k[0] == 'u:["c1","api_calls","u",false]'
    assert k[1] == k[2] == 'c:["c1","api_calls",1770000000000000,"0.100000000",[["a","1"],["b","2"]],false]'
    assert df["event_date"].to_list()[3] == dt.date(2026, 2, 2)  # the UTC date


def test_winners_first_by_file_then_row_and_not_seen():
    con = duckdb.connect()
    con.execute(create_seen_sql("seen"))
    con.execute("INSERT INTO seen VALUES (DATE '2026-02-02', 'k-old')")
    con.execute("""CREATE TABLE cand AS SELECT * FROM (VALUES
        (DATE '2026-02-02', 'k1', 2, 1, 'b'), (DATE '2026-02-02', 'k1', 1, 9, 'a'),
        (DATE '2026-02-02', 'k1', 1, 10, 'a2'), (DATE '2026-02-03', 'k1', 3, 1, 'other date'),
        (DATE '2026-02-02', 'k-old', 1, 1, 'taken before')) t(event_date, dedup_key, file_seq, row_number, what)""")
    con.execute(f"CREATE TABLE taken AS {taken_sql('cand', 'seen')}")
    con.execute(f"CREATE TABLE firsts AS {firsts_sql('cand')}")
    got = con.sql(f"SELECT what FROM ({winners_sql('cand', 'taken', 'firsts')}) ORDER BY what").fetchall()
    assert got == [("a",), ("other date",)]


def test_report_lines_totals_and_markdown():
    rep = IngestReport(as_of=AS_OF, ingested_at=AS_OF, max_event_age_days=60, run_id="r", files=[
        FileResult("x.csv", "s1", "csv", 10, 7, 2, 1),
        FileResult("y.json", "s2", "json", status="unreadable", error="bad | file"),
        FileResult("z.csv", "s3", "csv", status="skipped", error="already ingested"),
    ], quarantine_by_reason={"bad_type": 1, "unreadable_file": 1}, undefined_customers={"ghost": 3})
    assert [f.line(i, 3) for i, f in enumerate(rep.files, 1)] == [
        "[1/3] raw/x.csv: 10 rows, 7 accepted, 2 duplicates, 1 quarantined",
        "[2/3] raw/y.json: unreadable (bad | file)",
        "[3/3] raw/z.csv: skipped (already ingested)",
    ]
    assert rep.totals == {"files_found": 3, "files_ingested": 1, "files_unreadable": 1, "files_skipped": 1,
                          "rows_read": 10, "accepted": 7, "duplicates": 2, "quarantined": 1, "cancellations": 0}
    assert rep.undefined == {"customers": {"ghost": 3}, "meters": {}}
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["undefined"]["customers"] == {"ghost": 3} and d["files"][1]["status"] == "unreadable"
    md = rep.to_markdown()
    assert "| ghost | 3 |" in md and "bad \\| file" in md and "z.csv" not in md
