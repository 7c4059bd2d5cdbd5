"""Customer shards: the share of a stage that one shard computes, and the reduce of the shares.

Every metering, billing and alert rule is per customer, so the work is cut by customer: a stable
hash of `customer_id` (first 8 bytes of its SHA-1, mod N — never Python's salted `hash()`) puts
each customer in one of N shards. A shard's function takes the lake path and its shard index
(never frames) and computes its customers' rows with the stages' own functions; its results are
Parquet files in a staging folder of the lake (`warehouse/.tmp/shards-<run>/`), written under a
scratch name and renamed. The reduce reads them only once every shard has finished.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from pathlib import Path

import polars as pl

from catalog import Catalog, Lake, load_catalog
from catalog.schemas import conform
from flows.stages.alerts import merge_alert_values, values_all
from flows.stages.bill import BILL_TABLES, bill_summary, bill_tables
from flows.stages.meter import stage_usage


def shard_of(customer_id: str, shards: int) -> int:
    """The shard of a customer: SHA-1 of its UTF-8 id, first 8 bytes big-endian, mod `shards`."""
    return int.from_bytes(hashlib.sha1(customer_id.encode("utf-8")).digest()[:8], "big") % shards


def all_customer_ids(lk: Lake, cat: Catalog) -> list[str]:
    """Customers of the catalogue and of the events (undefined customers are billed as unbilled usage)."""
    ids = set(cat.customers)
    if lk.exists("events"):
        ids |= set(lk.scan("events").select(pl.col("customer_id").unique()).collect()["customer_id"].to_list())
    return sorted(i for i in ids if i is not None)


def shard_customers(lk: Lake, cat: Catalog, shard: int, shards: int) -> set[str]:
    return {c for c in all_customer_ids(lk, cat) if shard_of(c, shards) == shard}


def _stage(lake: str, run: str) -> Path:
    return Lake(lake).stage_dir(f"shards-{run}")


def drop_stage(lk: Lake, run: str) -> None:
    """Remove a run's staging folder (its shards' files)."""
    shutil.rmtree(lk.tmp_dir / f"shards-{run}", ignore_errors=True)


def _write_staged(out: Path, name: str, df: pl.DataFrame) -> str:
    path = out / f"{name}.parquet"
    tmp = out / f".{name}.parquet.tmp"
    df.write_parquet(tmp)
    os.replace(tmp, path)
    return str(path)


def _gather(results: list[dict], table: str) -> pl.DataFrame:
    frames = [pl.read_parquet(r[table]) for r in results]
    return conform(table, pl.concat(frames, how="vertical_relaxed")) if frames else conform(table, pl.DataFrame())


def bill_shard(lake: str, as_of: dt.datetime, shard: int, shards: int, run: str) -> dict[str, str]:
    """The five billing tables of one shard's customers, staged: table -> file."""
    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    tables = bill_tables(lk, cat, as_of, customers=shard_customers(lk, cat, shard, shards))
    out = _stage(lake, run)
    return {t: _write_staged(out, f"bill-{shard}-{t}", conform(t, df)) for t, df in tables.items()}


def write_bill_shards(lk: Lake, results: list[dict[str, str]]) -> dict:
    """The reduce of `bill_shard`: every shard's rows, the five tables written together; the summary."""
    tables = {t: _gather(results, t) for t in BILL_TABLES}
    lk.write_tables(tables)
    return bill_summary(tables)


def alert_values_shard(lake: str, as_of: dt.datetime, shard: int, shards: int, run: str) -> str:
    """The alerts' metric values of one shard's customers (`values_all`), staged as one file."""
    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    vals = values_all(lk, cat, as_of, customers=shard_customers(lk, cat, shard, shards))
    frames = [v.with_columns(pl.lit(a).alias("alert_id")) for a, v in vals.items()]
    df = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
    return _write_staged(_stage(lake, run), f"alerts-{shard}", df)


def gather_alert_values(cat: Catalog, paths: list[str]) -> dict[str, pl.DataFrame]:
    """The reduce of `alert_values_shard`: alert_id -> values over every shard."""
    return merge_alert_values([pl.read_parquet(p) for p in paths], list(cat.alerts))


def meter_shard(lake: str, shard: int, shards: int, todo: list[str], dates: list[str] | None, stage: str) -> int:
    """Hourly usage of one shard's customers for the event dates `todo` (`dates`: the dates being
    rebuilt, None for all), written by the meter stage's `stage_usage` as
    `hour_date=<d>/part-{0,1}-shard<i>.parquet` files into the shared staging folder `stage`.
    Returns the rows."""
    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    days = [dt.date.fromisoformat(d) for d in todo]
    rebuilt = None if dates is None else [dt.date.fromisoformat(d) for d in dates]
    return stage_usage(lk, cat, Path(stage), days, rebuilt, customers=shard_customers(lk, cat, shard, shards),
                       tag=f"-shard{shard}")
