"""The pipeline verbs: check, generate, ingest, meter, bill, alerts, run, backfill."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import typer

from flows.cli.shared import (
    ALLOW_FUTURE, AS_OF, DASK_ADDRESS, EXECUTOR, LAKE, WORKERS, executor_options, local_flows, progress_line, summary_line, app,
    err, out,
)
from flows.cli.summary import run_logs, when_text, print_run_summary
from flows.cli.tables import print_invoices
from flows.stages.backfill import backfill_range
from flows.stages.common import as_of_instant, open_catalog, open_lake, parse_instant


@app.command()
def check(lake: Optional[str] = LAKE):
    """Validate the catalogue and print every problem (exit 1 if any)."""
    lk = open_lake(lake)
    cat = open_catalog(lk)
    out.print(f"catalogue OK: {len(cat.customers)} customers, {len(cat.meters)} meters, "
              f"{len(cat.product_items)} product items, {len(cat.plans)} plans, "
              f"{len(cat.subscriptions)} subscriptions, {len(cat.alerts)} alerts")
    if cat.ignored_files:
        out.print(f"ignored hidden files: {', '.join(cat.ignored_files)}")


@app.command()
def generate(
    lake: Optional[str] = LAKE,
    start: str = typer.Option(None, "--start", help="First day (default: 40 days before today)."),
    days: int = typer.Option(40, "--days", min=1, help="Number of days."),
    events_per_day: int = typer.Option(2000, "--events-per-day", min=1, help="Events per day."),
    seed: int = typer.Option(42, "--seed", help="Random seed (the same seed writes the same events)."),
    messy: bool = typer.Option(False, "--messy", help="Add known numbers of bad rows and duplicates."),
    customers: int = typer.Option(None, "--customers", min=1, help="Use only the first N customers."),
):
    """Write synthetic events for the catalogue as Parquet under raw/."""

    lk = open_lake(lake)
    cat = open_catalog(lk)
    from flows.stages.generate import generate as gen
    first = parse_instant(start, "--start").date() if start else dt.date.today() - dt.timedelta(days=days)
    ids = sorted(cat.customers)[:customers] if customers else None
    g = gen(cat, lk.raw_dir, first, days, events_per_day, seed, messy, ids, progress=progress_line)
    out.print(f"wrote {g.rows} rows in {len(g.files)} files under {lk.raw_dir}: {g.events} events"
              + (f", defects {g.defects}, duplicates {g.duplicates}" if messy else ""))


@app.command()
@local_flows
def ingest(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE,
           max_event_age_days: Optional[int] = typer.Option(
               None, "--max-event-age-days", min=1,
               help="Quarantine events older than this many days before --as-of (default: the catalogue's settings)."),
           requeue: Optional[list[str]] = typer.Option(
               None, "--requeue", metavar="REASON",
               help="Judge the quarantined records of this reason again (repeatable, or a comma list); "
                    "future_event and too_old are judged again by every ingest.")):
    """Raw files -> events, quarantine, ingest_files."""

    lk = open_lake(lake)
    open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    from flows.ingest import ingest_flow
    from flows.stages.ingest import requeue_reasons
    reasons = requeue_reasons(requeue)
    rep = ingest_flow(lake=str(lk.root), as_of=t.isoformat(), max_event_age_days=max_event_age_days,
                      allow_future=allow_future, requeue=reasons)
    out.print(summary_line("ingest", rep))


@app.command()
@local_flows
def meter(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE, executor: str = EXECUTOR,
          workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """Events -> usage_hourly (only the hours that changed)."""

    lk = open_lake(lake)
    open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    from flows.meter import meter_flow
    rep = meter_flow(lake=str(lk.root), as_of=t.isoformat(), allow_future=allow_future,
                     **executor_options(executor, workers, dask_address))
    out.print(summary_line("meter", rep))


@app.command()
@local_flows
def bill(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE, executor: str = EXECUTOR,
         workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """Usage -> line_items, invoices, credit_ledger, unbilled_usage."""

    lk = open_lake(lake)
    cat = open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    from catalog import Lake
    from flows.bill import bill_flow
    rep = bill_flow(lake=str(lk.root), as_of=t.isoformat(), allow_future=allow_future,
                    **executor_options(executor, workers, dask_address))
    out.print(summary_line("bill", rep))
    print_invoices(_latest_invoices(Lake(lk.root)), title="Invoices (each customer's latest period)", cat=cat)


def _latest_invoices(lk):
    import polars as pl

    inv = lk.read("invoices")
    if inv.height == 0:
        return inv
    last = inv.group_by("customer_id").agg(pl.col("period_start").max())
    return inv.join(last, on=["customer_id", "period_start"]).sort("customer_id")


@app.command()
@local_flows
def alerts(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE,
           no_deliver: bool = typer.Option(False, "--no-deliver", help="Only record firings."),
           executor: str = EXECUTOR, workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """-> alerts_fired, deliveries."""

    lk = open_lake(lake)
    open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    from flows.alerts import alerts_flow
    rep = alerts_flow(lake=str(lk.root), as_of=t.isoformat(), deliver=not no_deliver, allow_future=allow_future,
                      **executor_options(executor, workers, dask_address))
    out.print(summary_line("alerts", rep))


@app.command()
@local_flows
def run(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE,
        no_deliver: bool = typer.Option(False, "--no-deliver", help="Only record alert firings."),
        executor: str = EXECUTOR, workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """ingest -> meter -> bill -> alerts."""

    lk = open_lake(lake)
    open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    ex = executor_options(executor, workers, dask_address)
    from flows.run import run_flow
    with run_logs():
        rep = run_flow(lake=str(lk.root), as_of=t.isoformat(), deliver=not no_deliver, allow_future=allow_future, **ex)
    print_run_summary(f"run as of {when_text(rep['as_of'])}", rep)


@app.command()
@local_flows
def backfill(
    from_: str = typer.Option(..., "--from", help="Start of the range: a date or an ISO-8601 instant."),
    to: str = typer.Option(..., "--to", help="End of the range (exclusive): a date or an ISO-8601 instant, not after now."),
    lake: Optional[str] = LAKE,
    no_deliver: bool = typer.Option(True, "--no-deliver/--deliver", help="Backfills record alerts without sending."),
    executor: str = EXECUTOR, workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS,
):
    """Re-run the pipeline over a past range, period by period, idempotently."""

    lk = open_lake(lake)
    open_catalog(lk)
    start, end = backfill_range(from_, to, dt.datetime.now(dt.timezone.utc))
    ex = executor_options(executor, workers, dask_address)
    import flows.backfill as bf
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as bar, run_logs():
        task = bar.add_task("backfill: starting", total=None)

        def hook(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total or None, description=label)

        bf.PROGRESS_HOOK = hook
        try:
            rep = bf.backfill_flow(start=start.isoformat(), end=end.isoformat(), lake=str(lk.root),
                                   deliver=not no_deliver, **ex)
        finally:
            bf.PROGRESS_HOOK = None
    print_run_summary(f"backfill {when_text(rep['start'])} → {when_text(rep['end'])}", rep)
