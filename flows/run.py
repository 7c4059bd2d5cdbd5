"""`meterbill run`: ingest -> meter -> bill -> alerts, each a subflow, then the run report artifacts
(no HTML pages: those are `meterbill report`'s, on demand).

A stage that raises fails the run: nothing after it runs, a short `run-report` artifact names
the stage and the error, and the exception reaches the caller (the CLI prints one line, exit 1).
Every stage is idempotent, so re-running after a fix picks up where it failed.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.tasks import exponential_backoff

from catalog import Lake
from flows.alerts import alerts_flow
from flows.artifacts import failure_artifact, invoices_artifact, run_report_artifact
from flows.bill import bill_flow
from flows.ingest import ingest_flow
from flows.meter import meter_flow
from flows.stages.common import as_of_instant
from flows.stages.run_report import invoice_totals, report_file

STAGES = ("ingest", "meter", "bill", "alerts")


@task(name="publish-run-report", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.5)
def publish_report_task(lake: str, as_of: str, ingest: dict | None, meter: dict | None, bill: dict | None,
                        alerts: dict | None, timings: dict) -> str:
    """Read the lake's tables (I/O, retried with backoff) and publish the run report and invoices
    table: both small at any number of customers; no HTML page (`meterbill report` makes them)."""
    lk = Lake.open(lake)
    text = run_report_artifact(lk, as_of, ingest, bill, alerts, meter=meter, timings=timings)
    invoices_artifact(lk)
    return text


@flow(name="run")
def run_flow(lake: str | None = None, as_of: str | None = None, deliver: bool = True,
             max_event_age_days: int | None = None, executor: str = "local", workers: int | None = None,
             dask_address: str | None = None, allow_future: bool = False) -> dict:
    """The whole pipeline for one instant. A failing stage fails the run (nothing after it runs).
    An `as_of` more than 5 minutes ahead of the clock is refused unless `allow_future`.

    Returns {"lake", "as_of", "ingest", "meter", "bill", "alerts", "invoices", "timings", "report"}:
    each stage's summary, the invoices by status and currency, seconds per stage, and the run
    report's file (<lake>/reports/run-report.md, also the artifact `run-report`).
    """
    log = get_run_logger()
    lk = Lake.open(lake)
    root = str(lk.root)
    t = as_of_instant(as_of, allow_future, name="as_of", flag="allow_future=True").isoformat()
    ex = {"executor": executor, "workers": workers, "dask_address": dask_address}
    steps = {
        "ingest": lambda: ingest_flow(lake=root, as_of=t, max_event_age_days=max_event_age_days,
                                      allow_future=allow_future),
        "meter": lambda: meter_flow(lake=root, as_of=t, allow_future=allow_future, **ex),
        "bill": lambda: bill_flow(lake=root, as_of=t, allow_future=allow_future, **ex),
        "alerts": lambda: alerts_flow(lake=root, as_of=t, deliver=deliver, allow_future=allow_future, **ex),
    }
    out: dict = {"lake": root, "as_of": t}
    timings: dict[str, float] = {}
    for i, stage in enumerate(STAGES, 1):
        log.info("[%d/%d] %s …", i, len(STAGES), stage)
        started = time.monotonic()
        try:
            res = steps[stage]()
        except BaseException as e:
            log.error("%s failed: %s: %s", stage, type(e).__name__, " ".join(str(e).split())[:500])
            failure_artifact("run-report", "meterbill run", stage, e, lk=lk)
            raise
        timings[stage] = round(time.monotonic() - started, 3)
        out[stage] = res if isinstance(res, dict) else getattr(res, "to_dict", lambda: {})()
    publish_report_task(root, t, out["ingest"], out["meter"], out["bill"], out["alerts"], timings)
    out["invoices"] = invoice_totals(lk)
    out["timings"] = timings
    out["report"] = str(report_file(lk, "run-report"))
    log.info("run as of %s done in %.1f s", t, sum(timings.values()))
    return out
