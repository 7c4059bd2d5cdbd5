"""The demo's messy input: every raw row is accepted, a counted duplicate, or quarantined with the
reason the generator planted — per file, in known numbers."""

import datetime as dt
import shutil

import polars as pl

from catalog import Lake, load_catalog
from flows.stages.demo import SAMPLE_CATALOG
from flows.stages.generate import generate
from flows.stages.ingest import run_ingest

AS_OF = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)


def test_demo_messy_rows_are_all_accounted_for(tmp_path):
    lk = Lake(tmp_path / "lake")
    shutil.copytree(SAMPLE_CATALOG, lk.catalog_dir)
    cat = load_catalog(lk.catalog_dir)
    g = generate(cat, lk.raw_dir, dt.date(2026, 11, 1), 8, 400, seed=7, messy=True)
    assert g.defects == {"non_finite_value": 20, "missing_field": 20, "bad_timestamp": 20,
                         "future_event": 20, "bad_dimension": 20} and g.duplicates == 20
    run_ingest(lk, cat, AS_OF)
    files = lk.read("ingest_files")
    assert files.height == 9
    for r in files.iter_rows(named=True):  # conservation, file by file
        assert r["rows_read"] == r["accepted"] + r["duplicates"] + r["quarantined"], r["source_file"]
    messy = files.filter(pl.col("source_file").str.contains("messy")).row(0, named=True)
    assert (messy["rows_read"], messy["accepted"], messy["duplicates"], messy["quarantined"]) == (120, 0, 20, 100)
    by_reason = dict(lk.read("quarantine").group_by("reason").len().iter_rows())
    assert by_reason == g.defects
    assert files["accepted"].sum() == g.events
    # a second ingest of the same landing zone changes nothing
    before = {t: lk.read(t) for t in ("events", "quarantine", "ingest_files")}
    run_ingest(lk, cat, AS_OF)
    for t, df in before.items():
        assert lk.read(t).equals(df), t
