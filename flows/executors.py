"""Scale-out: customer shards on a Dask cluster (`--executor dask`), through prefect-dask.

Every metering, billing and alert rule is per customer, so the work is cut by customer: a stable
hash of `customer_id` (first 8 bytes of its SHA-1, mod N — never Python's salted `hash()`) puts
each customer in one of N shards. A shard task is coarse (one shard × one stage), takes the lake
path and its shard index (never frames) and computes its customers' rows with the same functions
as the local path. The reduce, in the flow process, awaits every mapped future (`.result()`: a
failed shard fails the flow, nothing is written) before it touches a table.

* meter (`meter_shards`): the flow process plans as `run_meter` does (watermark, dates to
  rebuild); each shard runs `flows.meter.stage_usage` for its customers — DuckDB per event_date
  partition for the additive meters, Polars for the others — and writes its own
  `hour_date=<d>/part-{0,1}-shard<i>.parquet` files (scratch name, then rename) into one staging
  folder `warehouse/.tmp/meter-shards-<run>/`; the flow process then swaps the partitions in with
  `flows.meter.swap_staged` (the local path's swap). No usage row passes through the parent.
* bill: the sharded meter first if events arrived since the last one (shards bill from
  usage_hourly); shards run `flows.bill.bill_tables` and write Parquet to
  `warehouse/.tmp/shards-<run>/`; the reduce concatenates and writes the five tables together.
* alerts: shards compute the metric values per customer (`flows.alerts.values_all`); the reduce
  evaluates them (an `all_customers` alert needs the sum over every shard; values are one row
  per customer × window, small).
* backfill (flows/backfill.py): the meter step and each replay step (bill or alerts at one
  instant) through the flows here, as subflows of the segment's task.
* ingest is not sharded.

Cluster: `--workers N` starts one temporary `distributed.LocalCluster` of N worker processes
(one thread each) per process, shared by the stages of a run and closed at exit; `--dask-address`
uses an existing scheduler. Workers report task runs to the parent's Prefect API: the parent's
`PREFECT_API_URL` is put in the LocalCluster workers' environment (an existing cluster's workers
must be started with it; see README "Scale-out").

Shards: `METERBILL_SHARDS` if set, else 2 × workers (a LocalCluster) or 16 (an existing cluster).
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import os
import shutil
import threading
import uuid
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.utilities.annotations import unmapped

from catalog import Lake, load_catalog
from catalog.schemas import conform
from flows.common import parse_instant

# ------------------------------------------------------------------ sharding


def shard_of(customer_id: str, shards: int) -> int:
    """The shard of a customer: SHA-1 of its UTF-8 id, first 8 bytes big-endian, mod `shards`."""
    return int.from_bytes(hashlib.sha1(customer_id.encode("utf-8")).digest()[:8], "big") % shards


def all_customer_ids(lk: Lake, cat) -> list[str]:
    """Customers of the catalogue and of the events (undefined customers are billed as unbilled usage)."""
    ids = set(cat.customers)
    if lk.exists("events"):
        ids |= set(lk.scan("events").select(pl.col("customer_id").unique()).collect()["customer_id"].to_list())
    return sorted(i for i in ids if i is not None)


def shard_customers(lk: Lake, cat, shard: int, shards: int) -> set[str]:
    return {c for c in all_customer_ids(lk, cat) if shard_of(c, shards) == shard}


def shard_count(workers: int | None, address: str | None) -> int:
    env = os.environ.get("METERBILL_SHARDS")
    if env:
        return max(int(env), 1)
    return 2 * workers if workers and not address else 16


# ------------------------------------------------------------------ cluster and task runner

_CLUSTERS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def cluster_address(workers: int | None, address: str | None) -> str:
    """The scheduler address: `address`, else that of this process's LocalCluster of `workers` workers."""
    if address:
        return address
    n = int(workers or os.cpu_count() or 1)
    api = _api_url()
    key = (n, api)
    with _LOCK:
        cluster = _CLUSTERS.get(key)
        if cluster is None:
            from distributed import LocalCluster

            env = {"PREFECT_API_URL": api} if api else {}
            for name in ("PREFECT_HOME", "PREFECT_LOGGING_LEVEL", "METERBILL_MEMORY_LIMIT"):
                if os.environ.get(name):
                    env[name] = os.environ[name]
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                   env=env)
            _CLUSTERS[key] = cluster
            atexit.register(close_clusters)  # after distributed's own handler, so it runs before it
        return cluster.scheduler_address


def close_clusters() -> None:
    """Close the temporary LocalClusters of this process."""
    import logging

    # at interpreter exit the console streams may be closed already: keep distributed's INFO lines out
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with _LOCK:
        for cluster in _CLUSTERS.values():
            try:
                cluster.close()
            except Exception:  # noqa: BLE001  (best effort at exit)
                pass
        _CLUSTERS.clear()



def task_runner(workers: int | None, address: str | None):
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=cluster_address(workers, address))


# ------------------------------------------------------------------ staging

def _stage(lake: str, run: str) -> Path:
    return Lake(lake).stage_dir(f"shards-{run}")


def _write_staged(out: Path, name: str, df: pl.DataFrame) -> str:
    path = out / f"{name}.parquet"
    tmp = out / f".{name}.parquet.tmp"
    df.write_parquet(tmp)
    os.replace(tmp, path)
    return str(path)


def _gather(results: list[dict], table: str) -> pl.DataFrame:
    frames = [pl.read_parquet(r[table]) for r in results]
    return conform(table, pl.concat(frames, how="vertical_relaxed")) if frames else conform(table, pl.DataFrame())


# ------------------------------------------------------------------ bill

BILL_TABLES = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")


@task(name="bill-shard", task_run_name="bill-shard-{shard}-of-{shards}", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=2)
def bill_shard_task(lake: str, as_of: str, shard: int, shards: int, run: str) -> dict:
    from flows.bill import bill_tables

    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    customers = shard_customers(lk, cat, shard, shards)
    tables = bill_tables(lk, cat, parse_instant(as_of), customers=customers)
    out = _stage(lake, run)
    return {t: _write_staged(out, f"bill-{shard}-{t}", conform(t, df)) for t, df in tables.items()}


@flow(name="bill-sharded")
def bill_sharded_flow(lake: str, as_of: str, shards: int) -> dict:
    from flows.bill import bill_summary
    from flows.meter import meter_plan

    run = uuid.uuid4().hex
    lk = Lake(lake)
    # shards bill from usage_hourly: bring it up to date first (events ingested since the last
    # meter run), on the same shards (flows.bill.ensure_metered's rule, sharded)
    if meter_plan(lk, load_catalog(lk.catalog_dir))[1] != []:
        get_run_logger().info("meter (%d shards): %s", shards, meter_shards(lake, shards))
    try:
        futures = bill_shard_task.map(lake, as_of, list(range(shards)), shards, run)
        results = [f.result() for f in futures]  # every shard, before anything is written
        tables = {t: _gather(results, t) for t in BILL_TABLES}
        lk.write_tables(tables)
    finally:
        shutil.rmtree(lk.tmp_dir / f"shards-{run}", ignore_errors=True)
    summary = bill_summary(tables)
    get_run_logger().info("bill (%d shards): %s", shards, summary)
    return summary


def bill_sharded(lake: str, as_of: str, workers: int | None, address: str | None) -> dict:
    shards = shard_count(workers, address)
    return bill_sharded_flow.with_options(task_runner=task_runner(workers, address))(lake, as_of, shards)


# ------------------------------------------------------------------ alerts

@task(name="alert-values-shard", task_run_name="alert-values-shard-{shard}-of-{shards}", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=2)
def alert_values_shard_task(lake: str, as_of: str, shard: int, shards: int, run: str) -> str:
    from flows.alerts import values_all

    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    vals = values_all(lk, cat, parse_instant(as_of), customers=shard_customers(lk, cat, shard, shards))
    frames = [v.with_columns(pl.lit(a).alias("alert_id")) for a, v in vals.items()]
    df = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
    return _write_staged(_stage(lake, run), f"alerts-{shard}", df)


def merge_alert_values(frames: list[pl.DataFrame], alert_ids) -> dict[str, pl.DataFrame]:
    """alert_id -> values: the shards' customer rows as they are, their '*' rows added up per window."""
    from transforms.alerts.values import SCHEMA

    frames = [f for f in frames if f.height]
    df = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema={**SCHEMA, "alert_id": pl.String})
    cols = list(SCHEMA)
    star = (df.filter(pl.col("customer_id") == "*")
            .group_by("alert_id", "customer_id", "window_start", "window_end", maintain_order=True)
            .agg(pl.col("value").sum(), pl.col("complete").all()))
    df = pl.concat([df.filter(pl.col("customer_id") != "*").select("alert_id", *cols),
                    star.select("alert_id", *cols).cast({"value": df.schema["value"]})])
    parts = {k[0]: v for k, v in df.partition_by("alert_id", as_dict=True).items()}
    return {a: (parts[a].drop("alert_id").sort("customer_id", "window_start") if a in parts
                else pl.DataFrame(schema=SCHEMA)) for a in alert_ids}


@flow(name="alerts-sharded")
def alerts_sharded_flow(lake: str, as_of: str, deliver: bool, shards: int) -> dict:
    from flows.alerts import run_alerts

    run = uuid.uuid4().hex
    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    try:
        futures = alert_values_shard_task.map(lake, as_of, list(range(shards)), shards, run)
        paths = [f.result() for f in futures]
        values = merge_alert_values([pl.read_parquet(p) for p in paths], list(cat.alerts))
    finally:
        shutil.rmtree(lk.tmp_dir / f"shards-{run}", ignore_errors=True)
    return run_alerts(lk, cat, parse_instant(as_of), deliver, log=get_run_logger().info, values=values)


def alerts_sharded(lake: str, as_of: str, deliver: bool, workers: int | None, address: str | None) -> dict:
    shards = shard_count(workers, address)
    return alerts_sharded_flow.with_options(task_runner=task_runner(workers, address))(lake, as_of, deliver, shards)


# ------------------------------------------------------------------ meter

@task(name="meter-shard", task_run_name="meter-shard-{shard}-of-{shards}", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=2)
def meter_shard_task(lake: str, shard: int, shards: int, todo: list[str], dates: list[str] | None,
                     stage: str) -> int:
    """Hourly usage of one shard's customers for the event dates `todo` (`dates`: the dates being
    rebuilt, None for all), written as `hour_date=<d>/part-{0,1}-shard<i>.parquet` files into the
    shared staging folder `stage` by the local path's own code (`flows.meter.stage_usage`: DuckDB
    per event_date partition for the additive meters, Polars for the others). Returns the rows."""
    from flows.meter import stage_usage

    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    customers = shard_customers(lk, cat, shard, shards)
    days = [dt.date.fromisoformat(d) for d in todo]
    rebuilt = None if dates is None else [dt.date.fromisoformat(d) for d in dates]
    return stage_usage(lk, cat, Path(stage), days, rebuilt, customers=customers, tag=f"-shard{shard}")


def meter_shards(lake: str, shards: int) -> dict:
    """run_meter's incremental rule (flows/meter.py: watermark, dates to rebuild, state) with the
    rows staged by customer shard tasks (mapped on the current flow's task runner) and the
    partitions swapped in here once every shard has finished."""
    from flows.meter import meter_plan, rebuild_dates, record_watermark, swap_staged

    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    events, dates, top = meter_plan(lk, cat)
    if dates == []:
        summary = {"dates_rebuilt": 0, "rows": 0, "full": False}
    else:
        stage = lk.stage_dir(f"meter-shards-{uuid.uuid4().hex}")
        try:
            todo = [d.isoformat() for d in rebuild_dates(events, dates)]
            iso = None if dates is None else [d.isoformat() for d in dates]
            futures = meter_shard_task.map(lake, list(range(shards)), shards, unmapped(todo), unmapped(iso), str(stage))
            rows = sum(f.result() for f in futures)  # every shard, before anything is swapped in
            written = swap_staged(lk, stage, dates)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        summary = {"dates_rebuilt": written if dates is None else len(dates), "rows": rows, "full": dates is None}
    record_watermark(lk, cat, top)
    return summary


@flow(name="meter-sharded")
def meter_sharded_flow(lake: str, as_of: str, shards: int) -> dict:
    summary = meter_shards(lake, shards)
    get_run_logger().info("meter (%d shards): %s", shards, summary)
    return summary


def meter_sharded(lake: str, as_of: str, workers: int | None, address: str | None) -> dict:
    shards = shard_count(workers, address)
    return meter_sharded_flow.with_options(task_runner=task_runner(workers, address))(lake, as_of, shards)
