"""A small lake for ingest tests, and helpers to land files and ingest them (no Prefect)."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from pathlib import Path

import polars as pl
import pytest

from catalog import Lake, load_catalog

AS_OF = dt.datetime(2026, 2, 10, tzinfo=dt.timezone.utc)
INGESTED_AT = dt.datetime(2026, 2, 10, 0, 1, tzinfo=dt.timezone.utc)
T0 = 1_770_000_000_000  # 2026-02-02T02:40:00Z in epoch ms: inside the 60-day window of AS_OF
T0_ISO = "2026-02-02T02:40:00Z"

CATALOG = {
    "customers.yaml": "- {customer_id: c1, customer_name: One}\n- {customer_id: c2, customer_name: Two}\n",
    "meters.yaml": (
        "- {meter_api_name: api_calls, label: API calls, type: sum}\n"
        "- {meter_api_name: seats, label: Seats, type: count}\n"
        "- {meter_api_name: users, label: Users, type: unique_count, unique_dimensions: [user]}\n"
    ),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test over a large generated landing zone (runs by default)")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    root = tmp_path / "lake"
    (root / "catalog").mkdir(parents=True)
    for name, text in CATALOG.items():
        (root / "catalog" / name).write_text(text)
    (root / "raw").mkdir()
    return Lake(root)


def ingest(lk: Lake, as_of: dt.datetime = AS_OF, **kw):
    from flows.stages.ingest import run_ingest

    kw.setdefault("ingested_at", INGESTED_AT)
    return run_ingest(lk, load_catalog(lk.catalog_dir), as_of, **kw)


def land(lk: Lake, rel: str, data: bytes | str) -> Path:
    """Put a file into raw/ (gzip-compressed when the name ends in .gz)."""
    p = lk.raw_dir / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    if rel.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    p.write_bytes(data)
    return p


def ndjson(*records: dict | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def event(cid="c1", meter="api_calls", value=1, ms=T0, **extra) -> dict:
    rec = {"customer_id": cid, "meter_api_name": meter, "meter_value": value, "meter_time_in_millis": ms}
    rec.update(extra)
    return rec


def events(lk: Lake) -> pl.DataFrame:
    return lk.read("events").sort("source_file", "row_number")


def stored_keys(lk: Lake) -> pl.DataFrame:
    """(source_file, row_number, event_date, dedup_key) of every event, the key computed again from
    the stored columns (`dedupe.events_keys_sql`: what a later run deduplicates against)."""
    import duckdb

    from catalog.meter_types import VALUELESS_TYPES
    from transforms.ingest.dedupe import events_keys_sql
    from transforms.ingest.parse import prepare

    cat = load_catalog(lk.catalog_dir)
    con = duckdb.connect()
    prepare(con, sorted(n for n, m in cat.meters.items() if m.type in VALUELESS_TYPES))
    rel = f"read_parquet('{lk.table_glob('events')}', hive_partitioning = true)"
    keys = con.sql(events_keys_sql(rel, carry=("source_file", "row_number"))).pl()
    return keys.sort("source_file", "row_number")


def quarantine(lk: Lake) -> pl.DataFrame:
    return lk.read("quarantine").sort("source_file", "row_number", nulls_last=False)


def files(lk: Lake) -> pl.DataFrame:
    return lk.read("ingest_files").sort("source_file")


def reasons(lk: Lake) -> list[tuple]:
    """(source_file, row_number, reason) of every quarantined record."""
    return [(r["source_file"], r["row_number"], r["reason"]) for r in quarantine(lk).iter_rows(named=True)]


def snapshot(lk: Lake) -> dict[str, pl.DataFrame]:
    """Every ingest table, sorted, for before/after comparisons."""
    return {t: lk.read(t).sort(pl.all().exclude("dimensions") if t == "events" else pl.all())
            for t in ("events", "quarantine", "ingest_files")}
