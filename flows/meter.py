"""The meter flow: the meter stage (flows/stages/meter.py) as a Prefect task, locally or on
customer shards (flows/executors.py)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from catalog import Lake, load_catalog
from flows.engine import not_a_warehouse_error
from flows.executors import meter_sharded
from flows.stages.common import as_of_instant, parse_instant
from flows.stages.meter import run_meter


@task(name="aggregate-usage-hourly", retries=1, retry_delay_seconds=2, retry_condition_fn=not_a_warehouse_error)
def meter_task(lake: str, as_of: str) -> dict:
    lk = Lake.open(lake)
    return run_meter(lk, load_catalog(lk.catalog_dir), parse_instant(as_of), log=get_run_logger().info)


@flow(name="meter")
def meter_flow(lake: str | None = None, as_of: str | None = None, executor: str = "local",
               workers: int | None = None, dask_address: str | None = None, allow_future: bool = False) -> dict:
    """Bring usage_hourly up to date with the events table.
    An `as_of` more than 5 minutes ahead of the clock is refused unless `allow_future`."""
    t = as_of_instant(as_of, allow_future, name="as_of", flag="allow_future=True").isoformat()
    lk = Lake.open(lake)
    with lk.naming_damage(["events"]):
        if executor == "dask":  # customer shards on a Dask cluster
            return meter_sharded(str(lk.root), t, workers, dask_address)
        return meter_task(str(lk.root), t)
