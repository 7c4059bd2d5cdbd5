"""A raw file ingested again with new content (a file still being written, then finished): the
new version supersedes the old one in `quarantine` and `ingest_files`. Its records are judged
afresh; the events of earlier versions are never deleted, and a record of the new version that
is such an event counts as accepted, so that `ingest_files` holds one row per file whose
`accepted` is the file's events."""

from __future__ import annotations

import hashlib
import io

import polars as pl
import pytest

from tests.ingest.conftest import T0, event, events, files, ingest, land, ndjson, parquet_bytes, quarantine

HEAD = "customer_id,meter_api_name,meter_value,meter_time_in_millis,unique_id\n"


def counts(lk) -> list[tuple]:
    return files(lk).select("source_file", "rows_read", "accepted", "duplicates", "quarantined", "status").rows()


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _keys_unique(lk) -> None:
    ev = events(lk)
    assert ev.select("source_file", "row_number").is_unique().all()
    q = quarantine(lk).filter(pl.col("row_number").is_not_null())
    assert q.select("source_file", "row_number").is_unique().all()
    assert files(lk)["source_file"].is_unique().all()


def test_a_finished_file_supersedes_its_half_written_version(lake):
    whole = ndjson(event(unique_id="u1"), event(unique_id="u2"), event(unique_id="u3"), event(unique_id="u4"))
    half = whole[: whole.index("u3") - 40]  # cut inside the third record
    land(lake, "a.ndjson", half)
    ingest(lake)
    assert counts(lake) == [("a.ndjson", 3, 2, 0, 1, "ingested")]
    assert quarantine(lake).select("row_number", "reason").rows() == [(3, "bad_type")]
    lines: list[str] = []
    land(lake, "a.ndjson", whole)
    rep = ingest(lake, progress=lines.append)
    assert lines == ["[1/1] raw/a.ndjson: 4 rows, 4 accepted, 0 duplicates, 0 quarantined (a new version)"]
    assert rep.files[0].supersedes == _sha(half)
    assert quarantine(lake).height == 0  # the half record's row went with its version
    assert files(lake).select("source_file", "sha256").rows() == [("a.ndjson", _sha(whole))]
    assert counts(lake) == [("a.ndjson", 4, 4, 0, 0, "ingested")]
    assert events(lake).select("row_number", "unique_id").rows() == [(1, "u1"), (2, "u2"), (3, "u3"), (4, "u4")]
    assert files(lake)["accepted"].sum() == events(lake).height
    _keys_unique(lake)


def test_a_csv_file_still_being_written_then_finished(lake):
    land(lake, "a.csv", HEAD + f"c1,api_calls,1,{T0},u1\nc1,api_calls,2,{T0 + 1},u1\nc1,api_calls,3")
    ingest(lake)
    assert counts(lake) == [("a.csv", 3, 1, 1, 1, "ingested")]  # u1 twice: the second is a duplicate
    land(lake, "a.csv", HEAD + f"c1,api_calls,1,{T0},u1\nc1,api_calls,2,{T0 + 1},u1\nc1,api_calls,3,{T0 + 2},u3\n"
                               f"c2,api_calls,4,{T0 + 3},u4\nc2,api_calls,4,{T0 + 3},u4\n")
    ingest(lake)
    assert quarantine(lake).height == 0
    assert counts(lake) == [("a.csv", 5, 3, 2, 0, "ingested")]
    assert events(lake).select("row_number", "unique_id").rows() == [(1, "u1"), (3, "u3"), (4, "u4")]
    assert files(lake)["accepted"].sum() == events(lake).height
    _keys_unique(lake)


def test_a_parquet_file_unreadable_while_written_is_ingested_when_finished(lake):
    df = pl.DataFrame({"customer_id": ["c1", "c2"], "meter_api_name": ["api_calls"] * 2, "meter_value": [1, 2],
                       "meter_time_in_millis": [T0, T0 + 1]})
    data = parquet_bytes(df)
    land(lake, "p.parquet", data[: len(data) // 2])  # no footer yet
    ingest(lake)
    assert counts(lake) == [("p.parquet", 0, 0, 0, 0, "unreadable")]
    land(lake, "p.parquet", data)
    ingest(lake)
    assert counts(lake) == [("p.parquet", 2, 2, 0, 0, "ingested")]
    assert quarantine(lake).height == 0
    assert events(lake).height == 2


def test_the_new_version_is_deduplicated_against_other_files_and_within_itself(lake):
    land(lake, "a.ndjson", ndjson(event(unique_id="x")))
    land(lake, "b.ndjson", ndjson(event(unique_id="u1"), "{trunc"))
    ingest(lake)
    assert counts(lake) == [("a.ndjson", 1, 1, 0, 0, "ingested"), ("b.ndjson", 2, 1, 0, 1, "ingested")]
    # b, finished: its u1 is its own event (accepted), x is a's (a duplicate), u1 again is a duplicate
    land(lake, "b.ndjson", ndjson(event(unique_id="u1"), event(unique_id="x"), event(unique_id="u1"), event(cid=None)))
    ingest(lake)
    assert counts(lake) == [("a.ndjson", 1, 1, 0, 0, "ingested"), ("b.ndjson", 4, 1, 2, 1, "ingested")]
    assert quarantine(lake).select("source_file", "row_number", "reason").rows() == [("b.ndjson", 4, "missing_field")]
    assert events(lake).select("source_file", "row_number").rows() == [("a.ndjson", 1), ("b.ndjson", 1)]
    _keys_unique(lake)


def test_a_record_changed_under_an_accepted_row_is_quarantined_not_added(lake):
    """The last CSV cell was cut (u3 for u33) and accepted: the finished record at that row is
    another event, which cannot take the row of the one accepted (events are never deleted)."""
    land(lake, "a.csv", HEAD + f"c1,api_calls,1,{T0},u1\nc1,api_calls,3,{T0 + 2},u3")
    ingest(lake)
    assert counts(lake) == [("a.csv", 2, 2, 0, 0, "ingested")]
    land(lake, "a.csv", HEAD + f"c1,api_calls,1,{T0},u1\nc1,api_calls,3,{T0 + 2},u33\nc1,api_calls,4,{T0 + 3},u4\n")
    rep = ingest(lake)
    assert rep.quarantine_by_reason == {"changed_record": 1}
    assert counts(lake) == [("a.csv", 3, 2, 0, 1, "ingested")]
    q = quarantine(lake)
    assert q.select("row_number", "reason", "unique_id", "detail").rows() == [
        (2, "changed_record", "u33",
         "row 2 of an earlier version of this file was accepted as another event; events are never deleted: "
         "cancel that event and land the corrected record in a new file")]
    assert events(lake).select("row_number", "unique_id").rows() == [(1, "u1"), (2, "u3"), (3, "u4")]
    _keys_unique(lake)


def _two_versions(lk) -> None:
    land(lk, "a.ndjson", ndjson(event(unique_id="u1"), "{half"))
    land(lk, "b.ndjson", ndjson(event(unique_id="b1"), event(cid=None)))
    ingest(lk)
    land(lk, "a.ndjson", ndjson(event(unique_id="u1"), event(unique_id="u2"), event(cid=None)))


@pytest.mark.parametrize("moves_done", [0, 1, 2, 3, 4])
def test_crash_while_a_new_version_is_committed_is_finished_by_the_next_run(lake, tmp_path, monkeypatch, moves_done):
    import shutil

    import catalog.lake as lake_module
    from catalog import Lake
    from tests.ingest.conftest import snapshot

    _two_versions(lake)
    # moves: the events file, the run's quarantine file, the old quarantine file and the old
    # ingest_files file written again, the run's ingest_files file
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
        ingest(lake)
    monkeypatch.undo()
    assert ingest(lake).files_skipped == 2
    ref = Lake(tmp_path / "ref")
    shutil.copytree(lake.catalog_dir, ref.catalog_dir)
    _two_versions(ref)
    ingest(ref)
    clean, got = snapshot(ref), snapshot(lake)
    for t in clean:
        assert clean[t].equals(got[t]), t
    assert counts(lake) == [("a.ndjson", 3, 2, 0, 1, "ingested"), ("b.ndjson", 2, 1, 0, 1, "ingested")]
    assert quarantine(lake).select("source_file", "row_number", "reason").rows() == [
        ("a.ndjson", 3, "missing_field"), ("b.ndjson", 2, "missing_field")]
