"""`meterbill run`: the command line's summary and progress, and the run report and invoices
artifacts of its `run` flow run, read back through the Prefect client."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import EVENTS, MS, write_lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

AS_OF = "2026-02-03T00:00:00Z"  # January final, February a draft; 2026-02-02 the last complete day
# the e2e events plus a big day for c2 on 2026-02-02 (7 + 300 calls > 250): "big-day" fires for it
BIG_DAY = {"customer_id": "c2", "meter_api_name": "api_calls", "meter_value": 300,
           "meter_time_in_millis": MS["2026-02-02"] + 3_600_000, "unique_id": "e7"}


@pytest.fixture
def lake(tmp_path):
    return write_lake(tmp_path / "lake", events=EVENTS + [BIG_DAY])


def latest_run_and_artifacts(flow_name: str = "run"):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                    sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        arts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return run, {a.key: a for a in arts}


def test_run_prints_a_summary_and_publishes_a_report_and_an_invoice_table(lake, cli):
    code, out, err = cli("run", "--lake", lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 0, err

    # the command line: a few readable lines on stdout ...
    lines = [l.rstrip() for l in out.splitlines() if l.strip()]
    assert lines[0].startswith(f"run as of 2026-02-03  lake {lake}")
    text = "\n".join(lines)
    assert "ingest  1 new file; 9 rows: 7 accepted, 1 duplicate, 1 quarantined" in text
    assert "meter   usage_hourly: 3 dates rebuilt, 5 rows" in text
    assert "bill    4 invoices (2 final, 2 draft), total due USD 39.04" in text
    assert "alerts  1 new firing (1 in all)" in text
    assert "{" not in text  # no dict dumps
    assert len(lines) <= 8
    # ... and progress on stderr: the stages and the ingest's per-file line, from the flows' Prefect logger
    assert "[1/4] ingest" in err and "[4/4] alerts" in err
    assert "[1/1] raw/batch1.ndjson: 9 rows, 7 accepted, 1 duplicates, 1 quarantined" in err
    assert "Traceback" not in err

    # the artifacts of that run_flow run, read back through the Prefect client
    run, arts = latest_run_and_artifacts("run")
    assert run.state.type.value == "COMPLETED" and run.parameters["lake"] == str(lake)
    assert {"run-report", "invoices"} <= set(arts)
    md = arts["run-report"].data
    assert arts["run-report"].type == "markdown"
    # files and rows: 9 read = 7 accepted + 1 duplicate (a re-sent e2) + 1 quarantined (no customer)
    assert "| batch1.ndjson | ingested | 9 | 7 | 1 | 1 |" in md
    assert "`missing_field` 1" in md
    # invoices by status and total: Jan c1 13.50 + c2 6.40; Feb drafts c1 10.00 (base fee),
    # c2 5.00 + (307 - 100) x 0.02 = 9.14
    assert "| final | USD | 2 | 19.90 | 0.00 | 0.00 | 19.90 |" in md
    assert "| draft | USD | 2 | 19.14 | 0.00 | 0.00 | 19.14 |" in md
    # alerts fired in this run
    assert "1 new firing(s) in this run" in md
    assert "| big-day | c2 | 2026-02-02 00:00 | 307 | 250 |" in md

    table = arts["invoices"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    got = {(r["customer"], r["period_start"][:7]): (r["status"], r["total_due"]) for r in rows}
    assert got == {("c1", "2026-01"): ("final", "13.50"), ("c2", "2026-01"): ("final", "6.40"),
                   ("c1", "2026-02"): ("draft", "10.00"), ("c2", "2026-02"): ("draft", "9.14")}
    assert [r["period_start"][:7] for r in rows] == ["2026-02", "2026-02", "2026-01", "2026-01"]  # newest first


def test_run_renders_no_invoice_page_and_its_report_says_how_to_make_them(lake, cli):
    from catalog import Lake

    code, out, err = cli("run", "--lake", lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 0, err
    # pages are `meterbill report`'s, on demand: the run writes none
    assert not list(Lake(lake).reports_dir.glob("*.html"))
    _, arts = latest_run_and_artifacts("run")
    md = arts["run-report"].data
    assert "meterbill report --period 2026-01" in md  # the latest month with a final invoice
    assert "file://" not in md
