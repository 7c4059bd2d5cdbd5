"""`meterbill backfill --from D --to D`: re-run the pipeline over a past range, in period order.

1. ingest everything that landed, with `too_old` lifted back to the range's start;
2. meter (incremental);
3. bill at each instant in the range where a period's invoice becomes final (period end + grace),
   oldest first, then at the range's end — so invoices finalise in the order they would have;
4. evaluate alerts at every UTC day boundary of the range (recorded; delivery off by default).

Running it twice gives the same warehouse: every step is idempotent.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Optional

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from catalog import Lake, load_catalog
from flows.common import parse_instant

# The command line sets this to drive its progress bar: called with (done, total, label).
PROGRESS_HOOK: Optional[Callable[[int, int, str], None]] = None


def close_instants(lk: Lake, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Every period end + grace inside (start, end], and end itself, in order."""
    from transforms.pricing import customer_periods

    cat = load_catalog(lk.catalog_dir)
    grace = dt.timedelta(hours=cat.settings.grace_period_hours)
    steps = {end}
    for cid in cat.customers:
        for p in customer_periods(cat, cid, end):
            t = p.end + grace
            if start < t <= end:
                steps.add(t)
    return sorted(steps)


def day_instants(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    first = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc)
    if first < start:
        first += dt.timedelta(days=1)
    out, t = [], first
    while t <= end:
        out.append(t)
        t += dt.timedelta(days=1)
    return out


@flow(name="backfill")
def backfill_flow(lake: str | None = None, start: str = "", end: str = "", deliver: bool = False,
                  executor: str = "local", workers: int | None = None, dask_address: str | None = None) -> dict:
    from flows.alerts import alerts_task
    from flows.bill import bill_task
    from flows.ingest import ingest_flow
    from flows.meter import meter_flow

    log = get_run_logger()
    lk = Lake(lake)
    s, e = parse_instant(start, "--from"), parse_instant(end, "--to")
    cat = load_catalog(lk.catalog_dir)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    age = max((now - s).days + 1, cat.settings.max_event_age_days)
    ex = {"executor": executor, "workers": workers, "dask_address": dask_address}
    # ingest at the real instant (nothing is "future"), with too_old lifted back to the range start
    ing = ingest_flow(lake=str(lk.root), as_of=now.isoformat(), max_event_age_days=age)
    meter_flow(lake=str(lk.root), as_of=now.isoformat(), **ex)
    bills = close_instants(lk, s, e)
    days = [d for d in day_instants(s, e) if d not in bills]
    steps = sorted([(t, "bill") for t in bills] + [(t, "alerts") for t in days] + [(t, "alerts") for t in bills])
    art = create_progress_artifact(progress=0.0, key="backfill-progress",
                                   description=f"backfill {s:%Y-%m-%d} → {e:%Y-%m-%d}")
    for i, (t, what) in enumerate(steps, 1):
        if what == "bill":
            bill_task(str(lk.root), t.isoformat())
        else:
            alerts_task(str(lk.root), t.isoformat(), deliver)
        pct = 100.0 * i / len(steps)
        update_progress_artifact(artifact_id=art, progress=pct)
        if PROGRESS_HOOK:
            PROGRESS_HOOK(i, len(steps), f"{what} as of {t:%Y-%m-%d %H:%M}")
    log.info(f"backfill {s} → {e}: {len(bills)} billing steps, {len(steps) - len(bills)} alert steps")
    return {"billing_steps": len(bills), "alert_steps": len(steps) - len(bills),
            "ingested_files": len(getattr(ing, "files", []) or [])}
