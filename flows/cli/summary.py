"""What a run prints while it goes (its log lines) and after it (a few lines per stage)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from decimal import Decimal
from pathlib import Path

from rich.markup import escape

from flows.cli.shared import err, out
from flows.cli.tables import plural

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


class run_logs:
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


def when_text(iso: str) -> str:
    t = dt.datetime.fromisoformat(iso)
    return f"{t:%Y-%m-%d}" if (t.hour, t.minute, t.second) == (0, 0, 0) else f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _ingest_text(ing: dict) -> str:
    new = ing.get("files_ingested", 0) + ing.get("files_unreadable", 0)
    text = (f"{plural(new, 'new file')}"
            + (f" ({ing['files_unreadable']} unreadable)" if ing.get("files_unreadable") else "")
            + (f", {ing['files_skipped']} already ingested" if ing.get("files_skipped") else ""))
    if new:
        text += (f"; {plural(ing.get('rows_read', 0), 'row')}: {ing.get('accepted', 0):,} accepted, "
                 f"{plural(ing.get('duplicates', 0), 'duplicate')}, {ing.get('quarantined', 0):,} quarantined")
    und = ing.get("undefined") or {}
    if und.get("customers") or und.get("meters"):
        text += (f"; undefined: {len(und.get('customers') or {})} customer(s), "
                 f"{len(und.get('meters') or {})} meter(s)")
    return text


def _invoices_text(totals: list[dict]) -> str:
    if not totals:
        return "no invoices"
    by_status: dict[str, int] = {}
    due: dict[str, Decimal] = {}
    for r in totals:  # amounts are exact strings in the currency's minor units
        by_status[r["status"]] = by_status.get(r["status"], 0) + r["invoices"]
        due[r["currency"]] = due.get(r["currency"], Decimal(0)) + Decimal(r["total_due"])
    n = sum(by_status.values())
    parts = ", ".join(f"{v:,} {k}" for k, v in sorted(by_status.items(), key=lambda kv: kv[0] != "final"))
    return f"{plural(n, 'invoice')} ({parts}), total due " + ", ".join(f"{c} {v:,f}" for c, v in sorted(due.items()))


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
        rows.append(("meter", f"usage_hourly: {plural(met.get('dates_rebuilt', 0), 'date')} rebuilt, "
                     f"{plural(met.get('rows', 0), 'row')}", took("meter")))
    if "billing_steps" in rep:  # a backfill
        rows.append(("replay", f"{plural(rep['billing_steps'], 'billing step')}, "
                     f"{plural(rep['alert_steps'], 'alert step')}", took("replay")))
    bil = rep.get("bill")
    if bil:
        extra = f"; {plural(bil['unbilled_rows'], 'unbilled row')}" if bil.get("unbilled_rows") else ""
        rows.append(("bill", _invoices_text(rep.get("invoices") or []) + extra, took("bill")))
    ale = rep.get("alerts")
    if ale is not None:
        text = f"{plural(ale.get('fired', 0), 'new firing')} ({ale.get('firings_total', 0)} in all)"
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
