"""The pseudo-events billing reads from usage_hourly (transforms/from_hourly.py), and the cache
of the buckets behind them.

Without a shard, the buckets are kept in `warehouse/_state/bill_buckets/`, a file per UTC month
(a bucket never straddles one) holding a key per date of the month (`from_hourly.bucket_date_keys`).
A month whose cached dates all kept their key is reused, and new dates' buckets are merged into it
(a new day reads one partition, not the lake); a month with a changed or vanished date is made
again from its own partitions. Deleting the folder is always safe. While one process holds the
folder's lock, another bills without it (a merge must never read a month another run is replacing).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from catalog import Catalog, Lake
from catalog.lake import duck, sql_str
from flows.stages.common import register_customers, register_meter_types
from transforms.billing import from_hourly

BUCKETS_DIR = "bill_buckets"  # in warehouse/_state: the buckets of the last bill run, a file per UTC month
_BUCKET_DATES = "meterbill.bucket_dates"  # a file's Parquet key-value metadata: {date: key} of its dates

HourlyFiles = dict[dt.date, list[tuple[str, int, int]]]


def hourly_files(lk: Lake) -> HourlyFiles | None:
    """date -> [(file name, size, mtime_ns)] of usage_hourly; None when its layout is not one
    folder per date (the bucket cache is not used then)."""
    listing = lk.partition_listing("usage_hourly")
    if listing is None:
        return None
    try:
        return {dt.date.fromisoformat(d): files for d, files in listing.items()}
    except ValueError:
        return None


def _cached_bucket_dates(path) -> dict[str, str] | None:
    """The {date: key} a cached bucket file was made from; None when it is absent or unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
        keys = json.loads(meta[_BUCKET_DATES.encode()])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    return keys if isinstance(keys, dict) else None


def _cache_lock(lk: Lake):
    """The cache folder's lock, or None when another process holds it (this run bills without it)."""
    try:
        return lk.lock(BUCKETS_DIR).acquire()
    except RuntimeError:
        return None


def pseudo_events(lk: Lake, cat: Catalog, pf: pl.DataFrame, frag: pl.DataFrame, as_of: dt.datetime,
                  customers: set[str] | None = None, cache: bool = True) -> pl.DataFrame | None:
    """The pseudo-events of usage_hourly (transforms/from_hourly.py); None when there is none.
    Without a shard and with `cache`, through the cached buckets (see the module doc)."""
    if not lk.exists("usage_hourly"):
        return None
    cut = from_hourly.floor_hour(as_of)
    lock = _cache_lock(lk) if cache and customers is None else None
    con = None
    try:
        files = hourly_files(lk) if lock is not None else None
        con = duck(lk)
        con.execute("SET TimeZone = 'UTC'")
        register_meter_types(con, cat)
        con.register("periods", pf.select("customer_id", "start", "end").to_arrow())
        con.register("frag", frag.to_arrow())
        if files is None:  # a shard, no cache, or another run holds the cache
            if customers is not None:
                register_customers(con, customers)
            src = (f"read_parquet({sql_str(lk.table_glob('usage_hourly'))}, hive_partitioning = false, "
                   "union_by_name = true)")
            return con.sql(from_hourly.pseudo_events_sql(src, cut_hour=cut, shard=customers is not None)).pl()
        folder, months = _refresh_months(con, lk, cat, pf, frag, cut, files)
        src = f"read_parquet([{', '.join(sql_str(folder / f'month={m}.parquet') for m in months)}])"
        return con.sql(from_hourly.pseudo_from_buckets_sql(src)).pl()
    finally:
        if con is not None:
            con.close()
        if lock is not None:
            lock.release()


def _refresh_months(con: duckdb.DuckDBPyConnection, lk: Lake, cat: Catalog, pf: pl.DataFrame, frag: pl.DataFrame,
                    cut: dt.datetime, files: HourlyFiles) -> tuple[Path, list[str]]:
    """Bring every month's cached buckets up to date (the caller holds the lock); returns the
    folder and the months with usage, in order."""
    keys = from_hourly.bucket_date_keys(files, pf, frag, cut, {n: m.type for n, m in cat.meters.items()})
    months: dict[str, dict[str, str]] = {}
    for d, k in keys.items():
        months.setdefault(d[:7], {})[d] = k
    folder = lk.state_dir(BUCKETS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".month=*.tmp"):  # a run that died writing (we hold the lock)
        stale.unlink()
    for month, current in sorted(months.items()):
        _refresh_month(con, lk, folder / f"month={month}.parquet", current, files, cut)
    for old in folder.glob("month=*.parquet"):  # months without usage any more
        if old.name.removeprefix("month=").removesuffix(".parquet") not in months:
            old.unlink()
    return folder, sorted(months)


def _hours_sql(lk: Lake, files: HourlyFiles, dates: list[str]) -> str:
    """The usage_hourly files of `dates` as a DuckDB relation."""
    paths = [str(lk.partition_dir("usage_hourly", d) / name) for d in dates
             for name, _, _ in files[dt.date.fromisoformat(d)]]
    return f"read_parquet([{', '.join(sql_str(x) for x in paths)}], hive_partitioning = false, union_by_name = true)"


def _refresh_month(con: duckdb.DuckDBPyConnection, lk: Lake, path: Path, current: dict[str, str],
                   files: HourlyFiles, cut: dt.datetime) -> None:
    """One month's cached buckets: kept, merged with its new dates' buckets, or made again whole;
    written then renamed."""
    add = from_hourly.reusable_buckets(_cached_bucket_dates(path), current)
    if add == []:
        return
    if add is None:
        q = from_hourly.buckets_sql(_hours_sql(lk, files, sorted(current)), cut_hour=cut, shard=False)
    else:
        new = from_hourly.buckets_sql(_hours_sql(lk, files, add), cut_hour=cut, shard=False)
        q = from_hourly.merge_buckets_sql(f"(SELECT * FROM read_parquet({sql_str(path)}) "
                                          f"UNION ALL BY NAME ({new}))")
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    q = f"SELECT * FROM ({q}) ORDER BY {', '.join(from_hourly.BUCKET_KEYS)}"  # the same bytes every time
    con.execute(f"COPY ({q}) TO {sql_str(tmp)} (FORMAT parquet, "
                f"KV_METADATA {{{sql_str(_BUCKET_DATES)}: {sql_str(json.dumps(current, sort_keys=True))}}})")
    os.replace(tmp, path)
