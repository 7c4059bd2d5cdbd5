"""Ingest does not read the landing zone again every run: a raw file whose stat is unchanged keeps
the sha256 recorded in `_state/raw_hashes.json` (flows/stages/ingest/files.py `hash_file`)."""

from __future__ import annotations

import json
import os

import pytest

import flows.stages.ingest.files as fi
from tests.ingest.conftest import T0, event, events, files, ingest, land, ndjson


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """The raw files ingest reads to hash them; files count as settled at once (no racy window)."""
    read: list[str] = []
    real = fi.sha256_of

    def sha(path):
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(fi, "sha256_of", sha)
    monkeypatch.setattr(fi, "RACY_NS", 0)
    return read


def test_unchanged_files_are_not_read_again_and_a_new_one_is(lake, counted):
    land(lake, "a.ndjson", ndjson(event(value=1, unique_id="a1"), event(value=2, unique_id="a2")))
    land(lake, "b.ndjson", ndjson(event(cid="c2", value=5, unique_id="b1")))
    ingest(lake)
    assert counted == ["a.ndjson", "b.ndjson"]
    assert sorted(lake.read_state(fi.HASHES_STATE)) == ["a.ndjson", "b.ndjson"]

    counted.clear()
    rep = ingest(lake)
    assert counted == []  # neither file was read
    assert rep.accepted == 0 and events(lake).height == 3

    land(lake, "c.ndjson", ndjson(event(value=7, unique_id="c1")))
    rep = ingest(lake)
    assert counted == ["c.ndjson"]
    assert rep.accepted == 1
    assert sorted(events(lake)["meter_value"].cast(str).to_list()) == [
        "1.000000000", "2.000000000", "5.000000000", "7.000000000"]
    assert files(lake)["accepted"].to_list() == [2, 1, 1]


def test_a_file_rewritten_in_place_with_its_old_size_and_mtime_is_read_and_ingested(lake, counted):
    second = ndjson(event(value=9, unique_id="a9"))
    p = land(lake, "a.ndjson", ndjson(event(value=1, unique_id="a1")) + "x" * (len(second) - 1) + "\n")
    ingest(lake)
    st = p.stat()
    # other bytes, same length, same inode, the old mtime put back: only the ctime tells
    p.write_text(ndjson(event(value=1, unique_id="a1")) + second)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    counted.clear()
    rep = ingest(lake)
    assert counted == ["a.ndjson"]
    assert rep.accepted == 2  # a1, its event of the earlier version, and a9, new
    assert sorted(events(lake)["unique_id"].to_list()) == ["a1", "a9"]


def test_a_damaged_record_means_every_file_is_read_again(lake, counted):
    land(lake, "a.ndjson", ndjson(event(value=1, unique_id="a1")))
    ingest(lake)
    state = lake.warehouse_dir / "_state" / f"{fi.HASHES_STATE}.json"
    st = (lake.raw_dir / "a.ndjson").stat()
    # the file's own stat, with a hash that is no sha256
    forged = json.dumps({"a.ndjson": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, "z" * 64]})
    for damage in ("{not json", '["a list"]', '{"a.ndjson": [1, 2, 3, 4, "short"]}', forged):
        state.write_text(damage)
        counted.clear()
        rep = ingest(lake)
        assert counted == ["a.ndjson"]
        assert rep.accepted == 0 and rep.files[0].status == "skipped"  # still known by its hash
        assert len(lake.read_state(fi.HASHES_STATE)["a.ndjson"][4]) == 64  # recorded anew


def test_a_file_changed_within_the_racy_window_is_not_recorded(lake, counted, monkeypatch):
    monkeypatch.setattr(fi, "RACY_NS", 3600 * 10**9)  # everything written in the last hour
    land(lake, "a.ndjson", ndjson(event(ms=T0, unique_id="a1")))
    ingest(lake)
    assert lake.read_state(fi.HASHES_STATE) is None
    counted.clear()
    ingest(lake)
    assert counted == ["a.ndjson"]  # hashed again, and skipped as already ingested
    assert events(lake).height == 1
