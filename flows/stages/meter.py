"""`meterbill meter`: events -> usage_hourly, re-aggregating only the UTC dates that changed.

What changed is found from `events.ingested_at` against a watermark kept in the lake's state:
the dates `transforms.metering.hourly_rebuild_dates` names for the new events (their own dates,
and for a stateful meter every later date of the same customer's events of it, since its level
carries forward). Those `hour_date` partitions are rebuilt whole and swapped in; a changed set of
meters in the catalogue rebuilds everything. The result equals a full rebuild, row for row. When
no events file came or went since the last run (the state keeps a key of their names; ingest only
ever adds files), there is nothing to rebuild and no event is read.

Two engines, one table. The additive meter types (sum, count, min, max, and meters the catalogue
does not know, aggregated as sum) are computed in DuckDB straight from the events Parquet, one
`event_date` partition per query (`transforms.metering.hourly_sql`: bounded memory, nothing in Python;
one query per core at a time, each single-threaded, so that a partition's bytes are reproducible);
the other types (avg, latest, unique_count, the stateful ones) by `transforms.metering.hourly_usage`
in Polars, on their own events only. Each rebuilt partition gets one file per engine
(`part-0.parquet` from DuckDB, `part-1.parquet` from Polars), staged and swapped in whole.

The same two functions serve `--executor dask` (flows/executors.py): `stage_usage` restricted to
one customer shard writes that shard's files (`part-0-shard<i>.parquet`, `part-1-shard<i>.parquet`)
into a staging folder shared by the shards, and the parent swaps the partitions in with
`swap_staged` once every shard has finished (it never holds the rows itself).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalog import Catalog, Lake
from catalog.config import STATEFUL_TYPES
from catalog.lake import duck, sql_str
from catalog.schemas import PARTITIONS, conform
from flows.stages.common import register_customers, register_meter_types
from catalog.meter_types import MERGEABLE_TYPES
from transforms.metering.hourly_sql import mergeable_hourly_sql
from transforms.metering import apply_cancellations, hourly_rebuild_dates, hourly_usage

TABLE = "usage_hourly"


def _meters_signature(cat: Catalog) -> str:
    blob = json.dumps({k: m.model_dump(mode="json") for k, m in sorted(cat.meters.items())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def dates_to_rebuild(events: pl.LazyFrame, cat: Catalog, watermark: dt.datetime | None) -> list[dt.date] | None:
    """The event dates whose hourly usage must be recomputed (`hourly_rebuild_dates` of the events
    ingested after `watermark`); None means all of them."""
    if watermark is None:
        return None
    return hourly_rebuild_dates(events.filter(pl.col("ingested_at") > watermark), events, cat.meters)


def _event_dates(events: pl.LazyFrame) -> list[dt.date]:
    return sorted(events.select("event_date").unique().collect()["event_date"].to_list())


def _polars_part(cat: Catalog, events: pl.LazyFrame, dates: list[dt.date] | None) -> pl.DataFrame | None:
    """hourly rows of the non-additive meters (Polars), for `dates` (None: all), from `events`
    (every event, or a shard's: every rule is per customer)."""
    slow = {n: m for n, m in cat.meters.items() if m.type not in MERGEABLE_TYPES}
    if not slow:
        return None
    stateful = sorted(n for n, m in slow.items() if m.type in STATEFUL_TYPES)
    ev = events.filter(pl.col("meter_api_name").is_in(sorted(slow)))
    if dates is not None:
        # stateless meters: only the dates being rebuilt; stateful ones: their whole history
        ev = ev.filter(pl.col("event_date").is_in(dates) | pl.col("meter_api_name").is_in(stateful))
    ev = ev.collect()
    if ev.height == 0:
        return None
    hours = None if dates is None else pl.DataFrame({"hour_date": dates}, schema={"hour_date": pl.Date})
    return hourly_usage(apply_cancellations(ev), slow, hours=hours)


@dataclass(frozen=True)
class Watermark:
    """What a meter run has seen: the newest `ingested_at`, and a key of the events files' names
    (None when the events are not one folder per date)."""

    ingested_at: dt.datetime | None
    events_files: str | None


def events_files_key(lk: Lake) -> str | None:
    """A key of the names of the events files (from the folder listing: nothing is read)."""
    listing = lk.partition_listing("events") if lk.table_dir("events").is_dir() else {}
    if listing is None:
        return None
    names = sorted(f"{d}/{name}" for d, files in listing.items() for name, _, _ in files)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def meter_plan(lk: Lake, cat: Catalog) -> tuple[pl.LazyFrame | None, list[dt.date] | None, Watermark]:
    """(events — None when nothing is to be rebuilt —, the dates to rebuild — None for all, []
    for none —, the watermark to record).

    A changed set of meters or a missing usage_hourly means a full rebuild; otherwise the dates
    touched by events ingested after the recorded watermark, and none without reading anything
    when the events files are the ones the last run saw."""
    state = lk.read_state("meter")
    key = events_files_key(lk)  # before anything is read: a file landing meanwhile is seen next run
    watermark = None
    if state and state.get("meters") == _meters_signature(cat) and lk.exists(TABLE):
        watermark = (dt.datetime.fromisoformat(state["watermark"]) if state.get("watermark")
                     else dt.datetime.min.replace(tzinfo=dt.timezone.utc))
        if key is not None and state.get("events_files") == key:
            seen = dt.datetime.fromisoformat(state["watermark"]) if state.get("watermark") else None
            return None, [], Watermark(seen, key)
    events = lk.scan("events")
    top = events.select(pl.col("ingested_at").max()).collect().item()
    return events, dates_to_rebuild(events, cat, watermark), Watermark(top, key)


def record_watermark(lk: Lake, cat: Catalog, top: Watermark) -> None:
    lk.write_state("meter", {"meters": _meters_signature(cat),
                             "watermark": top.ingested_at.isoformat() if top.ingested_at else None,
                             "events_files": top.events_files})


def rebuild_dates(events: pl.LazyFrame, dates: list[dt.date] | None) -> list[dt.date]:
    """The event_date partitions to compute: `dates`, or every event date for a full rebuild (None)."""
    return _event_dates(events) if dates is None else dates


def run_meter(lk: Lake, cat: Catalog, as_of: dt.datetime, log=None, memory_limit: str | None = None) -> dict:
    with lk.naming_damage(["events"]):
        return _run_meter(lk, cat, as_of, log, memory_limit)


def _run_meter(lk: Lake, cat: Catalog, as_of: dt.datetime, log, memory_limit: str | None) -> dict:
    events, dates, top = meter_plan(lk, cat)
    if dates == []:
        summary = {"dates_rebuilt": 0, "rows": 0, "full": False}
    else:
        full = dates is None
        rows, written = _rebuild(lk, cat, events, rebuild_dates(events, dates), dates, memory_limit)
        summary = {"dates_rebuilt": written if full else len(dates), "rows": rows, "full": full}
    record_watermark(lk, cat, top)
    if log:
        log(f"meter: {summary}")
    return summary


def _rebuild(lk: Lake, cat: Catalog, events: pl.LazyFrame, todo: list[dt.date], dates: list[dt.date] | None,
             memory_limit: str | None) -> tuple[int, int]:
    """Stage the partitions of `todo` and swap them in (see `stage_usage`, `swap_staged`).
    Returns (rows, partitions written)."""
    stage = lk.stage_dir(f"meter-{uuid.uuid4().hex}")
    try:
        rows = stage_usage(lk, cat, stage, todo, dates, events=events, memory_limit=memory_limit)
        return rows, swap_staged(lk, stage, dates)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def stage_usage(lk: Lake, cat: Catalog, stage: Path, todo: list[dt.date], dates: list[dt.date] | None, *,
                events: pl.LazyFrame | None = None, customers: set[str] | None = None, tag: str = "",
                memory_limit: str | None = None) -> int:
    """Write the usage_hourly rows of the event dates `todo` into `stage/hour_date=<d>/`; returns
    the number of rows.

    Additive meters (and unknown ones): DuckDB straight from the events Parquet, one event_date
    partition at a time, into `part-0<tag>.parquet`. The other meters: Polars (`hourly_usage`) on
    their own events, for `dates` (None: all), into `part-1<tag>.parquet`. With `customers` (a
    customer shard, flows/executors.py) only their events are read — every meter rule is per
    customer, so the rows are exactly the full table's rows of those customers — and `tag` keeps
    the files of several shards apart in one staging folder. Each file is written under a scratch
    name and renamed into place, so a partition folder only ever holds complete files."""
    work = stage / f".work{tag}-{uuid.uuid4().hex}"
    work.mkdir(parents=True)
    try:
        rows = _stage_additive(lk, cat, stage, work, todo, customers, tag, memory_limit)
        if events is None:
            events = lk.scan("events")
        if customers is not None:
            events = events.filter(pl.col("customer_id").is_in(sorted(customers)))
        return rows + _stage_polars(cat, stage, work, events, dates, tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _place(stage: Path, tmp: Path, d, name: str) -> None:
    """Rename a complete scratch file into its partition folder of `stage`."""
    out = stage / f"{PARTITIONS[TABLE]}={d}"
    out.mkdir(exist_ok=True)
    os.replace(tmp, out / name)


def _stage_additive(lk: Lake, cat: Catalog, stage: Path, work: Path, todo: list[dt.date],
                    customers: set[str] | None, tag: str, memory_limit: str | None) -> int:
    """The additive meters' rows of each date of `todo` (DuckDB), as `part-0<tag>.parquet`."""
    # one DuckDB database (one memory limit) running a partition per core at once, each query
    # on one thread: a single-threaded aggregate emits its rows in the same order every time,
    # so the same events give the same file bytes without an ORDER BY
    con = duck(lk, memory_limit, threads=1)
    try:
        if customers is not None:  # a DuckDB spill folder of its own (shards run side by side)
            con.execute(f"SET temp_directory = {sql_str(work / 'duckdb')}")

        def one(d) -> int:
            files = lk.partition_files("events", [d])
            if not files:
                return 0
            src = "read_parquet([" + ", ".join(sql_str(p) for p in files) + "])"
            if customers is not None:
                src = f"(SELECT * FROM {src} WHERE customer_id IN (SELECT customer_id FROM shard_customers))"
            tmp = work / f"{d}-0.parquet"
            with con.cursor() as cur:  # a connection of its own (registered relations are per connection)
                cur.execute("SET TimeZone = 'UTC'")
                register_meter_types(cur, cat)
                if customers is not None:
                    register_customers(cur, customers)
                n = int(cur.execute(f"COPY ({mergeable_hourly_sql(src)}) TO {sql_str(tmp)} "
                                    "(FORMAT parquet)").fetchall()[0][0])
            if n:
                _place(stage, tmp, d, f"part-0{tag}.parquet")
            return n

        with ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, len(todo)))) as ex:
            return sum(ex.map(one, todo))
    finally:
        con.close()


def _stage_polars(cat: Catalog, stage: Path, work: Path, events: pl.LazyFrame, dates: list[dt.date] | None,
                  tag: str) -> int:
    """The other meters' rows (Polars) of `dates` (None: all), as `part-1<tag>.parquet`."""
    col = PARTITIONS[TABLE]
    slow = _polars_part(cat, events, dates)
    if slow is None or not slow.height:
        return 0
    slow = conform(TABLE, slow)
    for (value,), part in slow.partition_by(col, as_dict=True, maintain_order=True).items():
        tmp = work / f"{value}-1.parquet"
        part.drop(col).write_parquet(tmp)
        _place(stage, tmp, value, f"part-1{tag}.parquet")
    return slow.height


def swap_staged(lk: Lake, stage: Path, dates: list[dt.date] | None) -> int:
    """Swap the partitions staged in `stage` into usage_hourly: the whole table when `dates` is
    None (a full rebuild), else each named date (a date left without rows loses its partition).
    Each swap is a rename of a complete folder (Lake._swap). Returns the partitions written."""
    col = PARTITIONS[TABLE]
    parts = [p for p in stage.iterdir()
             if p.is_dir() and p.name.startswith(f"{col}=") and any(p.glob("*.parquet"))]
    if dates is None:
        table = stage / "table"
        table.mkdir()
        for p in parts:
            p.rename(table / p.name)
        lk._swap(table, lk.table_dir(TABLE))
    else:
        present = {p.name.split("=", 1)[1]: p for p in parts}
        for d in dates:
            target = lk.partition_dir(TABLE, d)
            if str(d) in present:
                lk._swap(present[str(d)], target)
            elif target.exists():
                shutil.rmtree(target)
    return len(parts)


def ensure_metered(lk: Lake, cat: Catalog, as_of: dt.datetime, log=None) -> dict | None:
    """Bring usage_hourly up to date when events arrived since the last meter run (billing reads it)."""
    _, dates, _ = meter_plan(lk, cat)
    if dates == []:
        return None
    return run_meter(lk, cat, as_of, log=log)
