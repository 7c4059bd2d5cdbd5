"""`meterbill report`: the HTML invoice shows exactly the invoice row and every one of its lines."""

from __future__ import annotations

import re
import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from catalog import Lake, load_catalog
from catalog.schemas import SCHEMAS
from flows.cli import main
from flows.stages.report import ReportData, invoice_page, render_invoice, render_invoices
from tests.exploration.htmlpage import Page, amount

TAKEN_OFF = {"discount", "credit"}  # stored positive, shown with a minus


def pick_invoices(lk: Lake) -> dict[str, str]:
    """One invoice of the demo lake for each thing an invoice page must show."""
    inv = lk.read("invoices")
    lines = lk.read("line_items")
    cat = load_catalog(lk.catalog_dir)

    def first(df: pl.DataFrame, why: str) -> str:
        assert df.height, f"the demo lake has no invoice with {why}: the test would prove nothing"
        return df.sort("total_due", "invoice_id", descending=[True, False])["invoice_id"][0]

    def with_line(kind: str) -> pl.DataFrame:
        return inv.filter(pl.col("invoice_id").is_in(lines.filter(pl.col("kind") == kind)["invoice_id"].implode()))

    most_lines = lines.group_by("invoice_id").len().sort("len", "invoice_id", descending=[True, False])["invoice_id"][0]
    return {
        "discount": first(inv.filter(pl.col("discount") > 0), "a discount"),
        "credits": first(inv.filter(pl.col("credits_applied") > 0), "prepaid credits applied"),
        "minimum": first(with_line("minimum"), "a minimum line"),
        "fees": first(with_line("fee"), "a fee line"),
        "dimension lines": first(inv.filter(pl.col("invoice_id").is_in(
            lines.filter(pl.col("dimensions").map.len() > 0)["invoice_id"].implode())), "lines per dimension combination"),
        "custom currency": first(inv.filter(pl.col("currency").is_in(list(cat.currencies))
                                            & (pl.col("total_due") > 0)), "a custom currency"),
        "final": first(inv.filter((pl.col("status") == "final") & (pl.col("usage_amount") > 0)), "final usage"),
        "draft": first(inv.filter(pl.col("status") == "draft"), "a draft"),
        "most lines": most_lines,
    }


def assert_self_contained(lk: Lake, path: Path, page: Page) -> None:
    """No scripts, style sheets, fonts or images from elsewhere: one file that opens anywhere;
    the only links are to other report pages next to it."""
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}, (path.name, tags)
    for _, a in page.tags:
        for attr in ("src", "href"):
            v = a.get(attr)
            if v is not None:
                assert not re.match(r"^[a-z]+:", v) and (lk.reports_dir / v).is_file(), (path.name, v)
    assert "url(" not in path.read_text(encoding="utf-8"), path.name


def check_invoice_page(lk: Lake, invoice_id: str) -> Page:
    """Render one invoice and compare every shown amount with the tables."""
    path = render_invoice(lk, invoice_id)
    assert path.parent == lk.reports_dir and path.name == f"invoice-{invoice_id}.html"
    page = Page(path.read_text(encoding="utf-8"))
    assert_self_contained(lk, path, page)
    r = lk.read("invoices").filter(pl.col("invoice_id") == invoice_id).row(0, named=True)

    shown = page.ids
    assert shown["invoice-id"] == invoice_id
    assert shown["status"].lower() == r["status"]
    assert amount(shown["subtotal"]) == r["subtotal"], invoice_id
    assert -amount(shown["discount"]) == r["discount"], invoice_id
    assert -amount(shown["credits"]) == r["credits_applied"], invoice_id
    assert amount(shown["total-due"]) == r["total_due"], invoice_id
    assert amount(shown["usage"]) == r["usage_amount"] and amount(shown["fees"]) == r["fees_amount"], invoice_id
    for key, col in (("minimums", "minimums_amount"), ("adjustments", "adjustments_amount")):
        assert amount(shown[key]) == r[col] if key in shown else r[col] == 0, (invoice_id, key)
    if r["base_currency"] and r["base_currency"] != r["currency"]:
        assert amount(shown["total-due-base"]) == r["total_due_base"], invoice_id
    # the totals add up as shown (SPEC §5.4)
    assert amount(shown["total-due"]) == max(amount(shown["subtotal"]) + amount(shown["discount"])
                                             + amount(shown["credits"]), Decimal(0))

    lines = lk.read("line_items").filter(pl.col("invoice_id") == invoice_id)
    rows = page.line_rows()
    assert set(rows) == set(lines["line_id"]), f"{invoice_id}: the page's lines differ from line_items"
    for ln in lines.iter_rows(named=True):
        row = rows[ln["line_id"]]
        assert row.attrs["data-kind"] == ln["kind"]
        want = -ln["amount"] if ln["kind"] in TAKEN_OFF else ln["amount"]
        assert amount(row.cells[-1]) == want, (invoice_id, ln["line_id"], row.cells)
    return page


def test_invoice_pages_show_the_invoice_row_and_every_line(demo_lake):
    lk = Lake(demo_lake)
    picked = pick_invoices(lk)
    for why, invoice_id in picked.items():
        page = check_invoice_page(lk, invoice_id)
        status = lk.read("invoices").filter(pl.col("invoice_id") == invoice_id)["status"][0]
        assert ("draft-note" in page.ids) == (status == "draft"), (why, invoice_id)


def hand_worked_lake(root: Path) -> Lake:
    """The e2e lake's c2 in January (tests/e2e/test_run.py checks the pipeline gets these numbers):
    170 calls on the graduated `pro` price, tier 1 (up to 100) at 0 with a 5.00 flat fee, then
    0.02 a call: 100 → 5.00, 70 × 0.02 = 1.40, total 6.40; written straight into the tables."""
    from tests.e2e.conftest import CATALOG, write_lake

    write_lake(root, events=[], catalog=CATALOG)
    lk = Lake(root)
    utc = dt.timezone.utc
    start, end = dt.datetime(2026, 1, 1, tzinfo=utc), dt.datetime(2026, 2, 1, tzinfo=utc)
    D = Decimal
    lk.write("invoices", pl.DataFrame([{
        "invoice_id": "inv_c2_jan", "customer_id": "c2", "plan_id": "pro", "subscription_id": "s2",
        "currency": "USD", "period_start": start, "period_end": end, "status": "final",
        "usage_amount": D("6.40"), "fees_amount": D(0), "minimums_amount": D(0), "adjustments_amount": D(0),
        "subtotal": D("6.40"), "discount": D(0), "credits_applied": D(0), "total_due": D("6.40"),
        "base_currency": "USD", "total_due_base": D("6.40"), "as_of": dt.datetime(2026, 2, 3, tzinfo=utc)}],
        schema_overrides={k: v for k, v in SCHEMAS["invoices"].items()}))
    tiers = [{"tier": 1, "quantity": D(100), "unit_price": D(0), "flat_fee": D(5), "amount": D(5)},
             {"tier": 2, "quantity": D(70), "unit_price": D("0.02"), "flat_fee": D(0), "amount": D("1.40")}]
    lk.write("line_items", pl.DataFrame([{
        "invoice_id": "inv_c2_jan", "line_id": "usage-api", "kind": "usage", "customer_id": "c2",
        "product_item_id": "api", "dimensions": [], "description": "API calls", "quantity": D(170),
        "unit_price": None, "amount": D("6.40"), "currency": "USD", "tiers": tiers,
        "period_start": start, "period_end": end}], schema_overrides=SCHEMAS["line_items"]))
    return lk


def test_hand_worked_invoice_shows_its_tier_breakdown(tmp_path, capsys):
    lk = hand_worked_lake(tmp_path / "lake")
    assert main(["report", "--lake", str(lk.root), "--invoice", "inv_c2_jan"]) == 0
    assert capsys.readouterr().out.strip().endswith("invoice-inv_c2_jan.html")

    page = check_invoice_page(lk, "inv_c2_jan")
    assert (page.ids["customer-name"], page.ids["period"]) == ("Two Ltd", "1 Jan – 31 Jan 2026")
    assert amount(page.ids["total-due"]) == Decimal("6.40")
    line = page.line_rows()["usage-api"].cells
    assert line == ["API calls graduated pricing: each tier prices the units that fall in it", "170", "tiered", "6.40"]
    tiers = [r.cells for r in page.rows if r.attrs.get("class") == "sub"]
    assert tiers == [["tier 1 (up to 100)", "100", "0.00 + 5.00 flat", "5.00"],
                     ["tier 2 (over 100)", "70", "0.02", "1.40"]]


def test_period_summary_links_every_final_invoice_of_the_month(demo_lake, capsys):
    lk = Lake(demo_lake)
    capsys.readouterr()
    assert main(["report", "--lake", str(demo_lake), "--period", "2026-10"]) == 0
    printed = capsys.readouterr().out.splitlines()
    summary = lk.reports_dir / "period-2026-10.html"
    assert str(summary) == printed[0]
    page = Page(summary.read_text(encoding="utf-8"))
    assert_self_contained(lk, summary, page)

    cat = load_catalog(lk.catalog_dir)
    inv = lk.read("invoices")
    month = [s.astimezone(ZoneInfo(cat.timezone(c))).strftime("%Y-%m")
             for c, s in inv.select("customer_id", "period_start").iter_rows()]
    inv = inv.with_columns(pl.Series("month", month)).filter(pl.col("month") == "2026-10")
    listed = {r.attrs["data-invoice-id"] for r in page.rows if "data-invoice-id" in r.attrs}
    assert listed == set(inv["invoice_id"])
    finals = set(inv.filter(pl.col("status") == "final")["invoice_id"])
    assert {f"invoice-{i}.html" for i in finals} == set(page.links)
    for link in page.links:
        assert (lk.reports_dir / link).is_file()
    # the terminal: the summary, the first 20 invoice pages, and where the rest are (SPEC §8)
    assert len(finals) > 20, "the demo lake's October has too few final invoices to test the cut"
    assert all(line in {str(lk.reports_dir / link) for link in page.links} for line in printed[1:21])
    assert printed[21:] == [f"… and {len(finals) - 20:,} more invoice pages in {lk.reports_dir}"]
    assert int(page.ids["invoice-count"]) == inv.height


def test_local_start_date_selects_a_period(demo_lake, capsys):
    lk = Lake(demo_lake)
    assert main(["report", "--lake", str(demo_lake), "--period", "2026-10-15"]) == 0
    page = Page((lk.reports_dir / "period-2026-10-15.html").read_text(encoding="utf-8"))
    customers = {r.cells[0].split()[-1] for r in page.rows if "data-invoice-id" in r.attrs}
    assert "cus_004" in customers  # Australia/Sydney: its period starts 2026-10-14T13:00Z


@pytest.mark.parametrize("args, message", [
    (["--invoice", "inv_nope"], "no invoice 'inv_nope'"),
    (["--period", "2031-01-01"], "no invoice's billing period starts on 2031-01-01"),
    (["--period", "next month"], "is not a month (e.g. 2026-10) or a date"),
])
def test_bad_report_arguments_are_one_line_errors(demo_lake, capsys, args, message):
    assert main(["report", "--lake", str(demo_lake), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_pages_rendered_in_one_batch_equal_each_invoice_rendered_alone(demo_lake):
    # a batch reads the events once and runs one usage query per meter and period for all its
    # customers (in their own zones); every page must be byte for byte the page of that invoice alone
    lk = Lake(demo_lake)
    inv = lk.read("invoices").sort("invoice_id")
    ids = inv["invoice_id"].to_list()
    assert inv.height >= 50 and inv["status"].n_unique() == 2
    render_invoices(lk, ids)
    for i in ids:
        alone = invoice_page(ReportData.load(lk), i)
        assert (lk.reports_dir / f"invoice-{i}.html").read_text(encoding="utf-8") == alone, i
    charts = sum((lk.reports_dir / f"invoice-{i}.html").read_text(encoding="utf-8").count("<svg") for i in ids)
    assert charts > len(ids)  # the pages do have charts: the comparison proves something
