"""`meterbill bill` commits the five billing tables together (SPEC §7), end to end: a bill that
fails half-way leaves every table as it was and says which folder failed and what to do; one that
dies half-way is finished by the next command; invoices always add up to their lines."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from catalog import Lake, connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

BILL_TABLES = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")
REPO = Path(__file__).resolve().parents[2]
KIND_COLUMN = {"usage": "usage_amount", "fee": "fees_amount", "minimum": "minimums_amount",
               "adjustment": "adjustments_amount", "discount": "discount", "credit": "credits_applied"}


def files(lake: Path) -> dict[str, bytes]:
    """Every file of the billing tables, by path: to compare before and after byte for byte."""
    wh = lake / "warehouse"
    return {str(p.relative_to(wh)): p.read_bytes() for t in BILL_TABLES for p in sorted((wh / t).rglob("*"))
            if p.is_file()}


def assert_invoices_add_up(lake: Path) -> int:
    """Every invoice's amounts are the sums of its lines by kind (SPEC §7), read through the views."""
    con = connect(lake)
    inv = con.sql("SELECT * FROM invoices").pl()
    sums = con.sql("SELECT invoice_id, kind, sum(amount) AS s FROM line_items GROUP BY ALL").pl()
    con.close()
    by = {(r["invoice_id"], r["kind"]): r["s"] for r in sums.iter_rows(named=True)}
    for r in inv.iter_rows(named=True):
        for kind, col in KIND_COLUMN.items():
            assert r[col] == by.get((r["invoice_id"], kind), Decimal(0)), (r["invoice_id"], kind)
    return inv.height


def leftovers(lake: Path) -> list[str]:
    wh = lake / "warehouse"
    tmp = [p.name for p in (wh / ".tmp").iterdir() if p.name != "duckdb"] if (wh / ".tmp").is_dir() else []
    journals = [p.name for p in (wh / ".journal").rglob("*") if p.is_file()] if (wh / ".journal").is_dir() else []
    return sorted(tmp + journals + [p.name for p in wh.iterdir() if p.name.endswith(".old")])


def billed_january(cli, lake) -> dict[str, bytes]:
    code, out, err = cli("ingest", "--lake", lake, "--as-of", "2026-01-25T00:00:00Z")
    assert code == 0, err
    code, out, err = cli("bill", "--lake", lake, "--as-of", "2026-01-25T00:00:00Z")
    assert code == 0, err
    assert assert_invoices_add_up(lake) == 2   # January drafts of c1 and c2
    return files(lake)


def test_a_bill_that_fails_half_way_changes_nothing_and_names_the_folder(small_lake, cli):
    before = billed_january(cli, small_lake)
    # something that is not a folder where the reconciliation table must go (fails as root too)
    rec = small_lake / "warehouse" / "reconciliation"
    for p in rec.rglob("*.parquet"):
        p.unlink()
    rec.rmdir()
    rec.write_text("")
    before = {k: v for k, v in before.items() if not k.startswith("reconciliation/")}

    code, out, err = cli("bill", "--lake", small_lake, "--as-of", "2026-02-03T00:00:00Z")
    assert code == 1
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == (
        "meterbill bill: error: cannot write warehouse/reconciliation: it is a file, not a folder; move it away "
        "and run `meterbill bill` again; nothing was changed")
    assert files(small_lake) == before
    assert leftovers(small_lake) == []
    assert assert_invoices_add_up(small_lake) == 2

    rec.unlink()   # fixed: the next bill goes through
    code, out, err = cli("bill", "--lake", small_lake, "--as-of", "2026-02-03T00:00:00Z")
    assert code == 0, err
    assert assert_invoices_add_up(small_lake) == 4
    assert leftovers(small_lake) == []


def test_a_rename_that_fails_in_the_middle_of_the_commit_changes_nothing(small_lake, cli, monkeypatch):
    before = billed_january(cli, small_lake)
    real = os.rename
    calls = []

    def failing(src, dst, *a, **k):   # the third rename of the commit fails (an I/O error)
        if "warehouse" in str(dst) and "prefect" not in str(dst):
            calls.append(dst)
            if len(calls) == 3:
                raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", failing)
    code, out, err = cli("bill", "--lake", small_lake, "--as-of", "2026-02-03T00:00:00Z")
    monkeypatch.undo()
    assert code == 1 and len(calls) >= 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("meterbill bill: error: cannot write warehouse/") and "Input/output error" in last, err
    assert last.endswith("nothing was changed")
    assert files(small_lake) == before
    assert leftovers(small_lake) == []


DIE = textwrap.dedent("""
    import os, sys
    from catalog import Lake, load_catalog
    from flows.stages.bill import run_bill
    from flows.stages.common import parse_instant
    at, root = int(sys.argv[1]), sys.argv[2]
    calls = [0]
    real = os.rename
    def dying(src, dst, *a, **k):
        calls[0] += 1
        if calls[0] - 1 == at:
            os._exit(9)
        return real(src, dst, *a, **k)
    os.rename = dying
    lk = Lake(root)
    run_bill(lk, load_catalog(lk.catalog_dir), parse_instant("2026-02-03T00:00:00Z"))
""")


@pytest.mark.parametrize("at", [1, 2, 5])
def test_a_bill_that_dies_half_way_is_finished_by_the_next_command(small_lake, cli, monkeypatch, at):
    billed_january(cli, small_lake)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", DIE, str(at), str(small_lake)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 9, p.stderr
    # `meterbill sql` reads a consistent warehouse: the February bill, whole
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli("sql", "SELECT count(*) AS n FROM invoices", "--lake", small_lake, "--format", "csv")
    assert code == 0, err
    assert out.splitlines() == ["n", "4"]
    assert assert_invoices_add_up(small_lake) == 4
    assert leftovers(small_lake) == []
    jan = Lake(small_lake).read("invoices").filter(pl.col("status") == "final")
    assert sorted(jan["total_due"].to_list()) == [Decimal("6.40"), Decimal("13.50")]
    # and the next bill goes on from there
    code, out, err = cli("bill", "--lake", small_lake, "--as-of", "2026-02-04T00:00:00Z")
    assert code == 0, err
    assert assert_invoices_add_up(small_lake) == 4
