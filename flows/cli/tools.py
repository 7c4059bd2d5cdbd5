"""The verbs that read and explain the lake (usage, sql, reconcile, report), serve the
deployments, and run the demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from flows.cli.shared import ALLOW_FUTURE, AS_OF, LAKE, local_flows, progress_line, app, err, out
from flows.cli.tables import print_reconciliation
from flows.stages.common import MAX_ROWS, UsageError, as_of_instant, open_catalog, open_lake


@app.command()
def usage(
    meter: str = typer.Option(..., "--meter", help="The meter's meter_api_name."),
    window: str = typer.Option("day", "--window", help="hour, day, week or month."),
    from_: str = typer.Option(..., "--from", help="Start of the range: a date (local midnight) or an ISO-8601 instant."),
    to: str = typer.Option(..., "--to", help="End of the range (exclusive): a date or an ISO-8601 instant."),
    group_by: str = typer.Option("", "--group-by", help="customer_id and/or dimension keys, comma-separated."),
    filter_: list[str] = typer.Option([], "--filter", help="key=v1,v2 (repeatable)."),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="Only the N groups with the largest totals (with --group-by)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    tz: str = typer.Option("UTC", "--tz", help="IANA time zone of the buckets and of date bounds (default UTC)."),
    lake: Optional[str] = LAKE,
):
    """The usage query of SPEC §4.

    Buckets (hours, days, weeks from Monday, months) and --from/--to dates are in one time zone for every group: UTC unless --tz names another, with or without --group-by customer_id (customers' own zones are not used), so a range's total is the same however it is grouped.
    """
    from flows.stages.usage import usage_report

    if fmt not in ("table", "csv", "json"):
        raise UsageError(f"--format: must be table, csv or json, got {fmt!r}")
    if window not in ("hour", "day", "week", "month"):
        raise UsageError(f"--window: must be hour, day, week or month, got {window!r}")
    filters: dict[str, list[str]] = {}
    for f in filter_:
        if "=" not in f:
            raise UsageError(f"--filter: expected key=v1,v2, got {f!r}")
        k, v = f.split("=", 1)
        filters.setdefault(k.strip(), []).extend(x.strip() for x in v.split(",") if x.strip())
    lk = open_lake(lake)
    text = usage_report(lk, meter, window, from_, to, [g.strip() for g in group_by.split(",") if g.strip()],
                        filters, top, fmt, tz=tz)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def sql(query: str = typer.Argument(..., help="One read-only query (SELECT, WITH, ...) over the warehouse views."),
        lake: Optional[str] = LAKE,
        fmt: str = typer.Option("table", "--format", help="table, csv or json (exact decimals; nested values as JSON).")):
    """Run a read-only query over the warehouse views (a statement that would write is refused)."""
    from flows.stages.sql import run_sql

    run_sql(open_lake(lake), query, fmt, out)


@app.command()
def reconcile(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE,
              customer: Optional[str] = typer.Option(None, "--customer", help="Only this customer_id.")):
    """Per customer and period: events, usage, billed and adjusted quantities."""
    import polars as pl

    from catalog import Lake

    lk = open_lake(lake)
    as_of_instant(as_of, allow_future)
    cat = open_catalog(lk)
    rec = Lake(lk.root).read("reconciliation")
    if customer:
        rec = rec.filter(pl.col("customer_id") == customer)
    print_reconciliation(rec, cat)


@app.command()
def report(lake: Optional[str] = LAKE,
           invoice: Optional[str] = typer.Option(None, "--invoice", help="One invoice's page (an invoice_id)."),
           period: Optional[str] = typer.Option(None, "--period", help="A local period start date (2026-10-01) or a month (2026-10): its invoices and a summary page."),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="The folder for the pages (default: <lake>/reports/); nothing else is written.")):
    """Self-contained HTML invoices and a period summary."""
    from flows.stages.report import report_command

    lk = open_lake(lake)
    paths = report_command(lk, invoice, period, out_dir)
    for p in paths[:MAX_ROWS + 1]:  # the summary page first, then the first invoice pages
        out.print(str(p), soft_wrap=True)
    if len(paths) > MAX_ROWS + 1:
        out.print(f"… and {len(paths) - MAX_ROWS - 1:,} more invoice pages in {paths[0].parent}", soft_wrap=True)


@app.command()
def serve(lake: Optional[str] = LAKE,
          no_schedules: bool = typer.Option(False, "--no-schedules", help="Register the deployments without their schedules (runs only on demand)."),
          limit: int = typer.Option(1, "--limit", min=1, help="Flow runs at a time (they write the same lake).")):
    """Serve the scheduled deployments (hourly ingest and metering, daily alerts, period close) on a Prefect server."""

    lk = open_lake(lake)
    open_catalog(lk)
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    if not api:
        raise UsageError("serve: no Prefect server to serve to; start one (`prefect server start`) and set "
                         "PREFECT_API_URL (e.g. `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`)")
    from flows.deployments import SCHEDULES, serve_all

    root = lk.root.resolve()
    out.print(f"meterbill: serving {len(SCHEDULES)} deployments for lake {root} on {api}"
              f"{' (no schedules)' if no_schedules else ''}; Ctrl-C stops")
    serve_all(str(root), schedules=not no_schedules, limit=limit, say=lambda m: err.print(f"[dim]{m}[/dim]"))


@app.command()
@local_flows
def demo(
    lake: Optional[str] = LAKE,
    days: int = typer.Option(45, "--days", min=1, help="Days of events, ending at --as-of."),
    events_per_day: int = typer.Option(3000, "--events-per-day", min=1, help="Events per day."),
    seed: int = typer.Option(42, "--seed", help="Random seed (the same seed writes the same events)."),
    as_of: Optional[str] = AS_OF,
    allow_future: bool = ALLOW_FUTURE,
):
    """Write a sample catalogue and events into the lake, run the whole pipeline, print invoices and alerts."""
    from flows.cli.demo import run_demo

    run_demo(lake, days, events_per_day, seed, as_of, out, progress_line, allow_future=allow_future)
