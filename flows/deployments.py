"""Scheduled deployments (SPEC §8 `serve`): hourly ingest + metering, daily alerts, period close.

The same deployments are declared in `prefect.yaml` (for `prefect deploy --all` and a process
worker) and served from one process by `meterbill serve`:

| deployment | flow | schedule (UTC) | does |
|---|---|---|---|
| `hourly` | `hourly-ingest-and-meter` | `5 * * * *` | ingest what landed, bring usage_hourly up to date |
| `daily-alerts` | `daily-alerts` | `15 0 * * *` | evaluate every alert, deliver new firings |
| `period-close` | `period-close` | `30 1 * * *` | bill: drafts refreshed, periods past their grace made final |
| `backfill` | `backfill` | none (run it by hand) | `meterbill backfill` over `start`..`end` |

Parameters: the scheduled flows take one typed model, `params: PipelineParams`. Prefect merges a
run's parameters into the deployment's *by top-level name*, so a run created with
`{"params": {"as_of": "2026-02-10"}}` replaces the whole `params` object: every field it leaves
out takes the model's default. That is why `lake` defaults to `$METERBILL_LAKE` (which
`meterbill serve --lake L` sets for its runs, and a worker can set in the pool's environment)
before `data/`: a partial override never silently moves a run to another lake.
"""

from __future__ import annotations

import os
import time
from typing import Literal, Optional

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.alerts import alerts_flow
from flows.backfill import backfill_flow
from flows.bill import bill_flow
from flows.ingest import ingest_flow
from flows.meter import meter_flow
from flows.stages.common import as_of_instant, open_catalog, open_lake

LAKE_HELP = ("The lake folder or URL. Default: $METERBILL_LAKE (set by `meterbill serve --lake`), "
             "else data/ in the working directory.")


class PipelineParams(BaseModel):
    """The parameters of every scheduled deployment; each field has a default."""

    lake: Optional[str] = Field(None, description=LAKE_HELP)
    as_of: Optional[str] = Field(None, description="The run's instant, ISO-8601 or a date (default: when the run starts).")
    allow_future: bool = Field(False, description="Accept an as_of more than 5 minutes after the clock "
                               "(its final invoices cannot be taken back).")
    deliver: bool = Field(True, description="Send alert notifications (else only record firings).")
    max_event_age_days: Optional[int] = Field(None, ge=0, description="Override settings.max_event_age_days for ingest.")
    executor: Literal["local", "dask"] = Field("local", description="Task execution: local or dask.")
    workers: Optional[int] = Field(None, ge=1, description="With dask: workers of a temporary local cluster.")
    dask_address: Optional[str] = Field(None, description="With dask: the address of an existing cluster.")

    def executor_args(self) -> dict:
        return {"executor": self.executor, "workers": self.workers, "dask_address": self.dask_address}

    def resolved(self) -> tuple[str, str]:
        """(the lake's root, the instant as ISO-8601), checked: a missing lake, a bad catalogue or an
        as_of in the future (without allow_future) fails here."""
        lk = open_lake(self.lake)
        open_catalog(lk)
        t = as_of_instant(self.as_of, self.allow_future, name="as_of", flag="allow_future=True")
        return str(lk.root), t.isoformat()


@flow(name="hourly-ingest-and-meter")
def hourly(params: PipelineParams = PipelineParams()) -> dict:
    """Ingest what landed and bring usage_hourly up to date."""
    lake, t = params.resolved()
    log = get_run_logger()
    log.info("hourly: lake %s, as of %s", lake, t)
    ing = ingest_flow(lake=lake, as_of=t, max_event_age_days=params.max_event_age_days)
    met = meter_flow(lake=lake, as_of=t, **params.executor_args())
    return {"lake": lake, "as_of": t, "ingest": ing, "meter": met}


@flow(name="daily-alerts")
def daily_alerts(params: PipelineParams = PipelineParams()) -> dict:
    """Evaluate every alert and deliver new firings."""
    lake, t = params.resolved()
    get_run_logger().info("daily-alerts: lake %s, as of %s", lake, t)
    return {"lake": lake, "as_of": t,
            "alerts": alerts_flow(lake=lake, as_of=t, deliver=params.deliver, **params.executor_args())}


@flow(name="period-close")
def period_close(params: PipelineParams = PipelineParams()) -> dict:
    """Bill every started period: drafts refreshed, periods past their grace period made final."""
    lake, t = params.resolved()
    get_run_logger().info("period-close: lake %s, as of %s", lake, t)
    return {"lake": lake, "as_of": t, "bill": bill_flow(lake=lake, as_of=t, **params.executor_args())}


SCHEDULES = {
    # deployment name: (flow, cron in UTC or None, description)
    "hourly": (hourly, "5 * * * *", "Ingest what landed and bring usage_hourly up to date."),
    "daily-alerts": (daily_alerts, "15 0 * * *", "Evaluate every alert and deliver new firings."),
    # daily: yesterday's period ends plus the default 24 h grace have passed by 01:30 the day after
    "period-close": (period_close, "30 1 * * *", "Bill every started period; periods past their grace period become final."),
    "backfill": (backfill_flow, None, "Re-run the pipeline over a past range (parameters start, end)."),
}


def deployments(lake: str, schedules: bool = True) -> list:
    """The deployments of `SCHEDULES` for one lake (one run at a time per deployment)."""
    from prefect.schedules import Cron

    out = []
    for name, (f, cron, description) in SCHEDULES.items():
        params = {"lake": lake} if f is backfill_flow else {"params": {"lake": lake}}
        out.append(f.to_deployment(
            name=name, description=description, parameters=params, tags=["meterbill"], concurrency_limit=1,
            schedules=[Cron(cron, timezone="UTC")] if (cron and schedules) else None,
        ))
    return out


def wait_for_api(timeout: float = 120.0, say=None) -> None:
    """Wait until the Prefect API answers its health check (a server started alongside may still be booting)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    said = False
    with get_client(sync_client=True) as client:
        while (problem := client.api_healthcheck()) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect API at {client.api_url} did not answer within {timeout:.0f} s "
                                   f"({type(problem).__name__}: {problem})")
            if say and not said:
                say(f"waiting for the Prefect API at {client.api_url} …")
                said = True
            time.sleep(1.0)


def serve_all(lake: str, schedules: bool = True, limit: int = 1, say=None) -> None:
    """Serve every deployment from this process until interrupted (SIGINT or SIGTERM).

    Waits for the API first. Runs execute in subprocesses of this one, one at a time by default
    (they write the same lake), with $METERBILL_LAKE set to `lake` and run logs at INFO (to the
    API and this terminal).
    """
    from prefect import serve

    from catalog import Lake

    wait_for_api(say=say)

    root = str(Lake.open(lake).root.resolve())
    os.environ["METERBILL_LAKE"] = root
    os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    serve(*deployments(root, schedules), limit=limit)
