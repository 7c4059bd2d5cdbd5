"""A period's summary page (the invoices whose billing period starts on a local date or in a
month) with a page per final invoice, and the `meterbill report` command's choice of pages."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import polars as pl
from markupsafe import Markup

from catalog import Lake
from catalog.config import Catalog
from flows.stages.common import UsageError
from flows.stages.report.charts import bar_list
from flows.stages.report.data import ReportData
from flows.stages.report.format import day_text, period_text, invoice_filename, money, taken_off
from flows.stages.report.invoice import write_page, invoice_page, render_invoice
from flows.stages.report.templates import CSS, SUMMARY, template
from transforms.pricing.periods import with_local_days

BATCH = 5_000  # invoices whose data one `ReportData.prepare` holds in memory
WRITES_PENDING = 256  # rendered pages waiting for their file to be written
_MONTH = re.compile(r"^\d{4}-\d{2}$")


def with_local_start(inv: pl.DataFrame, cat: Catalog | None) -> pl.DataFrame:
    """Invoices with `local_start`: the local date their period starts on (customer's zone; UTC
    without a catalogue)."""
    zones = {c: cat.timezone(c) for c in inv["customer_id"].unique().to_list()} if cat is not None else {}
    return with_local_days(inv, zones).rename({"local_first": "local_start"}).drop("local_last")


def latest_final_month(inv: pl.DataFrame, cat: Catalog | None) -> str | None:
    """`2026-10`: the latest local month in which a final invoice's period starts (what
    `meterbill report` renders without arguments); None without final invoices."""
    final = inv.filter(pl.col("status") == "final")
    if final.height == 0:
        return None
    return f"{with_local_start(final, cat)['local_start'].max():%Y-%m}"


def _local_start(data: ReportData) -> pl.DataFrame:
    return with_local_start(data.invoices, data.cat)


def render_invoices(lk: Lake, invoice_ids: list[str], data: ReportData | None = None,
                    out: Path | None = None) -> list[Path]:
    """The page of each invoice in `out` (default <lake>/reports/), BATCH invoices at a time (one
    `prepare` each). Files are written on a few threads while the next pages render (creating a
    file waits on the disk, not the CPU); at most WRITES_PENDING pages wait in memory, and any
    write error is raised here."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    data = data or ReportData.load(lk)
    out = out or lk.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="report-write") as pool:
        for k in range(0, len(invoice_ids), BATCH):
            chunk = list(invoice_ids[k:k + BATCH])
            data.prepare(chunk)
            for i in chunk:
                path = out / invoice_filename(i)
                pending.append(pool.submit(write_page, path, invoice_page(data, i)))
                paths.append(path)
                while len(pending) > WRITES_PENDING:
                    pending.popleft().result()
        while pending:
            pending.popleft().result()
    return paths


def _select_period(data: ReportData, period: str | dt.date) -> tuple[str, str, pl.DataFrame]:
    """(file label, title, invoices) of `2026-10-01` (a local start date) or `2026-10` (a month)."""
    inv = _local_start(data)
    if isinstance(period, dt.date):
        period = period.isoformat()
    text = str(period).strip()
    if _MONTH.match(text):
        try:
            first = dt.date.fromisoformat(text + "-01")
        except ValueError:
            raise UsageError(f"--period: {period!r} is not a month (e.g. 2026-10) or a date (e.g. 2026-10-01)") from None
        nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        sel = inv.filter((pl.col("local_start") >= first) & (pl.col("local_start") < nxt))
        return text, f"Billing periods starting in {first:%B %Y}", sel
    try:
        day = dt.date.fromisoformat(text[:10]) if len(text) >= 10 else None
    except ValueError:
        day = None
    if day is None:
        raise UsageError(f"--period: {period!r} is not a month (e.g. 2026-10) or a date (e.g. 2026-10-01)")
    sel = inv.filter(pl.col("local_start") == day)
    return day.isoformat(), f"Billing periods starting {day_text(day)}", sel


def render_period(lk: Lake, period: str | dt.date, data: ReportData | None = None, out: Path | None = None) -> list[Path]:
    """The summary page of a period (a local start date or a month) and a page per final invoice,
    in `out` (default <lake>/reports/)."""
    data = data or ReportData.load(lk)
    label, title, inv = _select_period(data, period)
    if inv.height == 0:
        raise UsageError(f"--period: no invoice's billing period starts {'in' if _MONTH.match(label) else 'on'} {label}")
    inv = inv.sort("customer_id", "period_start")
    paths = render_invoices(lk, inv.filter(pl.col("status") == "final")["invoice_id"].to_list(), data, out)
    rows, by_cur = [], {}
    for r in inv.iter_rows(named=True):
        minor = data.minor(r["currency"])
        cust = data.cat.customers.get(r["customer_id"])
        plan = data.cat.plans.get(r["plan_id"])
        rows.append({
            "invoice_id": r["invoice_id"], "customer_id": r["customer_id"],
            "name": cust.customer_name if cust and cust.customer_name else r["customer_id"],
            "plan": plan.name if plan and plan.name else r["plan_id"],
            "period": period_text(r["period_start"], r["period_end"], data.tz(r["customer_id"])),
            "status": r["status"], "currency": r["currency"], "subtotal": money(r["subtotal"], minor),
            "discount": taken_off(r["discount"], minor), "credits": taken_off(r["credits_applied"], minor),
            "total_due": money(r["total_due"], minor), "total_due_raw": r["total_due"],
            "href": invoice_filename(r["invoice_id"]) if r["status"] == "final" else None,
        })
        t = by_cur.setdefault(r["currency"], {"currency": r["currency"], "sum": Decimal(0), "final": 0, "draft": 0})
        t["sum"] += r["total_due"] or 0
        t["final" if r["status"] == "final" else "draft"] += 1
    currency_totals = [{**t, "total": money(t["sum"], data.minor(c))} for c, t in sorted(by_cur.items())]
    # the largest invoices, compared in their base currency where there is one
    ranked = sorted(((row["name"], float(r["total_due_base"] if r["total_due_base"] is not None else r["total_due"] or 0),
                      f"{row['currency']} {row['total_due']}")
                     for row, r in zip(rows, inv.iter_rows(named=True))), key=lambda x: -x[1])[:10]
    chart = Markup(bar_list([x for x in ranked if x[1] > 0]))
    as_of = inv["as_of"].max()
    page = template(SUMMARY).render(
        css=CSS, title=title, n=inv.height, n_final=sum(1 for x in rows if x["status"] == "final"),
        n_draft=sum(1 for x in rows if x["status"] != "final"), currency_totals=currency_totals,
        invoices=rows, chart=chart, as_of=f"{as_of:%Y-%m-%d %H:%M} UTC" if as_of else "")
    out = out or lk.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"period-{label}.html"
    write_page(path, page)
    return [path, *paths]


def report_command(lk: Lake, invoice: str | None, period: str | None, out: Path | None = None) -> list[Path]:
    """`meterbill report`: pages into `out` (default <lake>/reports/)."""
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file, not a folder")
    data = ReportData.load(lk)
    if invoice:
        return [render_invoice(lk, invoice, data, out)]
    if period:
        return render_period(lk, period, data, out)
    month = latest_final_month(data.invoices, data.cat)
    if month is None:
        raise UsageError("report: no final invoice yet (name one with --invoice, or run `meterbill bill`)")
    return render_period(lk, month, data, out)
