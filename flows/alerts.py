"""The alerts flow: the alerts stage (flows/stages/alerts.py) as a Prefect task, locally or with
the metric values computed on customer shards (flows/executors.py)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from catalog import Lake, load_catalog
from flows.executors import alerts_sharded
from flows.stages.alerts import run_alerts
from flows.stages.common import as_of_instant, parse_instant


@task(name="evaluate-and-deliver-alerts", retries=1, retry_delay_seconds=2)
def alerts_task(lake: str, as_of: str, deliver: bool) -> dict:
    lk = Lake.open(lake)
    return run_alerts(lk, load_catalog(lk.catalog_dir), parse_instant(as_of), deliver, log=get_run_logger().info)


@flow(name="alerts")
def alerts_flow(lake: str | None = None, as_of: str | None = None, deliver: bool = True, executor: str = "local",
                workers: int | None = None, dask_address: str | None = None, allow_future: bool = False) -> dict:
    """Fire each alert at most once per (alert, customer, window); deliver to every channel once.
    An `as_of` more than 5 minutes ahead of the clock is refused unless `allow_future`."""
    t = as_of_instant(as_of, allow_future, name="as_of", flag="allow_future=True").isoformat()
    if executor == "dask":  # values per customer shard on a Dask cluster, evaluated here
        return alerts_sharded(str(Lake.open(lake).root), t, deliver, workers, dask_address)
    return alerts_task(str(Lake(lake).root), t, deliver)
