"""The lake's journalled commit of staged files, its scratch folders and its listing of raw files."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from catalog import Lake


def test_commit_moves_everything_or_leaves_a_journal_to_finish(tmp_path):
    lk = Lake(tmp_path / "lake")
    stage = lk.stage_dir("ingest-t")
    for n in ("a", "b", "c"):
        (stage / f"{n}.parquet").write_text(n)
    moves = [(stage / "a.parquet", lk.table_file("events", "x", partition=dt.date(2026, 2, 2))),
             (stage / "b.parquet", lk.table_file("quarantine", "x")),
             (stage / "c.parquet", lk.table_file("ingest_files", "x"))]
    # simulate a crash after the first move: journal written, one rename done
    jdir = lk.journal_dir
    jdir.mkdir(parents=True)
    rel = lambda p: str(p.relative_to(lk.warehouse_dir))  # noqa: E731
    (jdir / "ingest-t.json").write_text(json.dumps({"name": "t", "moves": [[rel(s), rel(d)] for s, d in moves]}))
    moves[0][1].parent.mkdir(parents=True)
    moves[0][0].rename(moves[0][1])
    assert lk.recover_commits() == ["ingest-t"]
    assert [d.read_text() for _, d in moves] == ["a", "b", "c"]
    assert not list(jdir.iterdir())


def test_commit_refuses_targets_outside_the_warehouse(tmp_path):
    lk = Lake(tmp_path / "lake")
    src = lk.stage_dir("s") / "f.parquet"
    src.write_text("x")
    with pytest.raises(ValueError):
        lk.commit("bad", [(src, tmp_path / "elsewhere.parquet")])
    with pytest.raises(ValueError):
        lk.table_file("events", "../../escape")
    with pytest.raises(ValueError):
        lk.stage_dir("../out")
    assert src.exists()


def test_raw_files_sorted_hidden_skipped(tmp_path):
    lk = Lake(tmp_path / "lake")
    for rel in ("b.csv", "a/z.json", "a/.x.json", ".git/config", "A.csv", "_SUCCESS", "_temporary/0/p.csv"):
        p = lk.raw_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert [r for r, _ in lk.raw_files()] == ["A.csv", "a/z.json", "b.csv"]
