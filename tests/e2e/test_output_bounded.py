"""What the verbs print stays bounded at any number of customers (SPEC §8): totals per status and
currency, the first rows (at most 20) of a table, and how to see the rest; period dates in the
terminal are the customer's local days, as on the HTML pages."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import polars as pl
import pytest

from catalog import Lake
from catalog.config import Catalog, Customer
from catalog.schemas import DEC, TS
from flows.cli.tables import print_alerts, print_invoices
from tests.e2e.conftest import CATALOG, write_lake

UTC = dt.timezone.utc
N = 100_000


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in `text`, as cells."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def many_invoices(n: int = N) -> pl.DataFrame:
    """n invoices: i % 4 == 0 final USD, 1 draft USD, 2 final EUR, 3 draft EUR; USD ones owe 1.25,
    EUR ones 2.50."""
    i = pl.int_range(0, n, eager=True)
    start = dt.datetime(2026, 10, 1, tzinfo=UTC)
    return pl.DataFrame({
        "customer_id": i.map_elements(lambda k: f"c{k:06d}", return_dtype=pl.String),
        "plan_id": pl.Series(["basic"] * n),
        "period_start": pl.Series([start] * n, dtype=TS),
        "period_end": pl.Series([dt.datetime(2026, 11, 1, tzinfo=UTC)] * n, dtype=TS),
        "status": pl.Series(["final", "draft"] * (n // 2)),
        "currency": pl.Series(["USD", "USD", "EUR", "EUR"] * (n // 4)),
    }).with_columns(
        pl.when(pl.col("currency") == "USD").then(pl.lit(Decimal("1.25"))).otherwise(pl.lit(Decimal("2.50")))
        .cast(DEC).alias("total_due"),
    ).with_columns(pl.col("total_due").alias("subtotal"), pl.lit(Decimal(0)).cast(DEC).alias("discount"),
                   pl.lit(Decimal(0)).cast(DEC).alias("credits_applied"))


def test_bill_table_prints_at_most_20_rows_and_totals_per_status_and_currency(capsys):
    print_invoices(many_invoices())
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert len(rows) == 20
    assert [r[0] for r in rows] == [f"c{k:06d}" for k in range(20)]  # the first rows, by customer
    # totals of all 100,000, per status and currency: 25,000 each; USD 25,000 × 1.25, EUR × 2.50
    totals = dict(re.findall(r"^\s*(\w+ \w+): (.+)$", out, re.M))
    assert totals["final USD"] == "25,000 invoices, total due 31,250.00"
    assert totals["draft USD"] == "25,000 invoices, total due 31,250.00"
    assert totals["final EUR"] == "25,000 invoices, total due 62,500.00"
    assert totals["draft EUR"] == "25,000 invoices, total due 62,500.00"
    # how to see the rest
    assert "99,980 more" in out and "meterbill sql" in out and "meterbill report" in out
    assert len(out.splitlines()) <= 40


def test_alerts_table_prints_at_most_20_rows_and_firings_per_alert(capsys):
    t0 = dt.datetime(2026, 11, 1, tzinfo=UTC)
    fired = pl.DataFrame({
        "alert_id": ["big-day", "api-drop"] * (N // 2),
        "customer_id": [f"c{k:06d}" for k in range(N)],
        "window_start": pl.Series([t0] * N, dtype=TS),
        "current_value": pl.Series([Decimal(300)] * N, dtype=DEC),
        "threshold": pl.Series([Decimal(250)] * N, dtype=DEC),
        "message": ["over"] * N,
    })
    print_alerts(fired)
    out = capsys.readouterr().out
    assert len(table_rows(out)) == 20
    assert re.search(r"^\s*big-day: 50,000 firings$", out, re.M), out
    assert re.search(r"^\s*api-drop: 50,000 firings$", out, re.M), out
    assert "99,980 more" in out and "meterbill sql" in out
    assert len(out.splitlines()) <= 40


SYDNEY_CATALOG = Catalog(customers={
    "syd": Customer(customer_id="syd", customer_name="Sydney Pty", timezone="Australia/Sydney"),
    "utc": Customer(customer_id="utc", customer_name="Zulu Ltd"),
})


def test_terminal_invoice_periods_are_the_customers_local_days(capsys):
    # Sydney (UTC+11 in October and November): the period that starts 2026-10-14T13:00Z is
    # 15 Oct – 14 Nov there, as the HTML page says; a UTC customer's November is 1 – 30 Nov
    inv = many_invoices(4).head(2).with_columns(
        pl.Series("customer_id", ["syd", "utc"]),
        pl.Series("period_start", [dt.datetime(2026, 10, 14, 13, tzinfo=UTC), dt.datetime(2026, 11, 1, tzinfo=UTC)], dtype=TS),
        pl.Series("period_end", [dt.datetime(2026, 11, 14, 13, tzinfo=UTC), dt.datetime(2026, 12, 1, tzinfo=UTC)], dtype=TS))
    print_invoices(inv, cat=SYDNEY_CATALOG)
    rows = {r[0]: r for r in table_rows(capsys.readouterr().out)}
    assert rows["syd"][2] == "2026-10-15 → 2026-11-14"
    assert rows["utc"][2] == "2026-11-01 → 2026-11-30"


def reconciliation_lake(tmp_path, n: int = N) -> Lake:
    """n reconciliation rows of October, all balanced but two (rows 40,000 and 70,000), and one of a
    Sydney customer whose October starts 2026-09-30T14:00Z."""
    cat = dict(CATALOG)
    cat["customers.yaml"] = CATALOG["customers.yaml"].rstrip() + "\n        - {customer_id: syd, customer_name: Sydney Pty, timezone: Australia/Sydney}\n"
    lk = Lake(write_lake(tmp_path / "lake", catalog=cat))
    usage = [Decimal(5)] * n
    for k in (40_000, 70_000):
        if k < n:
            usage[k] = Decimal(7)  # 7 used, 5 billed: not balanced
    ids = [f"c{k:06d}" for k in range(n)]
    ids[-1] = "syd"
    start = [dt.datetime(2026, 10, 1, tzinfo=UTC)] * n
    end = [dt.datetime(2026, 11, 1, tzinfo=UTC)] * n
    start[-1], end[-1] = dt.datetime(2026, 9, 30, 14, tzinfo=UTC), dt.datetime(2026, 10, 31, 13, tzinfo=UTC)
    lk.write("reconciliation", pl.DataFrame({
        "customer_id": ids, "period_start": pl.Series(start, dtype=TS), "period_end": pl.Series(end, dtype=TS),
        "product_item_id": ["api"] * n, "meter_api_name": ["api_calls"] * n,
        "events_accepted": [2] * n, "events_cancelled": [0] * n,
        "usage_quantity": pl.Series(usage, dtype=DEC), "billed_quantity": pl.Series([Decimal(5)] * n, dtype=DEC),
        "adjusted_quantity": pl.Series([Decimal(0)] * n, dtype=DEC),
    }))
    return lk


def test_reconcile_prints_at_most_20_rows_the_unbalanced_first(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    lk = reconciliation_lake(tmp_path)
    code, out, err = cli("reconcile", "--lake", lk.root)
    assert code == 0, err
    rows = table_rows(out)
    assert len(rows) == 20
    assert [(r[0], r[-1]) for r in rows[:2]] == [("c040000", "NO"), ("c070000", "NO")]
    assert all(r[-1] == "yes" for r in rows[2:])
    assert "100,000 rows: 99,998 balanced, 2 NOT balanced" in out
    assert "99,980 more" in out and "meterbill sql" in out
    assert len(out.splitlines()) <= 40


def test_reconcile_periods_are_the_customers_local_days(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    lk = reconciliation_lake(tmp_path, n=3)
    code, out, err = cli("reconcile", "--lake", lk.root)
    assert code == 0, err
    periods = {r[0]: r[1] for r in table_rows(out)}
    assert periods == {"c000000": "2026-10-01 → 2026-10-31", "c000001": "2026-10-01 → 2026-10-31",
                       "syd": "2026-10-01 → 2026-10-31"}  # Sydney's October: 2026-09-30T14:00Z on


# ------------------------------------------------------------------ the Prefect artifacts' text

def published_lake(tmp_path, n: int = 20_000) -> tuple[Lake, dict]:
    """A lake of n invoices (many_invoices), n alert firings and 5,000 ingested files, and the
    ingest summary of a run that ingested those files and saw 5,000 undefined customers."""
    lk = Lake(write_lake(tmp_path / "lake"))
    lk.write("invoices", many_invoices(n).with_columns(pl.format("inv_{}", pl.col("customer_id")).alias("invoice_id")))
    t0 = dt.datetime(2026, 11, 2, tzinfo=UTC)
    lk.write("alerts_fired", pl.DataFrame({
        "alert_id": ["big-day"] * n, "customer_id": [f"c{k:06d}" for k in range(n)],
        "window_start": pl.Series([t0 - dt.timedelta(days=1)] * n, dtype=TS),
        "window_end": pl.Series([t0] * n, dtype=TS), "fired_at": pl.Series([t0] * n, dtype=TS),
        "message": ["over 250 calls"] * n}))
    files = [{"source_file": f"day-{k:05d}.ndjson", "sha256": f"{k:064x}", "format": "ndjson", "rows_read": 10,
              "accepted": 9, "duplicates": 1, "quarantined": 0, "status": "ingested", "error": None}
             for k in range(5_000)]
    lk.write("ingest_files", pl.DataFrame(files).drop("format"))
    ingest = {"files_found": 5_000, "files_ingested": 5_000, "files_unreadable": 0, "files_skipped": 0,
              "rows_read": 50_000, "accepted": 45_000, "duplicates": 5_000, "quarantined": 0,
              "quarantine_by_reason": {}, "files": files,
              "undefined": {"customers": {f"x{k:05d}": 1 for k in range(5_000)}, "meters": {}}}
    return lk, ingest


def md_table_rows(md: str) -> list[list[str]]:
    return [l.split("|")[1:-1] for l in md.splitlines() if l.startswith("|") and not set(l) <= set("|-: ")]


def test_run_report_is_small_at_20000_invoices(tmp_path):
    from flows.stages.run_report import run_report_markdown

    lk, ingest = published_lake(tmp_path)
    lk.reports_dir.mkdir()
    for k in range(200):  # pages an earlier `meterbill report` made
        (lk.reports_dir / f"invoice-inv_c{k:06d}.html").write_text("<html></html>")
    md = run_report_markdown(lk, "2026-11-02T00:00:00+00:00", ingest, {"dates_rebuilt": 3, "rows": 9},
                             {"invoices": 20_000, "line_items": 60_000}, {"fired": 20_000, "firings_total": 20_000})
    assert len(md.encode()) <= 8_000, len(md.encode())
    # every table: at most 20 rows and its totals row, then how to see the rest
    files = [r for r in md_table_rows(md) if r[0].strip().startswith("day-")]
    assert len(files) == 20
    assert "| … 4,980 more files: `meterbill sql \"select * from ingest_files\"` | | | | | |" in md
    firings = [r for r in md_table_rows(md) if r[0].strip() == "big-day"]
    assert len(firings) == 20 and "19,980 more" in md
    assert "| final | USD | 5,000 |" in md and "| draft | EUR | 5,000 |" in md
    assert md.count("`x0") <= 20  # undefined customers: the first 20 named, the rest counted
    assert "invoice-inv_c" not in md  # no list of invoice pages ...
    assert "meterbill report --period 2026-10" in md  # ... but how to make them


def test_invoices_artifact_table_holds_at_most_20_rows(tmp_path):
    from flows.stages.run_report import invoice_rows

    lk, _ = published_lake(tmp_path)
    assert len(invoice_rows(lk)) == 20


def test_ingest_report_lists_at_most_20_files_and_the_totals():
    from transforms.ingest.report import FileResult, IngestReport

    t = dt.datetime(2026, 11, 2, tzinfo=UTC)
    rep = IngestReport(as_of=t, ingested_at=t, max_event_age_days=60, run_id="r1",
                       files=[FileResult(source_file=f"day-{k:05d}.ndjson", sha256=f"{k:064x}", format="ndjson",
                                         rows_read=10, accepted=9, duplicates=1) for k in range(5_000)],
                       undefined_customers={f"x{k:05d}": 1 for k in range(5_000)})
    md = rep.to_markdown()
    assert len([r for r in md_table_rows(md) if r[0].strip().startswith("day-")]) == 20
    assert "| … 4,980 more files | | | | | | |" in md
    assert "| 5000 | 5000 | 0 | 0 | 50000 | 45000 | 5000 | 0 | 0 |" in md  # the totals of every file
    assert md.count("| x0") == 20
    assert len(md.encode()) <= 6_000, len(md.encode())


# ------------------------------------------------------------------ `meterbill report` at scale

def test_report_of_a_month_reads_the_events_once_not_once_per_invoice(tmp_path, monkeypatch):
    import flows.stages.report.data as report_data
    from flows.stages.report import render_period
    from tests.e2e.many_customers import billed_many_customer_lake

    lk = billed_many_customer_lake(tmp_path / "lake", 1_500)
    scans, queries = [], []
    scan, query = Lake.scan, report_data.usage_query
    monkeypatch.setattr(Lake, "scan", lambda self, table: scans.append(table) or scan(self, table))
    monkeypatch.setattr(report_data, "usage_query", lambda *a, **k: queries.append(1) or query(*a, **k))
    paths = render_period(lk, "2026-10")
    assert len(paths) == 1 + 1_500  # the summary and every final invoice of October
    # one read of the events for the batch; usage queries per meter and period (every October
    # here starts on the same local date, in three zones), not per invoice
    assert scans.count("events") == 1, scans
    assert len(queries) <= 2 * 3, len(queries)
