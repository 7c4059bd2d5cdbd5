"""Deduplication (SPEC §2): the first accepted event of a key wins, within a file, across files
of a run (sorted path order), and across runs on the same UTC event date; cancellations; the
sha256 skip; running twice changes nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl

from tests.ingest.conftest import (
    T0, event, events, files, ingest, land, ndjson, parquet_bytes, quarantine, snapshot, stored_keys,
)

DAY_MS = 86_400_000


def counts(lk) -> list[tuple]:
    return files(lk).select("source_file", "rows_read", "accepted", "duplicates", "quarantined").rows()


def test_unique_id_duplicates_within_a_file(lake):
    land(lake, "a.ndjson", ndjson(
        event(value=1, unique_id="u1"),
        event(value=2, unique_id="u1"),  # same key, another value: still a duplicate
        event(value=1, unique_id="u1", ms=T0 + 5),  # same date, another time: a duplicate
        event(cid="c2", value=1, unique_id="u1"),  # another customer: another key
        event(meter="seats", value=1, unique_id="u1"),  # another meter: another key
    ))
    ingest(lake)
    assert counts(lake) == [("a.ndjson", 5, 3, 2, 0)]
    assert events(lake).select("row_number", "meter_value").rows() == [(1, Decimal(1)), (4, Decimal(1)), (5, Decimal(1))]


def test_content_key_when_there_is_no_unique_id(lake):
    land(lake, "a.ndjson", ndjson(
        event(value=1, dimensions={"region": "us", "tier": "gold"}),
        event(value=1.0, dimensions={"tier": "gold", "region": "us"}),  # same content, keys reordered
        event(value="1.000000000", dimensions={"region": "us", "tier": "gold"}),  # same value
        event(value=1, dimensions={"region": "eu", "tier": "gold"}),  # another dimension value
        event(value=2, dimensions={"region": "us", "tier": "gold"}),  # another value
        event(value=1, ms=T0 + 1, dimensions={"region": "us", "tier": "gold"}),  # another time
        event(value=1, dimensions={"region": "us"}),  # fewer dimensions
    ))
    ingest(lake)
    assert counts(lake) == [("a.ndjson", 7, 5, 2, 0)]
    assert events(lake)["row_number"].to_list() == [1, 4, 5, 6, 7]
    keys = stored_keys(lake)["dedup_key"].to_list()
    assert keys[0] == 'c:["c1","api_calls",%d,"1.000000000",[["region","us"],["tier","gold"]],false]' % (T0 * 1000)
    assert all(k.startswith("c:") for k in keys) and len(set(keys)) == 5


def test_count_meter_content_key_ignores_the_value(lake):
    land(lake, "a.ndjson", ndjson(event(meter="seats", value=1), event(meter="seats", value=7),
                                  event(meter="seats")))
    ingest(lake)
    assert counts(lake) == [("a.ndjson", 3, 1, 2, 0)]


def test_duplicates_across_files_first_in_path_order_wins(lake):
    land(lake, "b/late.csv", f"customer_id,meter_api_name,meter_value,meter_time_in_millis,unique_id\nc1,api_calls,9,{T0},u1\n")
    land(lake, "a/early.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1"], "meter_api_name": ["api_calls"] * 2, "meter_value": [1.0, 2.0],
        "meter_time_in_millis": [T0, T0 + 1], "unique_id": ["u1", None]})))
    land(lake, "c.ndjson", ndjson(event(value=2, ms=T0 + 1)))  # content duplicate of a/early row 2
    ingest(lake)
    assert counts(lake) == [("a/early.parquet", 2, 2, 0, 0), ("b/late.csv", 1, 0, 1, 0), ("c.ndjson", 1, 0, 1, 0)]
    assert events(lake).select("source_file", "meter_value").rows() == [
        ("a/early.parquet", Decimal(1)), ("a/early.parquet", Decimal(2))]


def test_duplicates_across_runs_on_the_same_event_date(lake):
    land(lake, "1.ndjson", ndjson(event(value=1, unique_id="u1"), event(value=5)))
    ingest(lake)
    land(lake, "2.ndjson", ndjson(
        event(value=3, unique_id="u1", ms=T0 + 60_000),  # re-sent later the same day: duplicate
        event(value=5),  # content duplicate
        event(value=4, unique_id="u1", ms=T0 + 2 * DAY_MS),  # another UTC date: not looked for there
    ))
    rep = ingest(lake)
    assert rep.files[1].line(2, 2) == "[2/2] raw/2.ndjson: 3 rows, 1 accepted, 2 duplicates, 0 quarantined"
    assert counts(lake) == [("1.ndjson", 2, 2, 0, 0), ("2.ndjson", 3, 1, 2, 0)]
    assert events(lake).select("source_file", "meter_value").rows() == [
        ("1.ndjson", Decimal(1)), ("1.ndjson", Decimal(5)), ("2.ndjson", Decimal(4))]


def test_events_written_with_a_stored_key_column_still_deduplicate(lake):
    """Earlier versions stored a sha256 `dedup_key` column in the events files; keys are now
    computed from the event columns, so those files still take part (and still read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    land(lake, "1.ndjson", ndjson(event(value=1, unique_id="u1"), event(value=5, dimensions={"b": "2", "a": "1"})))
    ingest(lake)
    for f in lake.table_dir("events").rglob("*.parquet"):  # as an earlier version wrote them
        t = pq.read_table(f)
        pq.write_table(t.add_column(5, "dedup_key", pa.array(["u:" + "0" * 64] * t.num_rows)), f)
    land(lake, "2.ndjson", ndjson(
        event(value=3, unique_id="u1", ms=T0 + 60_000),  # duplicate by unique_id
        event(value=5, dimensions={"a": "1", "b": "2"}),  # content duplicate
        event(value=6),  # new
    ))
    ingest(lake)
    assert counts(lake) == [("1.ndjson", 2, 2, 0, 0), ("2.ndjson", 3, 1, 2, 0)]
    assert events(lake).select("source_file", "meter_value").rows() == [
        ("1.ndjson", Decimal(1)), ("1.ndjson", Decimal(5)), ("2.ndjson", Decimal(6))]
    assert "dedup_key" not in events(lake).columns


def test_duplicates_across_groups_of_files_in_one_run(lake, monkeypatch):
    """A run reads its files in groups (one per file here); a later group deduplicates against
    what earlier groups wrote on the same dates, however many groups back."""
    import flows.stages.ingest.plan as fi

    monkeypatch.setattr(fi, "GROUP_FILES", 1)
    day2 = T0 + DAY_MS
    land(lake, "1.ndjson", ndjson(event(value=1, unique_id="a"), event(value=2, unique_id="b", ms=day2)))
    land(lake, "2.ndjson", ndjson(event(value=3, unique_id="c"), event(value=9, unique_id="b", ms=day2 + 5)))
    land(lake, "3.ndjson", ndjson(event(value=7)))  # touches neither date's ids: content key
    land(lake, "4.ndjson", ndjson(
        event(value=4, unique_id="a", ms=T0 + 9),  # group 1's
        event(value=5, unique_id="c", ms=T0 + 9),  # group 2's
        event(value=7),  # group 3's content duplicate
        event(value=6, unique_id="d", ms=day2),  # new
    ))
    ingest(lake)
    assert counts(lake) == [("1.ndjson", 2, 2, 0, 0), ("2.ndjson", 2, 1, 1, 0), ("3.ndjson", 1, 1, 0, 0),
                            ("4.ndjson", 4, 1, 3, 0)]
    assert sorted(events(lake)["meter_value"].to_list()) == [Decimal(v) for v in (1, 2, 3, 6, 7)]


def test_only_the_partitions_of_new_event_dates_are_read(lake, monkeypatch):
    land(lake, "1.ndjson", ndjson(event(ms=T0), event(ms=T0 + 3 * DAY_MS)))
    ingest(lake)
    asked = []
    real = type(lake).partition_files

    def spy(self, table, values):
        asked.append((table, sorted(values)))
        return real(self, table, values)

    monkeypatch.setattr(type(lake), "partition_files", spy)
    land(lake, "2.ndjson", ndjson(event(ms=T0 + 3 * DAY_MS + 1)))
    ingest(lake)
    assert asked == [("events", [dt.date(2026, 2, 5)])]


def test_cancellation_is_accepted_and_not_a_duplicate(lake):
    cancel = {"meterbill_cancel": "true"}
    land(lake, "a.ndjson", ndjson(
        event(value=5, unique_id="u1", dimensions={"region": "us"}),
        event(value=5, unique_id="u1", dimensions={"region": "us", **cancel}),
        event(value=5, unique_id="u1", dimensions={"region": "us", **cancel}),  # the same cancellation again
        event(value=7, dimensions={"region": "us"}),
        event(value=7, dimensions={"region": "us", "meterbill_cancel": "TRUE"}),  # content key, flag differs
    ))
    rep = ingest(lake)
    assert counts(lake) == [("a.ndjson", 5, 4, 1, 0)]
    ev = events(lake)
    assert ev.select("row_number", "is_cancel").rows() == [(1, False), (2, True), (4, False), (5, True)]
    assert ev["dimensions"].to_list()[1] == {"meterbill_cancel": "true", "region": "us"}
    assert rep.cancellations == 2


def test_cancellation_in_a_later_run(lake):
    land(lake, "1.ndjson", ndjson(event(unique_id="u1")))
    ingest(lake)
    land(lake, "2.ndjson", ndjson(event(unique_id="u1", dimensions={"meterbill_cancel": "true"})))
    ingest(lake)
    assert events(lake)["is_cancel"].to_list() == [False, True]


def test_a_file_already_ingested_is_skipped(lake):
    land(lake, "a.ndjson", ndjson(event()))
    ingest(lake)
    land(lake, "copy/of-a.ndjson", ndjson(event()))  # same bytes under another name
    lines: list[str] = []
    rep = ingest(lake, progress=lines.append)
    assert lines == ["[1/2] raw/a.ndjson: skipped (already ingested)",
                     "[2/2] raw/copy/of-a.ndjson: skipped (already ingested)"]
    assert rep.files_skipped == 2 and rep.run_id is None
    assert files(lake)["source_file"].to_list() == ["a.ndjson"]


def test_the_same_content_twice_in_one_run_is_ingested_once(lake):
    land(lake, "a.ndjson", ndjson(event()))
    land(lake, "b.ndjson", ndjson(event()))
    rep = ingest(lake)
    assert [(f.source_file, f.status, f.error) for f in rep.files] == [
        ("a.ndjson", "ingested", None), ("b.ndjson", "skipped", "same content as raw/a.ndjson")]
    assert files(lake)["source_file"].to_list() == ["a.ndjson"]


def test_a_changed_file_is_ingested_again_and_its_earlier_events_count_as_its_own(lake):
    land(lake, "a.ndjson", ndjson(event(unique_id="u1")))
    ingest(lake)
    land(lake, "a.ndjson", ndjson(event(unique_id="u1"), event(unique_id="u2")))
    ingest(lake)
    assert counts(lake) == [("a.ndjson", 2, 2, 0, 0)]  # one row per file: its current version
    assert events(lake).select("row_number", "unique_id").rows() == [(1, "u1"), (2, "u2")]


def test_second_run_changes_nothing(lake):
    land(lake, "a.ndjson", ndjson(event(unique_id="u1"), event(cid=None), "junk"))
    land(lake, "b.csv", f"customer_id,meter_api_name,meter_value,meter_time_in_millis\nc2,api_calls,1,{T0}\n")
    land(lake, "c.parquet", b"not parquet")
    ingest(lake)
    before = snapshot(lake)
    listing = sorted(p.relative_to(lake.warehouse_dir) for p in lake.warehouse_dir.rglob("*.parquet"))
    rep = ingest(lake)
    assert rep.files_skipped == 3 and rep.accepted == 0
    after = snapshot(lake)
    for t in before:
        assert before[t].equals(after[t]), t
    assert sorted(p.relative_to(lake.warehouse_dir) for p in lake.warehouse_dir.rglob("*.parquet")) == listing
    assert not any(lake.tmp_dir.iterdir())  # no scratch left behind


def test_ingested_at_grows_from_run_to_run(lake):
    from catalog import load_catalog
    from flows.stages.ingest import run_ingest

    land(lake, "a.ndjson", ndjson(event()))
    run_ingest(lake, load_catalog(lake.catalog_dir), dt.datetime(2026, 2, 10, tzinfo=dt.timezone.utc))
    first = events(lake)["ingested_at"][0]
    land(lake, "b.ndjson", ndjson(event(ms=T0 + 1)))
    # a backfill with an earlier as_of still stamps a later arrival (the meter flow's watermark)
    run_ingest(lake, load_catalog(lake.catalog_dir), dt.datetime(2026, 2, 5, tzinfo=dt.timezone.utc))
    second = events(lake).filter(pl.col("source_file") == "b.ndjson")["ingested_at"][0]
    assert second > first
    assert quarantine(lake).height == 0
