"""Quarantined records are re-playable: the clock-dependent reasons (`future_event`, `too_old`) are
re-validated by every later ingest against its own as_of; `requeue` re-validates any other reason.

A record that becomes valid is accepted (deduplicated as usual) with its original source_file and
row_number; its quarantine row goes and its file's ingest_files counts move; a record still invalid
stays quarantined, once."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from decimal import Decimal

import polars as pl
import pytest

import catalog.lake as lake_module
from catalog import Lake
from tests.ingest.conftest import (
    AS_OF, T0, event, events, files, ingest, land, ndjson, parquet_bytes, quarantine, snapshot,
)

UTC = dt.timezone.utc
DAY_MS = 86_400_000
EARLY = dt.datetime(2026, 2, 3, tzinfo=UTC)  # a wrong clock: a week before AS_OF (2026-02-10)
T5 = T0 + 3 * DAY_MS  # 2026-02-05T02:40Z: future as of EARLY, fine as of AS_OF


def counts(lk) -> list[tuple]:
    return files(lk).select("source_file", "rows_read", "accepted", "duplicates", "quarantined").rows()


def reasons_of(lk) -> list[tuple]:
    return quarantine(lk).select("source_file", "row_number", "reason").rows()


def test_future_events_of_a_past_as_of_are_accepted_by_a_later_ingest(lake):
    land(lake, "a.ndjson", ndjson(event(unique_id="u1"), event(unique_id="u2", ms=T5), event(unique_id="u3", ms=T5 + 1),
                                  event(cid=None)))
    first = ingest(lake, as_of=EARLY)
    assert first.quarantine_by_reason == {"future_event": 2, "missing_field": 1}
    assert counts(lake) == [("a.ndjson", 4, 1, 0, 3)]

    later = dt.datetime(2026, 2, 10, 0, 2, tzinfo=UTC)
    rep = ingest(lake, ingested_at=later)  # nothing new has landed
    assert (rep.revalidated, rep.revalidated_accepted, rep.revalidated_duplicates) == (2, 2, 0)
    assert rep.files_skipped == 1 and rep.accepted == 0  # the totals are still this run's new files
    assert events(lake).select("row_number", "unique_id").rows() == [(1, "u1"), (2, "u2"), (3, "u3")]
    # the moved events arrive now (the meter flow finds them by ingested_at)
    assert events(lake).filter(pl.col("row_number") > 1)["ingested_at"].to_list() == [later, later]
    assert reasons_of(lake) == [("a.ndjson", 4, "missing_field")]
    assert counts(lake) == [("a.ndjson", 4, 3, 0, 1)]  # one row per file; its sum is still rows_read
    assert rep.event_dates == [dt.date(2026, 2, 5)]
    d = rep.to_dict()
    assert (d["revalidated"], d["revalidated_accepted"], d["revalidated_duplicates"]) == (2, 2, 0)
    assert rep.summary().endswith("; 2 re-validated from quarantine: 2 accepted, 0 duplicates, 0 still quarantined")
    assert "Re-validated from quarantine: 2 records (future_event 2): 2 accepted, 0 duplicates, 0 still quarantined" \
        in rep.to_markdown()
    # and a third run has nothing left to do
    again = ingest(lake)
    assert again.revalidated == 0 and again.run_id is None


def test_revalidated_records_are_deduplicated_against_the_lake_and_the_run(lake):
    early = dt.datetime(2026, 2, 5, 3, tzinfo=UTC)
    noon = int(dt.datetime(2026, 2, 5, 12, tzinfo=UTC).timestamp() * 1000)
    one_am = int(dt.datetime(2026, 2, 5, 1, tzinfo=UTC).timestamp() * 1000)
    # at 03:00 the noon events are future; u1 is also sent at 01:00 (the same key on the same date)
    land(lake, "a.ndjson", ndjson(event(unique_id="u1", ms=noon), event(unique_id="u2", ms=noon),
                                  event(unique_id="u2", ms=noon)))
    land(lake, "b.ndjson", ndjson(event(unique_id="u1", ms=one_am)))
    ingest(lake, as_of=early)
    assert reasons_of(lake) == [("a.ndjson", r, "future_event") for r in (1, 2, 3)]
    # later: u1 is taken by b's event already in the lake; u2 twice in a: the first wins; c re-sends
    # u2 in this run, after the re-validated records, which were read first
    land(lake, "c.ndjson", ndjson(event(unique_id="u2", ms=noon)))
    rep = ingest(lake)
    assert (rep.revalidated, rep.revalidated_accepted, rep.revalidated_duplicates) == (3, 1, 2)
    assert events(lake).select("source_file", "row_number", "unique_id").rows() == [
        ("a.ndjson", 2, "u2"), ("b.ndjson", 1, "u1")]
    assert counts(lake) == [("a.ndjson", 3, 1, 2, 0), ("b.ndjson", 1, 1, 0, 0), ("c.ndjson", 1, 0, 1, 0)]
    assert quarantine(lake).height == 0


def test_too_old_records_are_accepted_when_the_age_limit_is_lifted(lake):
    as_of_ms = int(AS_OF.timestamp() * 1000)
    land(lake, "o.ndjson", ndjson(event(ms=as_of_ms - 70 * DAY_MS), event(ms=as_of_ms - 100 * DAY_MS)))
    ingest(lake)
    assert reasons_of(lake) == [("o.ndjson", 1, "too_old"), ("o.ndjson", 2, "too_old")]
    rep = ingest(lake, max_event_age_days=80)  # a backfill's lifted limit
    assert (rep.revalidated, rep.revalidated_accepted) == (1, 1)
    assert reasons_of(lake) == [("o.ndjson", 2, "too_old")]
    assert counts(lake) == [("o.ndjson", 2, 1, 0, 1)]


def test_a_record_still_invalid_stays_quarantined_once_with_its_new_reason(lake):
    land(lake, "f.ndjson", ndjson(event(ms=T5, unique_id="x")))
    ingest(lake, as_of=EARLY)
    assert reasons_of(lake) == [("f.ndjson", 1, "future_event")]
    june = dt.datetime(2026, 6, 1, tzinfo=UTC)  # so late that 2026-02-05 is now too old
    rep = ingest(lake, as_of=june)
    assert (rep.revalidated, rep.revalidated_accepted) == (1, 0)
    q = quarantine(lake)
    assert q.select("row_number", "reason", "detail").rows() == [
        (1, "too_old", "event time 2026-02-05T02:40:00Z is older than as_of 2026-06-01T00:00:00Z minus "
                       "max_event_age_days=60")]
    assert json.loads(q["raw"][0])["unique_id"] == "x"
    assert counts(lake) == [("f.ndjson", 1, 0, 0, 1)]
    rep = ingest(lake, as_of=june, max_event_age_days=200)
    assert rep.revalidated_accepted == 1 and quarantine(lake).height == 0
    assert counts(lake) == [("f.ndjson", 1, 1, 0, 0)]


def test_requeue_revalidates_other_reasons_against_a_fixed_catalogue(lake):
    # api_calls is a sum meter: a record without a value is missing a field
    land(lake, "v.ndjson", ndjson({"customer_id": "c1", "meter_api_name": "api_calls", "meter_time_in_millis": T0},
                                  event(dimensions={"bad key": "x"}, ms=T0 + 1)))
    ingest(lake)
    assert reasons_of(lake) == [("v.ndjson", 1, "missing_field"), ("v.ndjson", 2, "bad_dimension")]
    # not clock-dependent: a plain run leaves them alone
    assert ingest(lake).revalidated == 0
    # the catalogue is fixed: api_calls counts events (a count meter needs no value)
    meters = (lake.catalog_dir / "meters.yaml").read_text().replace("label: API calls, type: sum", "label: API calls, type: count")
    (lake.catalog_dir / "meters.yaml").write_text(meters)
    rep = ingest(lake, requeue=["missing_field", "bad_dimension"])
    assert (rep.revalidated, rep.revalidated_accepted, rep.revalidated_duplicates) == (2, 1, 0)
    assert rep.requeue == ["bad_dimension", "missing_field"]
    assert events(lake).select("row_number", "meter_value").rows() == [(1, None)]
    assert reasons_of(lake) == [("v.ndjson", 2, "bad_dimension")]
    assert counts(lake) == [("v.ndjson", 2, 1, 0, 1)]


def test_requeue_names_are_checked_against_the_reason_table():
    from flows.stages.common import UsageError
    from flows.stages.ingest import requeue_reasons

    assert requeue_reasons(["bad_type,missing_field", " too_old "]) == ["bad_type", "missing_field", "too_old"]
    with pytest.raises(UsageError, match=r"--requeue: 'bogus' is not a quarantine reason \(one of missing_field, "):
        requeue_reasons(["bogus"])
    with pytest.raises(UsageError, match="unreadable_file is a whole file"):
        requeue_reasons(["unreadable_file"])
    with pytest.raises(UsageError, match="a changed_record stays"):
        requeue_reasons(["bad_type,changed_record"])


def test_a_run_with_nothing_to_revalidate_reads_no_quarantined_record(lake, monkeypatch):
    as_of_ms = int(AS_OF.timestamp() * 1000)
    land(lake, "a.ndjson", ndjson(event(cid=None), event(ms=as_of_ms - 90 * DAY_MS), event(ms=as_of_ms + 9 * DAY_MS)))
    ingest(lake)
    assert [r[2] for r in reasons_of(lake)] == ["missing_field", "too_old", "future_event"]
    stat = {p: p.stat().st_mtime_ns for p in lake.warehouse_dir.rglob("*.parquet")}
    replayed = []
    import flows.stages.ingest.revalidate as ingest_module

    real = ingest_module.ingest_batch
    monkeypatch.setattr(ingest_module, "ingest_batch", lambda *a, **k: replayed.append(1) or real(*a, **k))
    rep = ingest(lake)  # the same as_of: the old record is still too old, the future one still future
    assert rep.revalidated == 0 and rep.run_id is None and replayed == []
    assert {p: p.stat().st_mtime_ns for p in lake.warehouse_dir.rglob("*.parquet")} == stat


# ---------------------------------------------------------------- exactness, format by format

LATE = T0 + 4 * DAY_MS  # 2026-02-06T02:40Z


def _records() -> list[dict]:
    return [
        event(value="12345678901234567890.123456789", ms=LATE, unique_id="big", dimensions={"region": "us", "az": "1"}),
        event(value=0.1, ms=LATE + 1, dimensions={"region": "eu"}),
        event(value="0.0000000005", ms=LATE + 2),  # rounds half away from zero to 9 places
        event(value=3, ms=LATE + 3, unique_id="dup"),
        event(value=3, ms=LATE + 3, unique_id="dup"),  # a duplicate within the file
        {"customerId": "c2", "meterApiName": "api_calls", "meterValue": "1e3", "event_time": "2026-02-06T10:00:00.123456+02:00"},
        {"customer_id": "c2", "meter_api_name": "api_calls", "meter_value": 2, "event_time": "2026-02-07 10:00:00"},
        {"customer_id": "c2", "meter_api_name": "api_calls", "meter_value": 2, "event_time": "2026-02-08"},
        {"customer_id": "c1", "meter_api_name": "seats", "meter_time_in_millis": LATE + 4},
        event(value=3, ms=LATE + 3, unique_id="dup", dimensions={"meterbill_cancel": "true"}),
        event(cid=None, ms=LATE + 5),  # not clock-dependent: stays
    ]


def _csv() -> str:
    head = "customer_id,meter_api_name,meter_value,meter_time_in_millis,event_time,unique_id,region,az,dimensions\n"
    rows = [
        f"c1,api_calls,12345678901234567890.123456789,{LATE},,big,us,1,",
        f"c1,api_calls, 0.1 ,{LATE + 1},,,eu,,",
        f"c1,api_calls,0.0000000005,{LATE + 2},,,,,",
        f"c1,api_calls,3,{LATE + 3},,dup,,,",
        f"c1,api_calls,3,{LATE + 3},,dup,,,",
        "c2,api_calls,1e3,,2026-02-06T10:00:00.123456+02:00,,,,",
        "c2,api_calls,2,,2026-02-07 10:00:00,,,,",
        "c2,api_calls,2,,2026-02-08,,,,",
        f"c1,seats,,{LATE + 4},,,,,",
        f'c1,api_calls,3,{LATE + 3},,dup,,,"{{""meterbill_cancel"": ""true""}}"',
        f",api_calls,1,{LATE + 5},,,,,",
        '"c1, the ""quoted"" one",api_calls,1,' + f"{LATE + 6},,,\"a,b\",,",
    ]
    return head + "\n".join(rows) + "\n"


def _typed_parquet() -> bytes:
    return parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1", "c1", "c1", None],
        "meter_api_name": ["api_calls"] * 5,
        "meter_value": [0.1, 1e-10, 2.5e15, 3.0, 1.0],
        "meter_time_in_millis": [LATE, LATE + 1, LATE + 2, LATE + 2, LATE + 3],
        "unique_id": ["p1", None, None, None, None],
        "note": ["ignored"] * 5,
        "dimensions": pl.Series([[{"key": "region", "value": "us"}, {"key": "az", "value": "2"}], [], [], [], []])
        .cast(pl.Map(pl.String, pl.String)),
    }))


def _general_parquet() -> bytes:
    late = dt.datetime(2026, 2, 6, 5, tzinfo=UTC)
    return parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c2", "c2"],
        "meter_api_name": ["api_calls"] * 3,
        "meter_value": pl.Series([Decimal("1.123456789"), Decimal("-2.5"), Decimal("99999999999999999999.999999999")],
                                 dtype=pl.Decimal(38, 9)),
        "event_time": [late, late + dt.timedelta(microseconds=7), late + dt.timedelta(hours=30)],
        "dimensions": [{"region": "us", "tier": None}, {"region": None, "tier": "gold"}, {"region": None, "tier": None}],
    }))


def _naive_parquet() -> bytes:
    return parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1"], "meter_api_name": ["api_calls"] * 2, "meter_value": [1, 2],
        "event_time": [dt.datetime(2026, 2, 7, 1, 2, 3, 456789), dt.datetime(2026, 2, 8)],
        "dimensions": ['{"region": "ap"}', None],
    }))


FORMATS = {
    "r.ndjson": lambda: ndjson(*_records()),
    "r.ndjson.gz": lambda: ndjson(*_records()),
    "r.json": lambda: json.dumps(_records(), indent=1),
    "r.csv": _csv,
    "r.csv.gz": _csv,
    "typed.parquet": _typed_parquet,
    "typed.parquet.gz": _typed_parquet,
    "general.parquet": _general_parquet,
    "naive.parquet": _naive_parquet,
}


def _same_tables(a: Lake, b: Lake) -> None:
    for t, x in snapshot(a).items():
        y = snapshot(b)[t]
        cols = [c for c in x.columns if c != "ingested_at"]
        assert x.select(cols).sort(pl.all().exclude("dimensions")).equals(y.select(cols).sort(pl.all().exclude("dimensions"))), t


@pytest.mark.parametrize("name", list(FORMATS))
def test_revalidated_records_are_exactly_what_a_correct_first_ingest_gives(lake, tmp_path, name):
    """Ingest with a wrong clock, then at the right one: the tables equal those of a lake ingested
    at the right clock from the start (values, dimensions, instants, dedup, counts)."""
    ref = Lake(tmp_path / "ref")
    shutil.copytree(lake.catalog_dir, ref.catalog_dir)
    for lk in (lake, ref):
        land(lk, name, FORMATS[name]())
    ingest(ref)
    assert events(ref).height >= 2
    ingest(lake, as_of=EARLY)
    assert quarantine(lake).filter(pl.col("reason") == "future_event").height >= 2
    rep = ingest(lake)
    assert rep.revalidated_accepted + rep.revalidated_duplicates == rep.revalidated > 0
    _same_tables(lake, ref)


@pytest.mark.parametrize("name", ["typed.parquet", "naive.parquet", "r.csv"])
def test_revalidated_records_are_exact_when_the_raw_file_is_gone(lake, tmp_path, name):
    """Without the raw file, the quarantine row's `raw` is replayed (Parquet: through the JSON path)."""
    ref = Lake(tmp_path / "ref")
    shutil.copytree(lake.catalog_dir, ref.catalog_dir)
    for lk in (lake, ref):
        land(lk, name, FORMATS[name]())
    ingest(ref)
    ingest(lake, as_of=EARLY)
    (lake.raw_dir / name).unlink()  # the landing zone was cleaned up
    rep = ingest(lake)
    assert rep.revalidated > 0
    _same_tables(lake, ref)


# ---------------------------------------------------------------- crash safety


@pytest.fixture
def requeued(lake):
    land(lake, "a.ndjson", ndjson(event(unique_id="a"), event(unique_id="b", ms=T5), event(cid=None)))
    land(lake, "b.ndjson", ndjson(event(unique_id="c", ms=T5), event(unique_id="d")))
    ingest(lake, as_of=EARLY)
    land(lake, "c.ndjson", ndjson(event(unique_id="e", ms=T5 + 1)))
    return lake


def _clean(tmp_path, lake) -> dict:
    ref = Lake(tmp_path / "ref")
    shutil.copytree(lake.catalog_dir, ref.catalog_dir)
    land(ref, "a.ndjson", ndjson(event(unique_id="a"), event(unique_id="b", ms=T5), event(cid=None)))
    land(ref, "b.ndjson", ndjson(event(unique_id="c", ms=T5), event(unique_id="d")))
    ingest(ref, as_of=EARLY)
    land(ref, "c.ndjson", ndjson(event(unique_id="e", ms=T5 + 1)))
    ingest(ref)
    return snapshot(ref)


@pytest.mark.parametrize("moves_done", [0, 1, 2, 3, 4])
def test_crash_in_the_middle_of_a_revalidating_commit_is_finished_by_the_next_run(requeued, tmp_path, monkeypatch,
                                                                                  moves_done):
    real = lake_module.os.replace
    done = []

    def flaky(src, dst):
        if str(dst).endswith(".parquet") and "warehouse/.tmp" not in str(dst):
            if len(done) == moves_done:
                raise RuntimeError("killed")
            done.append(dst)
        return real(src, dst)

    monkeypatch.setattr(lake_module.os, "replace", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        ingest(requeued)
    monkeypatch.undo()
    rep = ingest(requeued)
    assert rep.revalidated == 0 and rep.files_skipped == 3
    clean = _clean(tmp_path, requeued)
    got = snapshot(requeued)
    for t in clean:
        assert clean[t].equals(got[t]), t
    assert counts(requeued) == [("a.ndjson", 3, 2, 0, 1), ("b.ndjson", 2, 2, 0, 0), ("c.ndjson", 1, 1, 0, 0)]
    assert quarantine(requeued).select("row_number", "reason").rows() == [(3, "missing_field")]


def test_many_records_are_judged_again_in_batches_and_groups(lake, tmp_path, monkeypatch):
    """Re-validated records go through the parse a batch at a time and are deduplicated in groups
    of bounded size: duplicates across batches and groups are found as in one pass."""
    import flows.stages.ingest.revalidate as ingest_module
    from catalog import load_catalog
    from flows.stages.ingest import IngestRun
    from tests.ingest.conftest import INGESTED_AT

    recs = [event(unique_id=f"u{i % 7}", ms=T5 + i % 3, value=i) for i in range(20)] + [event(cid=None)]
    ref = Lake(tmp_path / "ref")
    shutil.copytree(lake.catalog_dir, ref.catalog_dir)
    for lk in (lake, ref):
        land(lk, "a.ndjson", ndjson(*recs[:12]))
        land(lk, "b.csv", "customer_id,meter_api_name,meter_value,meter_time_in_millis,unique_id\n" + "".join(
            f"{r['customer_id'] or ''},api_calls,{r['meter_value']},{r['meter_time_in_millis']},{r.get('unique_id', '')}\n"
            for r in recs[12:]))
    ingest(ref)
    ingest(lake, as_of=EARLY)
    import flows.stages.ingest.plan as plan_module

    monkeypatch.setattr(ingest_module, "GROUP_ROWS", 3)  # revalidated candidates per dedup pass
    monkeypatch.setattr(plan_module, "GROUP_ROWS", 3)  # records per group of files
    with IngestRun(lake, load_catalog(lake.catalog_dir), AS_OF, ingested_at=INGESTED_AT, batch_rows=2) as run:
        groups = run.plan()
        run.revalidate()
        for group in groups:
            run.ingest_group(group)
        rep = run.finish()
    # 20 future records of 7 unique_ids on one date: 7 events, 13 duplicates
    assert (rep.revalidated, rep.revalidated_accepted, rep.revalidated_duplicates) == (20, 7, 13)
    assert events(ref).height == 7
    _same_tables(lake, ref)


def test_a_record_not_yet_due_is_left_as_it_is(lake, monkeypatch):
    """A future event due tomorrow: the run looks at it (its file is read) but judges nothing
    again and writes nothing."""
    as_of_ms = int(AS_OF.timestamp() * 1000)
    land(lake, "a.ndjson", ndjson(event(ms=as_of_ms + DAY_MS), event(ms=as_of_ms + 5 * 60_000 + 1, unique_id="x")))
    ingest(lake)
    assert [r[2] for r in reasons_of(lake)] == ["future_event", "future_event"]
    stat = {p: p.stat().st_mtime_ns for p in lake.warehouse_dir.rglob("*.parquet")}
    import flows.stages.ingest.revalidate as ingest_module

    replayed = []
    real = ingest_module.ingest_batch
    monkeypatch.setattr(ingest_module, "ingest_batch", lambda *a, **k: replayed.append(1) or real(*a, **k))
    rep = ingest(lake)
    assert rep.revalidated == 0 and replayed == []
    assert {p: p.stat().st_mtime_ns for p in lake.warehouse_dir.rglob("*.parquet")} == stat
    assert not any(lake.tmp_dir.iterdir())
    # a millisecond later the second one is due
    rep = ingest(lake, as_of=AS_OF + dt.timedelta(milliseconds=1))
    assert (rep.revalidated, rep.revalidated_accepted) == (1, 1)
    assert events(lake)["unique_id"].to_list() == ["x"]
