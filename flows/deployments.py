"""Scheduled deployments (SPEC §8 `serve`): hourly ingest + metering, daily alerts, period close.

The same three deployments are declared in `prefect.yaml` (for `prefect deploy` and a worker)
and served from one process by `meterbill serve`. Their parameter is one typed model, so a
partial override (`{"params": {"lake": "/srv/lake"}}`) keeps every other default.
"""

from __future__ import annotations

from typing import Literal, Optional

from prefect import flow
from pydantic import BaseModel, Field


class PipelineParams(BaseModel):
    lake: str = Field("data", description="The lake folder or URL.")
    as_of: Optional[str] = Field(None, description="The run's instant (default: when the run starts).")
    deliver: bool = Field(True, description="Send alert notifications (else only record firings).")
    max_event_age_days: Optional[int] = Field(None, ge=1, description="Override settings.max_event_age_days.")
    executor: Literal["local", "dask"] = "local"
    workers: Optional[int] = Field(None, ge=1)
    dask_address: Optional[str] = None

    def executor_args(self) -> dict:
        return {"executor": self.executor, "workers": self.workers, "dask_address": self.dask_address}


@flow(name="hourly-ingest-and-meter")
def hourly(params: PipelineParams = PipelineParams()) -> dict:
    """Ingest what landed and bring usage_hourly up to date."""
    from flows.common import parse_instant
    from flows.ingest import ingest_flow
    from flows.meter import meter_flow

    t = parse_instant(params.as_of).isoformat()
    ing = ingest_flow(lake=params.lake, as_of=t, max_event_age_days=params.max_event_age_days)
    met = meter_flow(lake=params.lake, as_of=t, **params.executor_args())
    return {"ingest": ing if isinstance(ing, dict) else getattr(ing, "as_dict", lambda: {})(), "meter": met}


@flow(name="daily-alerts")
def daily_alerts(params: PipelineParams = PipelineParams()) -> dict:
    """Evaluate every alert and deliver new firings."""
    from flows.alerts import alerts_flow
    from flows.common import parse_instant

    return alerts_flow(lake=params.lake, as_of=parse_instant(params.as_of).isoformat(), deliver=params.deliver,
                       **params.executor_args())


@flow(name="period-close")
def period_close(params: PipelineParams = PipelineParams()) -> dict:
    """Bill every started period: drafts refreshed, periods past their grace period made final."""
    from flows.bill import bill_flow
    from flows.common import parse_instant

    return bill_flow(lake=params.lake, as_of=parse_instant(params.as_of).isoformat(), **params.executor_args())


SCHEDULES = {
    # deployment name: (flow, cron in UTC)
    "hourly": (hourly, "5 * * * *"),
    "daily-alerts": (daily_alerts, "15 0 * * *"),
    "period-close": (period_close, "30 1 * * *"),  # daily, after the grace period of yesterday's closes
}


def deployments(lake: str, schedules: bool = True) -> list:
    return [
        f.to_deployment(name=name, cron=cron if schedules else None, parameters={"params": {"lake": lake}},
                        tags=["meterbill"])
        for name, (f, cron) in SCHEDULES.items()
    ]


def serve_all(lake: str, schedules: bool = True) -> None:
    """Serve the three deployments from this process until interrupted."""
    from prefect import serve

    serve(*deployments(lake, schedules))
