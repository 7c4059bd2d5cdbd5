"""`meterbill run` end to end on a temporary lake, invoices worked out by hand."""

from decimal import Decimal

import polars as pl
import pytest

from catalog import Lake, connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

AS_OF = "2026-02-03T00:00:00Z"  # January is final (grace 24 h), February is a draft


def invoices(lake):
    return {(r["customer_id"], r["period_start"].strftime("%Y-%m")): r
            for r in Lake(lake).read("invoices").iter_rows(named=True)}


def test_run_prices_the_hand_worked_invoices(small_lake, cli):
    code, out, err = cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 0, err
    inv = invoices(small_lake)
    # c1, basic: 350 calls × 0.01 = 3.50, plus the 10.00 base fee
    jan1 = inv[("c1", "2026-01")]
    assert (jan1["usage_amount"], jan1["fees_amount"], jan1["total_due"]) == (Decimal("3.50"), Decimal("10.00"), Decimal("13.50"))
    assert jan1["status"] == "final"
    # c2, pro: 170 calls, the first 100 in tier 1 (flat 5.00), 70 × 0.02 = 1.40 → 6.40
    assert inv[("c2", "2026-01")]["total_due"] == Decimal("6.40")
    # February, open: c1 owes the base fee only, c2 7 calls inside tier 1 → the flat 5.00
    feb1, feb2 = inv[("c1", "2026-02")], inv[("c2", "2026-02")]
    assert (feb1["status"], feb1["total_due"]) == ("draft", Decimal("10.00"))
    assert (feb2["status"], feb2["total_due"]) == ("draft", Decimal("5.00"))
    assert len(inv) == 4


def test_every_raw_row_is_accounted_for(small_lake, cli):
    assert cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")[0] == 0
    files = Lake(small_lake).read("ingest_files")
    row = files.row(0, named=True)
    assert (row["rows_read"], row["accepted"], row["duplicates"], row["quarantined"]) == (8, 6, 1, 1)
    q = Lake(small_lake).read("quarantine")
    assert q["reason"].to_list() == ["missing_field"] and q["row_number"].to_list() == [8]


def test_alert_fires_once_for_the_big_day(small_lake, cli):
    assert cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")[0] == 0
    # as of the end of 2026-01-05, c1's 300 calls that day (> 250) are a complete window
    for as_of in ("2026-01-06T00:00:00Z", "2026-01-06T01:00:00Z", "2026-01-06T02:00:00Z"):
        assert cli("alerts", "--lake", small_lake, "--as-of", as_of, "--no-deliver")[0] == 0
    fired = Lake(small_lake).read("alerts_fired").filter(pl.col("alert_id") == "big-day")
    assert fired.height == 1
    r = fired.row(0, named=True)
    assert (r["customer_id"], r["current_value"], f"{r['window_start']:%Y-%m-%d}") == ("c1", Decimal("300"), "2026-01-05")


def test_run_twice_leaves_every_table_the_same(small_lake, cli):
    assert cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")[0] == 0
    con = connect(small_lake)
    tables = ["events", "quarantine", "ingest_files", "usage_hourly", "invoices", "line_items",
              "credit_ledger", "unbilled_usage", "alerts_fired", "reconciliation"]

    def snapshot():
        con = connect(small_lake)
        return {t: con.sql(f"select * exclude (ingested_at) from {t}" if t in ("events", "quarantine", "ingest_files")
                           else f"select * from {t}").pl().sort(pl.all()) for t in tables}

    first = snapshot()
    assert cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")[0] == 0
    second = snapshot()
    for t in tables:
        assert first[t].equals(second[t]), t
    assert first["invoices"].height == 4
