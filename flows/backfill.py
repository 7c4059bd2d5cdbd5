"""`meterbill backfill --from D --to D`: re-run the pipeline over a past range, in period order.

1. ingest everything that landed (at the real instant, so nothing is a future event), with
   `too_old` lifted back to the range's start;
2. meter (incremental);
3. replay the range: bill at each instant where a period's invoice becomes final (period end +
   grace), oldest first, and at the range's end — so invoices finalise in the order they would
   have, credits burn down and late usage becomes adjustments as in production; evaluate alerts
   at every UTC day boundary of the range (every hour if an alert has hour windows) and at each
   billing instant, recording firings (delivery off unless asked).

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
from flows.common import UsageError, parse_instant

# The command line sets this to drive its progress bar: called with (done, total, label).
PROGRESS_HOOK: Optional[Callable[[int, int, str], None]] = None

BILL, ALERTS = "bill", "alerts"


def _progress(done: int, total: int, label: str) -> None:
    if PROGRESS_HOOK:
        PROGRESS_HOOK(done, total, label)


def close_instants(lk: Lake, cat: Catalog, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Every period end + grace inside (start, end], and end itself, in order."""
    from flows.bill import first_event_times
    from transforms.pricing import customer_periods

    # the default plan starts at a customer's first event (SPEC §5.2), as billing at `end` has it
    first = first_event_times(lk, end) if cat.settings.default_plan_id else {}
    grace = dt.timedelta(hours=cat.settings.grace_period_hours)
    steps = {end}
    for cid in cat.customers:
        for p in customer_periods(cat, cid, end, first_event_time=first.get(cid)):
            t = p.end + grace
            if start < t <= end:
                steps.add(t)
    return sorted(steps)


def alert_instants(cat: Catalog, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """UTC day boundaries in [start, end] (hour boundaries if an alert has hour windows)."""
    step = dt.timedelta(hours=1) if any(a.window == "hour" for a in cat.alerts.values()) else dt.timedelta(days=1)
    if step == dt.timedelta(days=1):
        first = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc)
    else:
        first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += step
    out, t = [], first
    while t <= end:
        out.append(t)
        t += step
    return out


def plan_segments(bills: list[dt.datetime], alert_days: list[dt.datetime]) -> list[list[tuple[dt.datetime, str]]]:
    """The steps in order (at one instant: bill, then alerts), cut after each billing instant."""
    if not bills:
        return []
    steps = sorted({(t, BILL) for t in bills} | {(t, ALERTS) for t in alert_days} | {(t, ALERTS) for t in bills},
                   key=lambda s: (s[0], s[1] != BILL))
    segments, cur = [], []
    bill_set = set(bills)
    for t, what in steps:
        cur.append((t, what))
        if what == ALERTS and t in bill_set:
            segments.append(cur)
            cur = []
    if cur:
        segments.append(cur)
    return segments


@task(name="backfill-segment", task_run_name="backfill-to-{label}", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def segment_task(lake: str, steps: list[tuple[str, str]], deliver: bool, label: str, done_before: int,
                 total: int, executor: str = "local", workers: int | None = None,
                 dask_address: str | None = None) -> dict:
    """One billing segment: alert steps, the bill at its closing instant, alerts right after it.

    With executor "dask" each step runs on customer shards (flows/executors.py: the bill-sharded
    and alerts-sharded flows, as subflows of this task), locally otherwise."""
    from flows.alerts import run_alerts
    from flows.bill import run_bill

    log = get_run_logger()
    lk = Lake(lake)
    cat = load_catalog(lk.catalog_dir)
    fired, bill = 0, None
    for i, (t, what) in enumerate(steps, 1):
        at = parse_instant(t)
        if what == BILL:
            if executor == "dask":
                from flows.executors import bill_sharded

                bill = bill_sharded(lake, at.isoformat(), workers, dask_address)
            else:
                bill = run_bill(lk, cat, at)
            log.info("bill as of %s: %d invoices (%d final, %d draft)", t, bill["invoices"], bill["final"], bill["draft"])
        elif executor == "dask":
            from flows.executors import alerts_sharded

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
    from flows.artifacts import failure_artifact, invoice_totals, invoices_artifact, report_file, run_report_artifact
    from flows.common import open_catalog, open_lake
    from flows.ingest import ingest_flow
    from flows.meter import meter_flow

    log = get_run_logger()
    lk = open_lake(lake)
    cat = open_catalog(lk)
    s, e = parse_instant(start, "--from"), parse_instant(end, "--to")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    if e <= s:
        raise UsageError("--to: must be after --from")
    if e > now:
        raise UsageError(f"--to: {e.isoformat()} is in the future; a backfill re-runs a past range "
                         "(`meterbill run` runs as of now)")
    root = str(lk.root)
    title = f"meterbill backfill {s:%Y-%m-%d %H:%M} → {e:%Y-%m-%d %H:%M}"
    age = max((now - s).days + 1, cat.settings.max_event_age_days)
    ex = {"executor": executor, "workers": workers, "dask_address": dask_address}
    art = create_progress_artifact(progress=0.0, key="backfill-progress", description=title)
    timings: dict[str, float] = {}
    stage = "ingest"
    try:
        # ingest at the real instant (nothing is "future"), with too_old lifted back to the range start
        _progress(0, 0, "ingest")
        t0 = time.monotonic()
        ing = ingest_flow(lake=root, as_of=now.isoformat(), max_event_age_days=age)
        ing = ing if isinstance(ing, dict) else ing.to_dict()
        timings["ingest"] = round(time.monotonic() - t0, 3)
        stage = "meter"
        _progress(1, 0, "meter")
        t0 = time.monotonic()
        met = meter_flow(lake=root, as_of=now.isoformat(), **ex)
        timings["meter"] = round(time.monotonic() - t0, 3)
        stage = "replay"
        bills = close_instants(lk, cat, s, e)
        days = alert_instants(cat, s, e)
        segments = plan_segments(bills, days)
        total = 2 + sum(len(seg) for seg in segments)
        log.info("backfill %s → %s: %d billing instants, %d alert instants, %d segments",
                 s.isoformat(), e.isoformat(), len(bills), len(set(days) | set(bills)), len(segments))
        _progress(2, total, "replay")
        done, fired, bill = 2, 0, None
        t0 = time.monotonic()
        for seg in segments:
            close = seg[-1][0]
            res = segment_task(root, [(t.isoformat(), what) for t, what in seg], deliver, f"{close:%Y-%m-%d-%H%M}",
                               done, total, **ex)
            done += len(seg)
            fired += res["fired"]
            bill = res["bill"] or bill
            update_progress_artifact(artifact_id=art, progress=100.0 * done / total,
                                     description=f"{title}: {close:%Y-%m-%d %H:%M} done")
        timings["replay"] = round(time.monotonic() - t0, 3)
    except BaseException as err:
        log.error("backfill failed at %s: %s: %s", stage, type(err).__name__, " ".join(str(err).split())[:500])
        failure_artifact("backfill-report", title, stage, err, lk=lk)
        raise
    firings_total = lk.read("alerts_fired").height
    alerts = {"fired": fired, "firings_total": firings_total}
    run_report_artifact(lk, e.isoformat(), ing, bill, alerts, meter=met, key="backfill-report", title=title,
                        fired_from=s.isoformat(), timings=timings)
    invoices_artifact(lk)
    alert_steps = sum(1 for seg in segments for _, w in seg if w == ALERTS)
    log.info("backfill done: %d billing steps, %d alert steps, %d new firings", len(bills), alert_steps, fired)
    return {"lake": root, "start": s.isoformat(), "end": e.isoformat(), "ingest": ing, "meter": met,
            "billing_steps": len(bills), "alert_steps": alert_steps, "bill": bill, "alerts": alerts,
            "invoices": invoice_totals(lk), "timings": timings, "report": str(report_file(lk, "backfill-report"))}
