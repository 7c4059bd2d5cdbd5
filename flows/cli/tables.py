"""The tables the verbs print: invoices, alerts fired, reconciliation — the first MAX_ROWS rows,
totals of all of them, and how to see the rest (SPEC §8: the cost never grows with the lake)."""

from __future__ import annotations

import polars as pl
from rich.markup import escape
from rich.table import Table

from catalog.config import ISO_MINOR_UNITS
from flows.cli.shared import out
from flows.stages.common import MAX_ROWS
from transforms.pricing.periods import with_local_days


def _money(v, currency: str | None = None, cat=None) -> str:
    """An amount at its currency's minor units (the catalogue's, else ISO 4217, else 2), with separators."""
    if v is None:
        return ""
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
    out.print(f"totals of the {plural(n, 'invoice')}, per status and currency:")
    for status, cur, k, due in totals.iter_rows():
        out.print(f"  {escape(status)} {escape(cur)}: {plural(k, 'invoice')}, total due {_money(due, cur, cat)}",
                  soft_wrap=True)
    _print_rest(head.height, n, "invoices",
                'list them with meterbill sql "select * from invoices order by customer_id, period_start"; '
                "HTML pages with meterbill report --period YYYY-MM (a month's) or --invoice ID (one)")


def print_alerts(fired) -> None:
    """The first MAX_ROWS firings, the number of firings per alert, and how to see the rest."""
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
            out.print(f"  {escape(alert_id)}: {plural(k, 'firing')}", soft_wrap=True)
        if per.height > MAX_ROWS:
            out.print(f"  … and {plural(per.height - MAX_ROWS, 'more alert')}")
    _print_rest(head.height, n, "firings",
                'list them with meterbill sql "select * from alerts_fired order by window_start, alert_id, customer_id"')


def print_reconciliation(rec, cat=None) -> None:
    """Rows that do not balance first, then by customer, period and item: the first MAX_ROWS, the
    totals of every row, and how to see the rest."""
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
    out.print(f"{plural(n, 'row')}: {balanced:,} balanced, {n - balanced:,} NOT balanced; "
              f"{int(rec['events_accepted'].sum()):,} events accepted, {int(rec['events_cancelled'].sum()):,} cancelled")
    _print_rest(head.height, n, "rows",
                'one customer\'s with meterbill reconcile --customer ID; the unbalanced ones with meterbill sql '
                '"select * from reconciliation where usage_quantity <> billed_quantity + adjusted_quantity"')


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
