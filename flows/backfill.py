"""`meterbill backfill --from D --to D`: re-run the pipeline over a past range, in period order.

1. ingest everything that landed (at the real instant, so nothing is a future event), with
   `too_old` lifted back to the range's start;
2. meter (incremental);
3. replay the range at the instants of the backfill stage (flows/stages/backfill.py): bills at
   each period end + grace and at the range's end, alerts at every day (or hour) boundary and
   after each bill, recording firings (delivery off unless asked).

Prefect tasks are one per billing segment: the alert steps up to a billing instant, the bill at
it, the alerts right after it. A segment is retried with backoff (every step is idempotent).
`--executor dask` runs the meter step and every replay step on customer shards
(flows/executors.py; a step is a bill-sharded or alerts-sharded subflow of its segment's task);
ingest stays local.
Progress: a Prefect progress artifact (`backfill-progress`), and `PROGRESS_HOOK` for the CLI's
bar. At the end, the `backfill-report` markdown artifact and the `invoices` table.

Running it twice gives the same warehouse: ingest skips files it has (sha256), metering rebuilds
nothing, final invoices never change, drafts are rebuilt from the same events as of the same
instant, and an alert fires once per (alert, customer, window) with `fired_at` = the step's instant.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Optional

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE as NO_CACHE
from prefect.tasks import exponential_backoff

from catalog import Catalog, Lake, load_catalog
from flows.artifacts import failure_artifact, invoices_artifact, run_report_artifact
from flows.executors import alerts_sharded, bill_sharded
from flows.ingest import ingest_flow
from flows.meter import meter_flow
from flows.stages.alerts import run_alerts
from flows.stages.backfill import ALERTS, BILL, alert_instants, backfill_range, close_instants, plan_segments
from flows.stages.bill import run_bill
from flows.stages.common import open_catalog, open_lake, parse_instant
from flows.stages.run_report import invoice_totals, report_file

# The command line sets this to drive its progress bar: called with (done, total, label).
PROGRESS_HOOK: Optional[Callable[[int, int, str], None]] = None


def _progress(done: int, total: int, label: str) -> None:
    if PROGRESS_HOOK:
        PROGRESS_HOOK(done, total, label)


@task(name="backfill-segment", task_run_name="backfill-to-{label}", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def segment_task(lake: str, steps: list[tuple[str, str]], deliver: bool, label: str, done_before: int,
                 total: int, executor: str = "local", workers: int | None = None,
                 dask_address: str | None = None) -> dict:
    """One billing segment: alert steps, the bill at its closing instant, alerts right after it.

    With executor "dask" each step runs on customer shards (flows/executors.py: the bill-sharded
    and alerts-sharded flows, as subflows of this task), locally otherwise."""
    log = get_run_logger()
    lk = Lake.open(lake)
    cat = load_catalog(lk.catalog_dir)
    fired, bill = 0, None
    for i, (t, what) in enumerate(steps, 1):
        at = parse_instant(t)
        if what == BILL:
            bill = (bill_sharded(lake, at.isoformat(), workers, dask_address) if executor == "dask"
                    else run_bill(lk, cat, at))
            log.info("bill as of %s: %d invoices (%d final, %d draft)", t, bill["invoices"], bill["final"], bill["draft"])
        elif executor == "dask":
            fired += alerts_sharded(lake, at.isoformat(), deliver, workers, dask_address)["fired"]
        else:
            fired += run_alerts(lk, cat, at, deliver)["fired"]
        _progress(done_before + i, total, f"{what} as of {at:%Y-%m-%d %H:%M}")
    if fired:
        log.info("segment to %s: %d new alert firing(s)", label, fired)
    return {"bill": bill, "fired": fired}


@flow(name="backfill")
def backfill_flow(start: str, end: str, lake: str | None = None, deliver: bool = False,
                  executor: str = "local", workers: int | None = None, dask_address: str | None = None) -> dict:
    """Re-run the pipeline over [start, end] (dates or ISO-8601 instants), idempotently, in period order."""
    log = get_run_logger()
    lk = open_lake(lake)
    cat = open_catalog(lk)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    s, e = backfill_range(start, end, now)
    root = str(lk.root)
    title = f"meterbill backfill {s:%Y-%m-%d %H:%M} → {e:%Y-%m-%d %H:%M}"
    ex = {"executor": executor, "workers": workers, "dask_address": dask_address}
    art = create_progress_artifact(progress=0.0, key="backfill-progress", description=title)
    timings: dict[str, float] = {}
    stage = "ingest"
    try:
        # ingest at the real instant (nothing is "future"), with too_old lifted back to the range start
        _progress(0, 0, "ingest")
        t0 = time.monotonic()
        ing = ingest_flow(lake=root, as_of=now.isoformat(), max_event_age_days=max((now - s).days + 1,
                                                                                    cat.settings.max_event_age_days))
        ing = ing if isinstance(ing, dict) else ing.to_dict()
        timings["ingest"] = round(time.monotonic() - t0, 3)
        stage = "meter"
        _progress(1, 0, "meter")
        t0 = time.monotonic()
        met = meter_flow(lake=root, as_of=now.isoformat(), **ex)
        timings["meter"] = round(time.monotonic() - t0, 3)
        stage = "replay"
        replay = _replay(lk, cat, s, e, deliver, ex, art, title, timings)
    except BaseException as err:
        log.error("backfill failed at %s: %s: %s", stage, type(err).__name__, " ".join(str(err).split())[:500])
        failure_artifact("backfill-report", title, stage, err, lk=lk)
        raise
    return _report(lk, s, e, title, ing, met, replay, timings)


def _replay(lk: Lake, cat: Catalog, s: dt.datetime, e: dt.datetime, deliver: bool, ex: dict, art, title: str,
            timings: dict[str, float]) -> dict:
    """Every segment of the range, in order, with the progress artifact `art` and hook kept up to date."""
    bills = close_instants(lk, cat, s, e)
    days = alert_instants(cat, s, e)
    segments = plan_segments(bills, days)
    total = 2 + sum(len(seg) for seg in segments)
    get_run_logger().info("backfill %s → %s: %d billing instants, %d alert instants, %d segments",
                          s.isoformat(), e.isoformat(), len(bills), len(set(days) | set(bills)), len(segments))
    _progress(2, total, "replay")
    done, fired, bill = 2, 0, None
    t0 = time.monotonic()
    for seg in segments:
        close = seg[-1][0]
        res = segment_task(str(lk.root), [(t.isoformat(), what) for t, what in seg], deliver,
                           f"{close:%Y-%m-%d-%H%M}", done, total, **ex)
        done += len(seg)
        fired += res["fired"]
        bill = res["bill"] or bill
        update_progress_artifact(artifact_id=art, progress=100.0 * done / total,
                                 description=f"{title}: {close:%Y-%m-%d %H:%M} done")
    timings["replay"] = round(time.monotonic() - t0, 3)
    alert_steps = sum(1 for seg in segments for _, w in seg if w == ALERTS)
    return {"billing_steps": len(bills), "alert_steps": alert_steps, "bill": bill, "fired": fired}


def _report(lk: Lake, s: dt.datetime, e: dt.datetime, title: str, ing: dict, met: dict, replay: dict,
            timings: dict[str, float]) -> dict:
    """Publish the backfill report and the invoices table; the flow's result."""
    alerts = {"fired": replay["fired"], "firings_total": lk.read("alerts_fired").height}
    run_report_artifact(lk, e.isoformat(), ing, replay["bill"], alerts, meter=met, key="backfill-report", title=title,
                        fired_from=s.isoformat(), timings=timings)
    invoices_artifact(lk)
    get_run_logger().info("backfill done: %d billing steps, %d alert steps, %d new firings",
                          replay["billing_steps"], replay["alert_steps"], replay["fired"])
    return {"lake": str(lk.root), "start": s.isoformat(), "end": e.isoformat(), "ingest": ing, "meter": met,
            "billing_steps": replay["billing_steps"], "alert_steps": replay["alert_steps"], "bill": replay["bill"],
            "alerts": alerts, "invoices": invoice_totals(lk), "timings": timings,
            "report": str(report_file(lk, "backfill-report"))}
