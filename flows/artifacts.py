"""Prefect artifacts a person would open: a markdown run report and a table of invoices."""

from __future__ import annotations

import polars as pl
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from catalog import Lake


def _s(v) -> str:
    return "" if v is None else str(v)


def invoices_artifact(lk: Lake, limit: int = 500) -> None:
    inv = lk.read("invoices").sort("period_start", "customer_id", descending=[True, False]).head(limit)
    rows = [
        {"customer": r["customer_id"], "plan": r["plan_id"], "period": f"{r['period_start']:%Y-%m-%d}",
         "status": r["status"], "subtotal": _s(r["subtotal"]), "discount": _s(r["discount"]),
         "credits": _s(r["credits_applied"]), "total_due": _s(r["total_due"]), "currency": r["currency"]}
        for r in inv.iter_rows(named=True)
    ]
    create_table_artifact(key="invoices", table=rows or [{"customer": "(none)"}],
                          description=f"Latest {len(rows)} invoices")


def run_report_artifact(lk: Lake, as_of: str, ingest: dict | None, bill: dict | None, alerts: dict | None) -> str:
    md = [f"# meterbill run at {as_of}", ""]
    files = lk.read("ingest_files")
    md += ["## Ingestion", "", "| files | rows read | accepted | duplicates | quarantined |", "|---|---|---|---|---|",
           f"| {files.height} | {files['rows_read'].sum()} | {files['accepted'].sum()} | "
           f"{files['duplicates'].sum()} | {files['quarantined'].sum()} |", ""]
    q = lk.read("quarantine")
    if q.height:
        md += ["Quarantine by reason:", ""] + [f"- `{r}`: {n}" for r, n in
                                               q.group_by("reason").len().sort("reason").iter_rows()] + [""]
    if ingest and ingest.get("undefined"):
        md += ["Undefined (accepted, not billed until the catalogue defines them):", ""]
        md += [f"- {k}: {v}" for k, v in ingest["undefined"].items()] + [""]
    inv = lk.read("invoices")
    if inv.height:
        agg = inv.group_by("status", "currency").agg(pl.len().alias("n"), pl.col("total_due").sum().alias("total"))
        md += ["## Invoices", "", "| status | currency | invoices | total due |", "|---|---|---|---|"]
        md += [f"| {s} | {c} | {n} | {t} |" for s, c, n, t in agg.sort("status", "currency").iter_rows()] + [""]
    fired = lk.read("alerts_fired")
    md += ["## Alerts", "", f"{fired.height} firings in all"
           + (f", {alerts.get('fired', 0)} new in this run" if alerts else ""), ""]
    reports = lk.reports_dir
    if reports.is_dir() and any(reports.glob("*.html")):
        md += ["## Reports", ""] + [f"- [{p.name}]({p.resolve().as_uri()})" for p in sorted(reports.glob("*.html"))[:50]]
    text = "\n".join(md)
    create_markdown_artifact(key="run-report", markdown=text, description="meterbill run report")
    return text
