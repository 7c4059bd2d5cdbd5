"""What a run reports, as text and rows: a markdown run report and a table of invoices (published
as Prefect artifacts by flows/artifacts.py).

- `run-report` (markdown, by `meterbill run`; `backfill-report` by `meterbill backfill`): the
  files of this run with rows read / accepted / duplicated / quarantined, quarantine reasons,
  usage dates rebuilt, invoices by status and currency with their totals, the alerts fired, and
  how to make the HTML pages (`meterbill report`, on demand: a run renders none).
- `invoices` (table, by every bill step): the latest invoices, newest period first.

Both stay small at any number of customers (SPEC §8): every table shows its first MAX_ROWS rows,
its totals, and how to see the rest (`meterbill sql`, `meterbill report`).

The command line and tests use the same functions without a Prefect run.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl

from catalog import Lake
from flows.stages.common import MAX_ROWS
from flows.stages.report import latest_final_month


def _s(v) -> str:
    return "" if v is None else str(v)


def _md(v) -> str:
    return _s(v).replace("|", "\\|").replace("\n", " ")


def _n(v) -> str:
    return f"{int(v):,}" if v is not None else "0"


def money(v, minor: int | None) -> str:
    """An exact amount shown with its currency's minor units (amounts are rounded to them already;
    anything finer is shown in full, never rounded away)."""
    if v is None:
        return ""
    if not isinstance(v, Decimal) or minor is None:
        return str(v)
    q = v.quantize(Decimal(1).scaleb(-minor)) if minor > 0 else v.quantize(Decimal(1))
    return f"{q:f}" if q == v else f"{v.normalize():f}"


def _catalog(lk: Lake):
    """The lake's catalogue, or None if it cannot be read (a report never fails on formatting)."""
    try:
        from catalog import load_catalog

        return load_catalog(lk.catalog_dir)
    except Exception:  # noqa: BLE001
        return None


def _minor_units(lk: Lake, cat=None):
    """currency code -> minor units, from the catalogue (ISO 4217 or custom); None if unknown."""
    cat = cat or _catalog(lk)
    if cat is None:
        return lambda code: None

    def minor(code: str):
        try:
            return cat.minor_units(code)
        except Exception:  # noqa: BLE001
            return None

    return minor


def invoice_totals(lk: Lake, inv: pl.DataFrame | None = None, cat=None) -> list[dict]:
    """Invoices by status and currency: count, and sums of subtotal, discount, credits and total due
    as exact strings in the currency's minor units."""
    inv = lk.read("invoices") if inv is None else inv
    if inv.height == 0:
        return []
    minor = _minor_units(lk, cat)
    agg = (inv.group_by("status", "currency")
           .agg(pl.len().alias("invoices"), pl.col("subtotal").sum(), pl.col("discount").sum(),
                pl.col("credits_applied").sum(), pl.col("total_due").sum())
           .sort("status", "currency"))
    rows = agg.to_dicts()
    for r in rows:
        m = minor(r["currency"])
        for k in ("subtotal", "discount", "credits_applied", "total_due"):
            r[k] = money(r[k], m)
    return rows


def invoice_rows(lk: Lake, limit: int = MAX_ROWS, inv: pl.DataFrame | None = None, cat=None) -> list[dict]:
    """The rows of the `invoices` table artifact: newest periods first, then by customer; `period`
    is the customer's first and last local day (the rule of the terminal and the HTML pages)."""
    from transforms.pricing.periods import with_local_days

    inv = lk.read("invoices") if inv is None else inv
    cat = cat or _catalog(lk)
    head = inv.sort(["period_start", "customer_id", "plan_id"], descending=[True, False, False]).head(limit)
    zones = {c: cat.timezone(c) for c in set(head["customer_id"].to_list())} if cat is not None else {}
    head = with_local_days(head, zones)
    minor = _minor_units(lk, cat)
    return [
        {"invoice_id": r["invoice_id"], "customer": r["customer_id"], "plan": r["plan_id"],
         "period": f"{r['local_first']} → {r['local_last']}",
         "period_start": f"{r['period_start']:%Y-%m-%d %H:%M}", "period_end": f"{r['period_end']:%Y-%m-%d %H:%M}",
         "status": r["status"], "subtotal": money(r["subtotal"], m), "discount": money(r["discount"], m),
         "credits": money(r["credits_applied"], m), "total_due": money(r["total_due"], m), "currency": r["currency"]}
        for r in head.iter_rows(named=True) for m in [minor(r["currency"])]
    ]


def invoices_table(lk: Lake) -> tuple[list[dict], str]:
    """The `invoices` table artifact: its first MAX_ROWS rows, and a description with the totals
    per status and currency and how to see the rest."""
    inv = lk.read("invoices")
    cat = _catalog(lk)
    rows = invoice_rows(lk, MAX_ROWS, inv, cat)
    totals = "; ".join(f"{r['status']} {r['currency']}: {r['invoices']:,} invoices, total due {r['total_due']}"
                       for r in invoice_totals(lk, inv, cat))
    text = f"The latest {len(rows)} of {inv.height:,} invoices, newest period first"
    if totals:
        text += f". Totals: {totals}"
    if inv.height > len(rows):
        text += ('. The rest: meterbill sql "select * from invoices order by period_start desc, customer_id"; '
                 "HTML pages: meterbill report --period YYYY-MM")
    return rows, text


def _ingest_section(lk: Lake, ingest: dict | None) -> list[str]:
    md = ["## Ingestion", ""]
    files = [f for f in (ingest or {}).get("files", []) if f.get("status") != "skipped"]
    skipped = sum(1 for f in (ingest or {}).get("files", []) if f.get("status") == "skipped")
    if ingest is not None:
        md += [f"{len(files)} new file(s) in this run" + (f", {skipped} already ingested (skipped)" if skipped else "")
               + ".", ""]
    if files:
        md += ["| file | status | rows read | accepted | duplicates | quarantined |", "|---|---|---:|---:|---:|---:|"]
        for f in files[:MAX_ROWS]:
            status = f["status"] + (f": {_md(f.get('error'))}" if f.get("error") else "")
            md.append(f"| {_md(f['source_file'])} | {status} | {_n(f['rows_read'])} | {_n(f['accepted'])} | "
                      f"{_n(f['duplicates'])} | {_n(f['quarantined'])} |")
        if len(files) > MAX_ROWS:
            md.append(f"| … {len(files) - MAX_ROWS:,} more files: `meterbill sql \"select * from ingest_files\"` | | | | | |")
        md.append(f"| **this run** | | **{_n(ingest.get('rows_read'))}** | **{_n(ingest.get('accepted'))}** | "
                  f"**{_n(ingest.get('duplicates'))}** | **{_n(ingest.get('quarantined'))}** |")
        md.append("")
        reasons = ingest.get("quarantine_by_reason") or {}
        if reasons:
            md += ["Quarantined in this run, by reason: " + ", ".join(f"`{r}` {n}" for r, n in sorted(reasons.items())), ""]
        und = ingest.get("undefined") or {}
        for what in ("customers", "meters"):
            if und.get(what):
                top = sorted(und[what].items(), key=lambda kv: (-kv[1], kv[0]))
                md += [f"Accepted events of {len(top):,} undefined {what} (not billed until the catalogue defines them): "
                       + ", ".join(f"`{_md(k)}` {v}" for k, v in top[:MAX_ROWS])
                       + (f" and {len(top) - MAX_ROWS:,} more" if len(top) > MAX_ROWS else ""), ""]
    all_files = lk.read("ingest_files")
    md += [f"In the lake: {all_files.height:,} file(s), {_n(all_files['rows_read'].sum())} rows read, "
           f"{_n(all_files['accepted'].sum())} accepted, {_n(all_files['duplicates'].sum())} duplicates, "
           f"{_n(all_files['quarantined'].sum())} quarantined.", ""]
    return md


def _invoice_section(lk: Lake, bill: dict | None) -> list[str]:
    md = ["## Invoices", ""]
    inv = lk.read("invoices")
    cat = _catalog(lk)
    totals = invoice_totals(lk, inv, cat)
    if not totals:
        return md + ["No invoices yet.", ""]
    if bill:
        md += [f"This run priced {bill.get('invoices', 0):,} invoice(s) with {bill.get('line_items', 0):,} line items"
               + (f"; {bill['unbilled_rows']:,} row(s) of unbilled usage" if bill.get("unbilled_rows") else "") + ".", ""]
    md += ["| status | currency | invoices | subtotal | discount | credits | total due |",
           "|---|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['status']} | {r['currency']} | {r['invoices']:,} | {r['subtotal']} | {r['discount']} | "
           f"{r['credits_applied']} | {r['total_due']} |" for r in totals]
    md.append("")
    month = latest_final_month(inv, cat)
    md += ["Every invoice: `meterbill sql \"select * from invoices order by customer_id, period_start\"`. "
           "HTML pages are made on demand, not by the run: "
           + (f"`meterbill report --period {month}` (the summary of the latest month with a final invoice, "
              "and a page per final invoice of it), " if month else "")
           + "`meterbill report --invoice ID` (one invoice).", ""]
    return md


def _alerts_section(lk: Lake, alerts: dict | None, fired_from: dt.datetime, fired_to: dt.datetime) -> list[str]:
    fired = lk.read("alerts_fired")
    recent = fired.filter((pl.col("fired_at") >= fired_from) & (pl.col("fired_at") <= fired_to)).sort(
        "fired_at", "alert_id", "customer_id", "window_start")
    new = (alerts or {}).get("fired")
    md = ["## Alerts", "",
          (f"{new:,} new firing(s) in this run; " if new is not None else "")
          + f"{recent.height:,} firing(s) as of this run's instants, {fired.height:,} in all.", ""]
    if (alerts or {}).get("delivered") or (alerts or {}).get("failed"):
        md += [f"Deliveries: {alerts.get('delivered', 0)} delivered, {alerts.get('failed', 0)} failed.", ""]
    if recent.height:
        md += ["| alert | customer | window start | value | threshold | message |", "|---|---|---|---:|---:|---|"]
        for r in recent.head(MAX_ROWS).iter_rows(named=True):
            md.append(f"| {_md(r['alert_id'])} | {_md(r['customer_id'])} | {r['window_start']:%Y-%m-%d %H:%M} | "
                      f"{_dec(r['current_value'])} | {_dec(r['threshold'])} | {_md(r['message'])} |")
        if recent.height > MAX_ROWS:
            md.append(f"| … {recent.height - MAX_ROWS:,} more: `meterbill sql \"select * from alerts_fired\"` | | | | | |")
        md.append("")
    return md


def _dec(v) -> str:
    if isinstance(v, Decimal):
        v = v.normalize()
        return f"{v:f}"
    return _s(v)


def run_report_markdown(lk: Lake, as_of: str, ingest: dict | None = None, meter: dict | None = None,
                        bill: dict | None = None, alerts: dict | None = None, *, title: str | None = None,
                        fired_from: str | None = None, timings: dict | None = None) -> str:
    """The run report: files and rows, usage, invoices by status and total, alerts fired.

    `ingest`, `meter`, `bill`, `alerts` are the stage flows' summaries (None: the stage did not
    run); firings listed are those with `fired_at` in [fired_from (default as_of), as_of].
    """
    t = dt.datetime.fromisoformat(as_of)
    f0 = dt.datetime.fromisoformat(fired_from) if fired_from else t
    md = [f"# {title or 'meterbill run'}", "", f"As of `{as_of}` · lake `{lk.root}`", ""]
    if timings:
        md += ["| stage | seconds |", "|---|---:|"] + [f"| {k} | {v:.1f} |" for k, v in timings.items()] + [""]
    md += _ingest_section(lk, ingest)
    if meter is not None:
        md += ["## Usage", "", f"usage_hourly: {meter.get('dates_rebuilt', 0)} date(s) rebuilt, "
               f"{meter.get('rows', 0):,} row(s) written" + (" (full rebuild)" if meter.get("full") else "") + ".", ""]
    md += _invoice_section(lk, bill)
    md += _alerts_section(lk, alerts, f0, t)
    return "\n".join(md)


def report_file(lk: Lake, key: str) -> Path:
    """Where the report `key` (run-report, backfill-report) is written as a file: <lake>/reports/<key>.md."""
    return lk.reports_dir / f"{key}.md"


def write_report_file(lk: Lake, key: str, text: str) -> Path:
    """The report `key` as its file (written then renamed)."""
    path = report_file(lk, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def failure_markdown(title: str, stage: str, error: BaseException) -> str:
    """A short report of a failed run: which stage, what error."""
    msg = " ".join(str(error).split())[:500]
    return "\n".join([
        f"# {title}: failed", "", f"Stage **{stage}** raised `{type(error).__name__}`: {_md(msg)}", "",
        "Stages after it did not run; what earlier stages wrote stays (every stage is idempotent, "
        "re-run when the cause is fixed)."])
