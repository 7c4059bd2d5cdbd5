"""`meterbill report --out DIR`: the pages go to DIR and nothing is written into the lake (a
read-only lake, a shared one); without it they go to <lake>/reports/ as before."""

from tests.e2e.conftest import tree
from tests.e2e.test_cli_errors import one_line


def test_report_out_writes_the_pages_there_and_nothing_into_the_lake(cli, billed_lake, tmp_path):
    before = tree(billed_lake)
    out_dir = tmp_path / "pages"
    code, out, err = cli("report", "--lake", billed_lake, "--out", out_dir)
    assert code == 0, err
    # the latest month with final invoices: January 2026, its summary and c1's and c2's invoice pages
    names = sorted(p.name for p in out_dir.iterdir())
    assert len(names) == 3 and "period-2026-01.html" in names
    assert sum(n.startswith("invoice-") for n in names) == 2
    printed = out.split()
    assert printed[0] == str(out_dir / "period-2026-01.html")
    assert sorted(printed[1:]) == [str(out_dir / n) for n in names if n.startswith("invoice-")]
    assert tree(billed_lake) == before

    from catalog import Lake
    from flows.stages.report import invoice_filename

    iid = Lake(billed_lake).read("invoices").sort("customer_id", "period_start")["invoice_id"][0]
    code, out, err = cli("report", "--lake", billed_lake, "--out", tmp_path / "one", "--invoice", iid)
    assert code == 0, err
    assert out.split() == [str(tmp_path / "one" / invoice_filename(iid))]
    assert [p.name for p in (tmp_path / "one").iterdir()] == [invoice_filename(iid)]
    assert tree(billed_lake) == before


def test_report_out_that_is_a_file_is_a_one_line_error(cli, billed_lake, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    code, out, err = cli("report", "--lake", billed_lake, "--out", f)
    assert code == 2
    assert one_line(err) == f"meterbill report: error: --out: {f} is a file, not a folder"
