"""`meterbill run` writes its report as a file, <lake>/reports/run-report.md, and prints that path:
the command it used to suggest (`prefect artifact inspect run-report`) starts a temporary Prefect
server that stays behind."""

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")

AS_OF = "2026-02-03T00:00:00Z"  # January final, February a draft


def test_run_writes_its_report_as_a_file_and_prints_where_it_is(small_lake, cli):
    code, out, err = cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 0, err
    path = small_lake / "reports" / "run-report.md"
    lines = [l.rstrip() for l in out.splitlines() if l.strip()]
    assert lines[-1] == f"report: {path} (also the Prefect artifact 'run-report')"
    assert "prefect artifact inspect" not in out
    md = path.read_text(encoding="utf-8")
    assert md.startswith("# meterbill run\n")
    assert "As of `2026-02-03T00:00:00+00:00`" in md
    # the invoices by status: 2 final (13.50 + 6.40), 2 draft (10.00 + 5.00)
    assert "| final | USD | 2 |" in md and "| draft | USD | 2 |" in md
    assert not list(path.parent.glob("*.tmp"))


def test_a_failed_run_replaces_the_report_file_with_the_failure(small_lake, cli, monkeypatch):
    import flows.bill

    assert cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")[0] == 0

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(flows.bill, "run_bill", broken)
    code, out, err = cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 1
    md = (small_lake / "reports" / "run-report.md").read_text(encoding="utf-8")
    assert md.startswith("# meterbill run: failed\n")
    assert "Stage **bill** raised `OSError`: No space left on device" in md
