"""The bill flow: the bill stage (flows/stages/bill.py) as a Prefect task, locally or on customer
shards (flows/executors.py), then the `invoices` table artifact."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from catalog import Lake, load_catalog
from flows.artifacts import invoices_artifact
from flows.engine import not_a_warehouse_error
from flows.executors import bill_sharded
from flows.stages.bill import run_bill
from flows.stages.common import as_of_instant, parse_instant


@task(name="price-and-write-invoices", retries=1, retry_delay_seconds=2, retry_condition_fn=not_a_warehouse_error)
def bill_task(lake: str, as_of: str) -> dict:
    lk = Lake.open(lake)
    return run_bill(lk, load_catalog(lk.catalog_dir), parse_instant(as_of), log=get_run_logger().info)


@flow(name="bill")
def bill_flow(lake: str | None = None, as_of: str | None = None, executor: str = "local",
              workers: int | None = None, dask_address: str | None = None, allow_future: bool = False) -> dict:
    """Price every started period into invoices (drafts for open periods, finals after grace).
    An `as_of` more than 5 minutes ahead of the clock is refused unless `allow_future`."""
    lk = Lake.open(lake)
    t = as_of_instant(as_of, allow_future, name="as_of", flag="allow_future=True")
    with lk.naming_damage():
        if executor == "dask":  # customer shards on a Dask cluster
            summary = bill_sharded(str(lk.root), t.isoformat(), workers, dask_address)
        else:
            summary = bill_task(str(lk.root), t.isoformat())
        invoices_artifact(lk)
    return summary
