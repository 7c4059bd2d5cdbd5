"""`meterbill run`: ingest -> meter -> bill -> alerts, each a subflow, with a run report artifact."""

from __future__ import annotations

from prefect import flow

from catalog import Lake
from flows.common import parse_instant


@flow(name="run")
def run_flow(lake: str | None = None, as_of: str | None = None, deliver: bool = True,
             max_event_age_days: int | None = None, executor: str = "local", workers: int | None = None,
             dask_address: str | None = None) -> dict:
    """The whole pipeline for one instant. A failing stage fails the run (nothing after it runs)."""
    from flows.alerts import alerts_flow
    from flows.artifacts import run_report_artifact
    from flows.bill import bill_flow
    from flows.ingest import ingest_flow
    from flows.meter import meter_flow

    lk = Lake(lake)
    t = parse_instant(as_of).isoformat()
    ex = {"executor": executor, "workers": workers, "dask_address": dask_address}
    ing = ingest_flow(lake=str(lk.root), as_of=t, max_event_age_days=max_event_age_days)
    met = meter_flow(lake=str(lk.root), as_of=t, **ex)
    bil = bill_flow(lake=str(lk.root), as_of=t, **ex)
    ale = alerts_flow(lake=str(lk.root), as_of=t, deliver=deliver, **ex)
    ing_d = ing if isinstance(ing, dict) else getattr(ing, "as_dict", lambda: {})()
    run_report_artifact(lk, t, ing_d, bil, ale)
    return {"ingest": ing_d, "meter": met, "bill": bil, "alerts": ale}
