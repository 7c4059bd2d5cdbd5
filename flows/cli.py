"""The `meterbill` command line (SPEC §8).

Every verb that moves data runs as a Prefect flow. Errors are for people: a bad argument or a
bad catalogue prints one line per problem and exits non-zero, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

# The terminal shows meterbill's own lines; Prefect's console handler would print tracebacks of
# failed runs (they still reach the Prefect API and UI). METERBILL_DEBUG=1 keeps them on screen.
if not os.environ.get("METERBILL_DEBUG"):
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

import flows  # noqa: F401,E402  (Prefect environment first)
import typer

try:  # typer ≥ 0.20 vendors its own click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from catalog import CatalogError
from catalog.lake import WarehouseError
from flows.common import UsageError, as_of_instant, open_catalog, open_lake, parse_instant

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="meterbill: usage metering and billing as a batch analytics job.")
# Wide enough for an invoice table when the output is a file or a pipe (rich would use 80).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

LAKE = typer.Option(None, "--lake", help="The lake folder (default: $METERBILL_LAKE or data/).")
AS_OF = typer.Option(None, "--as-of", help="The run's instant, ISO-8601 or a date (default: now); "
                     "more than 5 minutes after the clock needs --allow-future.")
ALLOW_FUTURE = typer.Option(False, "--allow-future",
                            help="Accept an --as-of in the future (its final invoices cannot be taken back).")
EXECUTOR = typer.Option("local", "--executor", help="local or dask.")
WORKERS = typer.Option(None, "--workers", min=1, help="With --executor dask: start a temporary local cluster of N workers.")
DASK_ADDRESS = typer.Option(None, "--dask-address", help="With --executor dask: use an existing cluster.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meterbill")
    except PackageNotFoundError:  # pragma: no cover  (run from a source tree without installing)
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        out.print(f"meterbill {_version()}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print meterbill's version and exit.")):
    """meterbill: usage metering and billing as a batch analytics job."""


def _executor(executor: str, workers: Optional[int], address: Optional[str]) -> dict:
    if executor not in ("local", "dask"):
        raise UsageError(f"--executor: must be local or dask, got {executor!r}")
    if executor == "local" and (workers or address):
        raise UsageError("--workers and --dask-address go with --executor dask")
    return {"executor": executor, "workers": workers, "dask_address": address}


def _progress(line: str) -> None:
    err.print(f"[dim]{line}[/dim]")


def _money(v, currency: str | None = None, cat=None) -> str:
    """An amount at its currency's minor units (the catalogue's, else ISO 4217, else 2), with separators."""
    if v is None:
        return ""
    from catalog.config import ISO_MINOR_UNITS

    if cat is not None and currency in cat.currencies:
        places = cat.currencies[currency].minor_units
    else:
        places = ISO_MINOR_UNITS.get(currency or "", 2)
    return f"{v:,.{places}f}"


def _num(v) -> str:
    """A quantity without trailing zeros or exponent notation."""
    return "" if v is None else f"{v.normalize():f}" if hasattr(v, "normalize") else str(v)



def _local_periods(df, cat, start: str = "period_start", end: str = "period_end") -> list[str]:
    """Each row's period as the customer's first and last local day (the HTML pages' rule)."""
    from transforms.pricing.periods import with_local_days

    zones = {c: cat.timezone(c) for c in set(df["customer_id"].to_list())} if cat is not None else {}
    days = with_local_days(df.select("customer_id", start, end), zones, start, end)
    return [f"{a} → {b}" for a, b in days.select("local_first", "local_last").iter_rows()]


def _print_rest(shown: int, total: int, what: str, how: str) -> None:
    """The line under a table cut at MAX_ROWS: how many rows are not shown and how to see them."""
    if total > shown:
        out.print(f"… {total - shown:,} more {what} not shown: {escape(how)}", soft_wrap=True)


def print_invoices(invoices, title: str = "Invoices", cat=None) -> None:
    """The first MAX_ROWS invoices, the totals of all of them per status and currency, and how to
    see the rest (its cost does not grow with the number of invoices)."""
    import polars as pl

    from flows.common import MAX_ROWS

    n = invoices.height
    head = invoices.head(MAX_ROWS)
    t = Table(title=title if n <= MAX_ROWS else f"{title}: the first {MAX_ROWS} of {n:,}")
    for c in ("customer", "plan", "period", "status", "subtotal", "discount", "credits", "total due", "currency"):
        t.add_column(c, justify="right" if c in ("subtotal", "discount", "credits", "total due") else "left")
    for r, period in zip(head.iter_rows(named=True), _local_periods(head, cat)):
        t.add_row(r["customer_id"], r["plan_id"], period, r["status"],
                  *(_money(r[k], r["currency"], cat) for k in ("subtotal", "discount", "credits_applied", "total_due")),
                  r["currency"])
    out.print(t)
    if n == 0:
        return
    totals = (invoices.group_by("status", "currency").agg(pl.len().alias("n"), pl.col("total_due").sum())
              .sort(pl.col("status") != "final", "status", "currency"))
    out.print(f"totals of the {_plural(n, 'invoice')}, per status and currency:")
    for status, cur, k, due in totals.iter_rows():
        out.print(f"  {escape(status)} {escape(cur)}: {_plural(k, 'invoice')}, total due {_money(due, cur, cat)}",
                  soft_wrap=True)
    _print_rest(head.height, n, "invoices",
                'list them with meterbill sql "select * from invoices order by customer_id, period_start"; '
                "HTML pages with meterbill report --period YYYY-MM (a month's) or --invoice ID (one)")


def print_alerts(fired) -> None:
    """The first MAX_ROWS firings, the number of firings per alert, and how to see the rest."""
    import polars as pl

    from flows.common import MAX_ROWS

    n = fired.height
    head = fired.head(MAX_ROWS)
    t = Table(title="Alerts fired" if n <= MAX_ROWS else f"Alerts fired: the first {MAX_ROWS} of {n:,}")
    for c in ("alert", "customer", "window start", "value", "threshold", "message"):
        t.add_column(c)
    for r in head.iter_rows(named=True):
        t.add_row(r["alert_id"], r["customer_id"], f"{r['window_start']:%Y-%m-%d %H:%M}",
                  _num(r["current_value"]), _num(r["threshold"]), r["message"])
    out.print(t)
    if n > MAX_ROWS:
        per = fired.group_by("alert_id").len().sort("len", "alert_id", descending=[True, False])
        for alert_id, k in per.head(MAX_ROWS).iter_rows():
            out.print(f"  {escape(alert_id)}: {_plural(k, 'firing')}", soft_wrap=True)
        if per.height > MAX_ROWS:
            out.print(f"  … and {_plural(per.height - MAX_ROWS, 'more alert')}")
    _print_rest(head.height, n, "firings",
                'list them with meterbill sql "select * from alerts_fired order by window_start, alert_id, customer_id"')


def print_reconciliation(rec, cat=None) -> None:
    """Rows that do not balance first, then by customer, period and item: the first MAX_ROWS, the
    totals of every row, and how to see the rest."""
    import polars as pl

    from flows.common import MAX_ROWS

    ok = pl.col("usage_quantity") == pl.col("billed_quantity") + pl.col("adjusted_quantity")
    rec = rec.with_columns(ok.fill_null(False).alias("_ok"))
    n = rec.height
    head = rec.sort("_ok", "customer_id", "period_start", "product_item_id", nulls_last=True).head(MAX_ROWS)
    t = Table(title="Reconciliation" if n <= MAX_ROWS else f"Reconciliation: the first {MAX_ROWS} of {n:,}")
    for c in ("customer", "period", "item", "events", "cancelled", "usage", "billed", "adjusted", "balanced"):
        t.add_column(c)
    for r, period in zip(head.iter_rows(named=True), _local_periods(head, cat)):
        t.add_row(r["customer_id"], period, r["product_item_id"] or "",
                  str(r["events_accepted"]), str(r["events_cancelled"]), _num(r["usage_quantity"]),
                  _num(r["billed_quantity"]), _num(r["adjusted_quantity"]), "yes" if r["_ok"] else "NO")
    out.print(t)
    if n == 0:
        return
    balanced = int(rec["_ok"].sum())
    out.print(f"{_plural(n, 'row')}: {balanced:,} balanced, {n - balanced:,} NOT balanced; "
              f"{int(rec['events_accepted'].sum()):,} events accepted, {int(rec['events_cancelled'].sum()):,} cancelled")
    _print_rest(head.height, n, "rows",
                'one customer\'s with meterbill reconcile --customer ID; the unbalanced ones with meterbill sql '
                '"select * from reconciliation where usage_quantity <> billed_quantity + adjusted_quantity"')


# ------------------------------------------------------------------ run logs and summaries

class _RunLogLines(logging.Handler):
    """meterbill's own run-log lines (INFO and up, not Prefect's engine chatter) as dim progress lines."""

    def __init__(self) -> None:
        import prefect

        super().__init__(level=logging.INFO)
        self.prefect_dir = str(Path(prefect.__file__).resolve().parent)
        self.t0 = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        if record.pathname.startswith(self.prefect_dir):
            return
        try:
            msg = " ".join(record.getMessage().split())
        except Exception:  # noqa: BLE001
            return
        secs = time.monotonic() - self.t0
        style = "red" if record.levelno >= 40 else "yellow" if record.levelno >= 30 else "dim"
        err.print(f"[{style}]{secs:6.1f}s  {escape(msg)}[/{style}]")


class _run_logs:
    """Show the flows' log lines on stderr while a run goes (Prefect's own console stays quiet).

    Run loggers are set to INFO, so the same lines also reach the Prefect API (the run's logs).
    """

    NAMES = ("prefect.flow_runs", "prefect.task_runs")

    def __enter__(self):
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            err.print("[dim]starting a local Prefect API for this run (10-20 s; set PREFECT_API_URL to use a server)[/dim]")
        self.handler = _RunLogLines()
        self.saved = []
        for name in self.NAMES:
            lg = logging.getLogger(name)
            self.saved.append((lg, lg.level))
            lg.setLevel(logging.INFO)
            lg.addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        for lg, level in self.saved:
            lg.removeHandler(self.handler)
            lg.setLevel(level)


def _when(iso: str) -> str:
    t = dt.datetime.fromisoformat(iso)
    return f"{t:%Y-%m-%d}" if (t.hour, t.minute, t.second) == (0, 0, 0) else f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _ingest_text(ing: dict) -> str:
    new = ing.get("files_ingested", 0) + ing.get("files_unreadable", 0)
    text = (f"{_plural(new, 'new file')}"
            + (f" ({ing['files_unreadable']} unreadable)" if ing.get("files_unreadable") else "")
            + (f", {ing['files_skipped']} already ingested" if ing.get("files_skipped") else ""))
    if new:
        text += (f"; {_plural(ing.get('rows_read', 0), 'row')}: {ing.get('accepted', 0):,} accepted, "
                 f"{_plural(ing.get('duplicates', 0), 'duplicate')}, {ing.get('quarantined', 0):,} quarantined")
    und = ing.get("undefined") or {}
    if und.get("customers") or und.get("meters"):
        text += (f"; undefined: {len(und.get('customers') or {})} customer(s), "
                 f"{len(und.get('meters') or {})} meter(s)")
    return text


def _invoices_text(totals: list[dict]) -> str:
    if not totals:
        return "no invoices"
    from decimal import Decimal

    by_status: dict[str, int] = {}
    due: dict[str, Decimal] = {}
    for r in totals:  # amounts are exact strings in the currency's minor units
        by_status[r["status"]] = by_status.get(r["status"], 0) + r["invoices"]
        due[r["currency"]] = due.get(r["currency"], Decimal(0)) + Decimal(r["total_due"])
    n = sum(by_status.values())
    parts = ", ".join(f"{v:,} {k}" for k, v in sorted(by_status.items(), key=lambda kv: kv[0] != "final"))
    return f"{_plural(n, 'invoice')} ({parts}), total due " + ", ".join(f"{c} {v:,f}" for c, v in sorted(due.items()))


def print_run_summary(title: str, rep: dict) -> None:
    """A few readable lines (never wrapped): what each stage did, how long it took, where the report is."""
    secs = rep.get("timings") or {}
    rows: list[tuple[str, str, str]] = []

    def took(stage: str) -> str:
        return f"{secs[stage]:.1f}s" if stage in secs else ""

    if rep.get("ingest") is not None:
        rows.append(("ingest", _ingest_text(rep["ingest"]), took("ingest")))
    met = rep.get("meter")
    if met is not None:
        rows.append(("meter", f"usage_hourly: {_plural(met.get('dates_rebuilt', 0), 'date')} rebuilt, "
                     f"{_plural(met.get('rows', 0), 'row')}", took("meter")))
    if "billing_steps" in rep:  # a backfill
        rows.append(("replay", f"{_plural(rep['billing_steps'], 'billing step')}, "
                     f"{_plural(rep['alert_steps'], 'alert step')}", took("replay")))
    bil = rep.get("bill")
    if bil:
        extra = f"; {_plural(bil['unbilled_rows'], 'unbilled row')}" if bil.get("unbilled_rows") else ""
        rows.append(("bill", _invoices_text(rep.get("invoices") or []) + extra, took("bill")))
    ale = rep.get("alerts")
    if ale is not None:
        text = f"{_plural(ale.get('fired', 0), 'new firing')} ({ale.get('firings_total', 0)} in all)"
        if ale.get("delivered") or ale.get("failed"):
            text += f"; {ale.get('delivered', 0)} delivered, {ale.get('failed', 0)} failed"
        rows.append(("alerts", text, took("alerts")))
    out.print(f"[bold]{escape(title)}[/bold]  [dim]lake {escape(str(rep.get('lake', '')))} · "
              f"{sum(secs.values()):.1f}s[/dim]", soft_wrap=True)
    for stage, text, t in rows:
        out.print(f"[bold]{stage:<7}[/bold] {escape(text)}" + (f"  [dim]{t}[/dim]" if t else ""), soft_wrap=True)
    key = "backfill-report" if "billing_steps" in rep else "run-report"
    where = f"{escape(rep['report'])} (also the Prefect artifact {key!r})" if rep.get("report") else f"the Prefect artifact {key!r}"
    out.print(f"[dim]report: {where}[/dim]", soft_wrap=True)


# ------------------------------------------------------------------ verbs


def _local_flows(fn):
    """A verb that runs flows, on the local Prefect API as flows/common.py `local_engine` sets it up
    (no heartbeats, task runs recorded in batches). Applied per verb so that `--help` and the table
    verbs never import Prefect."""
    @functools.wraps(fn)
    def verb(*args, **kwargs):
        from flows.common import local_engine

        with local_engine():
            return fn(*args, **kwargs)

    return verb


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
    from flows.generate import generate as gen
    first = parse_instant(start, "--start").date() if start else dt.date.today() - dt.timedelta(days=days)
    ids = sorted(cat.customers)[:customers] if customers else None
    g = gen(cat, lk.raw_dir, first, days, events_per_day, seed, messy, ids, progress=_progress)
    out.print(f"wrote {g.rows} rows in {len(g.files)} files under {lk.raw_dir}: {g.events} events"
              + (f", defects {g.defects}, duplicates {g.duplicates}" if messy else ""))


@app.command()
@_local_flows
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
    from flows.ingest import ingest_flow, requeue_reasons
    reasons = requeue_reasons(requeue)
    rep = ingest_flow(lake=str(lk.root), as_of=t.isoformat(), max_event_age_days=max_event_age_days,
                      allow_future=allow_future, requeue=reasons)
    out.print(_summary_line("ingest", rep))


def _summary_line(verb: str, rep) -> str:
    if isinstance(rep, dict):
        return f"{verb}: " + ", ".join(f"{k} {v}" for k, v in rep.items() if not isinstance(v, (list, dict)))
    return f"{verb}: {rep}"


@app.command()
@_local_flows
def meter(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE, executor: str = EXECUTOR,
          workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """Events -> usage_hourly (only the hours that changed)."""

    lk = open_lake(lake)
    open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    from flows.meter import meter_flow
    rep = meter_flow(lake=str(lk.root), as_of=t.isoformat(), allow_future=allow_future,
                     **_executor(executor, workers, dask_address))
    out.print(_summary_line("meter", rep))


@app.command()
@_local_flows
def bill(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE, executor: str = EXECUTOR,
         workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """Usage -> line_items, invoices, credit_ledger, unbilled_usage."""

    lk = open_lake(lake)
    cat = open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    from catalog import Lake
    from flows.bill import bill_flow
    rep = bill_flow(lake=str(lk.root), as_of=t.isoformat(), allow_future=allow_future,
                    **_executor(executor, workers, dask_address))
    out.print(_summary_line("bill", rep))
    print_invoices(_latest_invoices(Lake(lk.root)), title="Invoices (each customer's latest period)", cat=cat)


def _latest_invoices(lk):
    import polars as pl

    inv = lk.read("invoices")
    if inv.height == 0:
        return inv
    last = inv.group_by("customer_id").agg(pl.col("period_start").max())
    return inv.join(last, on=["customer_id", "period_start"]).sort("customer_id")


@app.command()
@_local_flows
def alerts(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE,
           no_deliver: bool = typer.Option(False, "--no-deliver", help="Only record firings."),
           executor: str = EXECUTOR, workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """-> alerts_fired, deliveries."""

    lk = open_lake(lake)
    open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    from flows.alerts import alerts_flow
    rep = alerts_flow(lake=str(lk.root), as_of=t.isoformat(), deliver=not no_deliver, allow_future=allow_future,
                      **_executor(executor, workers, dask_address))
    out.print(_summary_line("alerts", rep))


@app.command()
@_local_flows
def run(lake: Optional[str] = LAKE, as_of: Optional[str] = AS_OF, allow_future: bool = ALLOW_FUTURE,
        no_deliver: bool = typer.Option(False, "--no-deliver", help="Only record alert firings."),
        executor: str = EXECUTOR, workers: Optional[int] = WORKERS, dask_address: Optional[str] = DASK_ADDRESS):
    """ingest -> meter -> bill -> alerts."""

    lk = open_lake(lake)
    open_catalog(lk)
    t = as_of_instant(as_of, allow_future)  # a bad --as-of fails before anything is imported or read
    ex = _executor(executor, workers, dask_address)
    from flows.run import run_flow
    with _run_logs():
        rep = run_flow(lake=str(lk.root), as_of=t.isoformat(), deliver=not no_deliver, allow_future=allow_future, **ex)
    print_run_summary(f"run as of {_when(rep['as_of'])}", rep)


@app.command()
@_local_flows
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
    start, end = parse_instant(from_, "--from"), parse_instant(to, "--to")
    if end <= start:
        raise UsageError("--to: must be after --from")
    if end > dt.datetime.now(dt.timezone.utc):
        raise UsageError(f"--to: {to} is in the future; a backfill re-runs a past range (`meterbill run` runs as of now)")
    ex = _executor(executor, workers, dask_address)
    import flows.backfill as bf
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as bar, _run_logs():
        task = bar.add_task("backfill: starting", total=None)

        def hook(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total or None, description=label)

        bf.PROGRESS_HOOK = hook
        try:
            rep = bf.backfill_flow(start=start.isoformat(), end=end.isoformat(), lake=str(lk.root),
                                   deliver=not no_deliver, **ex)
        finally:
            bf.PROGRESS_HOOK = None
    print_run_summary(f"backfill {_when(rep['start'])} → {_when(rep['end'])}", rep)


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
    from flows.usage import usage_report

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
    from flows.sql import run_sql

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
    from flows.report import report_command

    from flows.common import MAX_ROWS

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
@_local_flows
def demo(
    lake: Optional[str] = LAKE,
    days: int = typer.Option(45, "--days", min=1, help="Days of events, ending at --as-of."),
    events_per_day: int = typer.Option(3000, "--events-per-day", min=1, help="Events per day."),
    seed: int = typer.Option(42, "--seed", help="Random seed (the same seed writes the same events)."),
    as_of: Optional[str] = AS_OF,
    allow_future: bool = ALLOW_FUTURE,
):
    """Write a sample catalogue and events into the lake, run the whole pipeline, print invoices and alerts."""
    from flows.demo import run_demo

    run_demo(lake, days, events_per_day, seed, as_of, out, _progress, allow_future=allow_future)


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> int:
    cmd = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    verb = next((a for a in args if not a.startswith("-")), "")
    try:
        cmd.main(args=args, prog_name="meterbill", standalone_mode=False)
        from catalog.lake import push_remote_lakes

        push_remote_lakes()  # an s3:// lake: upload what the command wrote (nothing if it failed)
    except click_exc.NoArgsIsHelpError as e:  # plain `meterbill`: help, exit 0
        out.print(e.ctx.get_help())
        return 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err.print("meterbill: aborted")
        return 130
    except click_exc.UsageError as e:
        err.print(f"meterbill {verb}: error: {' '.join(e.format_message().split())}".replace("  ", " "))
        return 2
    except UsageError as e:
        err.print(f"meterbill {verb}: error: {e}")
        return 2
    except CatalogError as e:
        for p in e.problems:
            err.print(p)
        err.print(f"meterbill {verb}: the catalogue has {len(e.problems)} problem(s); nothing was written")
        return 1
    except KeyboardInterrupt:
        err.print("meterbill: interrupted")
        return 130
    except WarehouseError as e:  # a warehouse folder or file: the message names it and what to do
        err.print(f"meterbill {verb}: error: {e}")
        return 1
    except Exception as e:  # a failure, not a bug report: one line; METERBILL_DEBUG=1 shows the traceback
        if os.environ.get("METERBILL_DEBUG"):
            raise
        err.print(f"meterbill {verb}: failed: {type(e).__name__}: {' '.join(str(e).split())[:500]}")
        return 1
    finally:
        from catalog.lake import forget_remote_lakes

        forget_remote_lakes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
