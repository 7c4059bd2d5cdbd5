"""Crash safety: a run that dies leaves the tables as they were (or is finished by the next run),
and the next run gives exactly what a clean run gives: nothing lost, nothing counted twice."""

from __future__ import annotations

import shutil

import pytest

import catalog.lake as lake_module
from catalog import Lake
from flows.stages.ingest import IngestRun
from tests.ingest.conftest import T0, event, ingest, land, ndjson, snapshot


class Crash(Exception):
    pass


def _zone(lk: Lake) -> None:
    land(lk, "1.ndjson", ndjson(event(unique_id="a"), event(cid=None), event(ms=T0 + 86_400_000 * 3)))
    land(lk, "2.csv", f"customer_id,meter_api_name,meter_value,meter_time_in_millis,unique_id\nc2,api_calls,1,{T0},b\nc1,api_calls,1,{T0},a\n")
    land(lk, "3.parquet", b"broken")


def _clean(tmp_path, lake) -> dict:
    """What a run without a crash gives for the same first and second landing."""
    ref = Lake(tmp_path / "ref")
    shutil.copytree(lake.catalog_dir, ref.catalog_dir)
    land(ref, "0.ndjson", ndjson(event(cid="c2", unique_id="z")))
    ingest(ref)
    _zone(ref)
    ingest(ref)
    return snapshot(ref)


@pytest.fixture
def landed(lake):
    land(lake, "0.ndjson", ndjson(event(cid="c2", unique_id="z")))
    ingest(lake)  # tables that exist before the crash
    _zone(lake)
    return lake


def _same(a: dict, b: dict) -> None:
    for t in a:
        assert a[t].equals(b[t]), t


def test_crash_after_staging_leaves_every_table_unchanged(landed, tmp_path, monkeypatch):
    before = snapshot(landed)

    def boom(self):
        raise Crash("power cut")

    monkeypatch.setattr(IngestRun, "_before_commit", boom)
    with pytest.raises(Crash):
        ingest(landed)
    _same(before, snapshot(landed))
    assert any(landed.tmp_dir.iterdir())  # scratch left behind ...
    monkeypatch.undo()
    rep = ingest(landed)  # ... and cleared by the next run, which ingests the files from scratch
    assert rep.accepted == 3 and rep.duplicates == 1
    _same(_clean(tmp_path, landed), snapshot(landed))
    assert not any(landed.tmp_dir.iterdir())


@pytest.mark.parametrize("moves_done", [0, 1, 2, 3])
def test_crash_in_the_middle_of_the_commit_is_finished_by_the_next_run(landed, tmp_path, monkeypatch, moves_done):
    """The commit moves staged files (events partitions, quarantine, ingest_files last) under a
    journal; dying after any number of moves, the next run rolls the commit forward."""
    real = lake_module.os.replace
    done = []

    def flaky(src, dst):
        if str(dst).endswith(".parquet") and "warehouse/.tmp" not in str(dst):
            if len(done) == moves_done:
                raise Crash("killed")
            done.append(dst)
        return real(src, dst)

    monkeypatch.setattr(lake_module.os, "replace", flaky)
    with pytest.raises(Crash):
        ingest(landed)
    monkeypatch.undo()
    assert list(landed.journal_dir.glob("*.json"))  # the commit is still due
    rep = ingest(landed)
    assert rep.files_skipped == 4 and rep.accepted == 0  # the recovered commit recorded the files
    assert not list(landed.journal_dir.glob("*.json"))
    _same(_clean(tmp_path, landed), snapshot(landed))


def test_crash_while_reading_writes_nothing_and_releases_the_lock(landed, monkeypatch):
    before = snapshot(landed)

    def boom(*a, **k):
        raise Crash("disk on fire")

    monkeypatch.setattr("flows.stages.ingest.groups.ingest_batch", boom)
    with pytest.raises(Crash):
        ingest(landed)
    _same(before, snapshot(landed))
    monkeypatch.undo()
    assert ingest(landed).accepted == 3


def test_one_ingest_at_a_time(lake):
    from flows.stages.common import UsageError

    with lake.lock("ingest"):
        with pytest.raises(UsageError, match="another ingest run"):
            ingest(lake)
    ingest(lake)  # free again
