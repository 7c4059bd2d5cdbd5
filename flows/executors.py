"""Scale-out: customer shards on a Dask cluster (`--executor dask`), through prefect-dask.

A shard task is coarse (one shard × one stage) and calls a stage's shard function
(flows/stages/shards.py: the stages' own functions over one shard's customers). The reduce, in
the flow process, awaits every mapped future (`.result()`: a failed shard fails the flow, nothing
is written) before it touches a table.

* meter (`meter_shards`): the flow process plans as the meter stage does (watermark, dates to
  rebuild); each shard stages its customers' `hour_date=<d>/part-{0,1}-shard<i>.parquet` files
  into one staging folder `warehouse/.tmp/meter-shards-<run>/`; the flow process then swaps the
  partitions in with the meter stage's `swap_staged`. No usage row passes through the parent.
* bill: the sharded meter first if events arrived since the last one (shards bill from
  usage_hourly); shards stage the five billing tables, the reduce writes them together.
* alerts: shards compute the metric values per customer; the reduce evaluates them (an
  `all_customers` alert needs the sum over every shard; values are one row per customer ×
  window, small).
* backfill (flows/backfill.py): the meter step and each replay step through the flows here, as
  subflows of the segment's task. Ingest is not sharded.

Cluster: `--workers N` starts one temporary `distributed.LocalCluster` of N worker processes
(one thread each) per process, shared by the stages of a run and closed at exit; `--dask-address`
uses an existing scheduler. Workers report task runs to the parent's Prefect API: the parent's
`PREFECT_API_URL` is put in the LocalCluster workers' environment (an existing cluster's workers
must be started with it; see README "Scale-out").

Shards: `METERBILL_SHARDS` if set, else 2 × workers (a LocalCluster) or 16 (an existing cluster).
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
import uuid

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.utilities.annotations import unmapped

from catalog import Lake, load_catalog
from flows.stages import shards as sh
from flows.stages.alerts import run_alerts
from flows.stages.common import parse_instant
from flows.stages.meter import meter_plan, rebuild_dates, record_watermark, swap_staged


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


# ------------------------------------------------------------------ bill

@task(name="bill-shard", task_run_name="bill-shard-{shard}-of-{shards}", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=2)
def bill_shard_task(lake: str, as_of: str, shard: int, shards: int, run: str) -> dict:
    return sh.bill_shard(lake, parse_instant(as_of), shard, shards, run)


@flow(name="bill-sharded")
def bill_sharded_flow(lake: str, as_of: str, shards: int) -> dict:
    run = uuid.uuid4().hex
    lk = Lake(lake)
    # shards bill from usage_hourly: bring it up to date first (events ingested since the last
    # meter run), on the same shards (the bill stage's `ensure_metered` rule, sharded)
    if meter_plan(lk, load_catalog(lk.catalog_dir))[1] != []:
        get_run_logger().info("meter (%d shards): %s", shards, meter_shards(lake, shards))
    try:
        futures = bill_shard_task.map(lake, as_of, list(range(shards)), shards, run)
        summary = sh.write_bill_shards(lk, [f.result() for f in futures])  # every shard, before anything is written
    finally:
        sh.drop_stage(lk, run)
    get_run_logger().info("bill (%d shards): %s", shards, summary)
    return summary


def bill_sharded(lake: str, as_of: str, workers: int | None, address: str | None) -> dict:
    shards = shard_count(workers, address)
    return bill_sharded_flow.with_options(task_runner=task_runner(workers, address))(lake, as_of, shards)


# ------------------------------------------------------------------ alerts

@task(name="alert-values-shard", task_run_name="alert-values-shard-{shard}-of-{shards}", cache_policy=NO_CACHE,
      retries=1, retry_delay_seconds=2)
def alert_values_shard_task(lake: str, as_of: str, shard: int, shards: int, run: str) -> str:
    return sh.alert_values_shard(lake, parse_instant(as_of), shard, shards, run)


@flow(name="alerts-sharded")
def alerts_sharded_flow(lake: str, as_of: str, deliver: bool, shards: int) -> dict:
    run = uuid.uuid4().hex
    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    try:
        futures = alert_values_shard_task.map(lake, as_of, list(range(shards)), shards, run)
        values = sh.gather_alert_values(cat, [f.result() for f in futures])
    finally:
        sh.drop_stage(lk, run)
    return run_alerts(lk, cat, parse_instant(as_of), deliver, log=get_run_logger().info, values=values)


def alerts_sharded(lake: str, as_of: str, deliver: bool, workers: int | None, address: str | None) -> dict:
    shards = shard_count(workers, address)
    return alerts_sharded_flow.with_options(task_runner=task_runner(workers, address))(lake, as_of, deliver, shards)


# ------------------------------------------------------------------ meter

@task(name="meter-shard", task_run_name="meter-shard-{shard}-of-{shards}", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=2)
def meter_shard_task(lake: str, shard: int, shards: int, todo: list[str], dates: list[str] | None,
                     stage: str) -> int:
    return sh.meter_shard(lake, shard, shards, todo, dates, stage)


def meter_shards(lake: str, shards: int) -> dict:
    """The meter stage's incremental rule (watermark, dates to rebuild, state) with the rows staged
    by customer shard tasks (mapped on the current flow's task runner) and the partitions swapped
    in here once every shard has finished."""
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
