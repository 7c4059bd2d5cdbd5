"""A damaged warehouse file is named in the error, with what to do (SPEC §8): `meter`, `bill`,
`usage`, `reconcile` and `sql` print one line naming the file (relative to the lake), exit 1, no
traceback; a verb that does not need the file does not read it (`meter` with nothing to rebuild)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import MS

pytestmark = pytest.mark.usefixtures("prefect_harness")

AS_OF = "2026-02-03T00:00:00Z"

HINT = {  # what each table's message says to do
    "events": "restore it from a backup",
    "usage_hourly": "delete it and warehouse/_state/meter.json, then run `meterbill meter`",
    "invoices": "restore it from a backup",
    "reconciliation": "delete it and run `meterbill bill`",
}


@pytest.fixture(scope="module")
def billed(tmp_path_factory, prefect_harness):
    """A lake after one whole run (ingest, meter, bill, alerts); each test damages a copy."""
    from flows.cli import main
    from tests.e2e.conftest import write_lake

    lake = write_lake(tmp_path_factory.mktemp("damaged") / "lake")
    assert main(["run", "--lake", str(lake), "--as-of", AS_OF, "--no-deliver"]) == 0
    return lake


def damaged_copy(billed: Path, tmp_path: Path, table: str, how: str) -> tuple[Path, str]:
    lake = tmp_path / "lake"
    shutil.copytree(billed, lake)
    wh = lake / "warehouse" / table
    files = sorted(wh.rglob("*.parquet"))
    f = next((p for p in files if "2026-01-05" in str(p)), files[0])
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if how == "truncated" else b"this is not parquet\n" * 40)
    return lake, f.relative_to(lake).as_posix()


def failure(cli, *args) -> str:
    code, out, err = cli(*args)
    assert code == 1, (args, out, err)
    assert "Traceback" not in out + err
    lines = [l for l in err.splitlines() if l.startswith("meterbill")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


def expect_named(line: str, verb: str, rel: str, table: str) -> None:
    assert line.startswith(f"meterbill {verb}: error: {rel} is damaged ("), line
    assert HINT[table] in line, line


VERBS = {
    "meter": lambda lake: ["meter", "--lake", lake, "--as-of", AS_OF],
    "bill": lambda lake: ["bill", "--lake", lake, "--as-of", AS_OF],
    "usage": lambda lake: ["usage", "--lake", lake, "--meter", "api_calls", "--from", "2026-01-01", "--to", "2026-02-01"],
    "reconcile": lambda lake: ["reconcile", "--lake", lake],
}


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_events_file_is_named_by_bill_usage_and_sql(billed, tmp_path, cli, how):
    lake, rel = damaged_copy(billed, tmp_path, "events", how)
    for verb in ("bill", "usage"):
        expect_named(failure(cli, *VERBS[verb](lake)), verb, rel, "events")
    expect_named(failure(cli, "sql", "SELECT sum(meter_value) FROM events", "--lake", lake), "sql", rel, "events")


def test_meter_with_nothing_to_rebuild_does_not_read_the_events(billed, tmp_path, cli):
    lake, rel = damaged_copy(billed, tmp_path, "events", "truncated")
    code, out, err = cli(*VERBS["meter"](lake))
    assert code == 0, err
    assert "dates_rebuilt 0" in out
    # reconcile reads the reconciliation table only
    code, out, err = cli(*VERBS["reconcile"](lake))
    assert code == 0, err


def test_meter_with_new_events_names_the_damaged_events_file(billed, tmp_path, cli):
    lake, rel = damaged_copy(billed, tmp_path, "events", "garbage")
    (lake / "raw" / "batch2.ndjson").write_text(json.dumps(
        {"customer_id": "c1", "meter_api_name": "api_calls", "meter_value": 3,
         "meter_time_in_millis": MS["2026-02-02"] + 5000, "unique_id": "late1"}) + "\n")
    code, out, err = cli("ingest", "--lake", lake, "--as-of", AS_OF)
    assert code == 0, err
    expect_named(failure(cli, *VERBS["meter"](lake)), "meter", rel, "events")


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_usage_hourly_file_is_named_by_bill_and_sql(billed, tmp_path, cli, how):
    lake, rel = damaged_copy(billed, tmp_path, "usage_hourly", how)
    expect_named(failure(cli, *VERBS["bill"](lake)), "bill", rel, "usage_hourly")
    expect_named(failure(cli, "sql", "SELECT * FROM usage_hourly", "--lake", lake), "sql", rel, "usage_hourly")
    for verb in ("meter", "usage", "reconcile"):   # they do not read usage_hourly
        code, out, err = cli(*VERBS[verb](lake))
        assert code == 0, (verb, err)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_invoices_file_is_named_by_bill_and_sql(billed, tmp_path, cli, how):
    lake, rel = damaged_copy(billed, tmp_path, "invoices", how)
    assert rel == "warehouse/invoices/part-0.parquet"
    expect_named(failure(cli, *VERBS["bill"](lake)), "bill", rel, "invoices")
    expect_named(failure(cli, "sql", "SELECT count(*) FROM invoices", "--lake", lake), "sql", rel, "invoices")
    for verb in ("meter", "usage", "reconcile"):
        code, out, err = cli(*VERBS[verb](lake))
        assert code == 0, (verb, err)
    # a query that does not touch the damaged table still works
    code, out, err = cli("sql", "SELECT count(*) AS n FROM events", "--lake", lake, "--format", "csv")
    assert code == 0 and out.splitlines() == ["n", "6"], err


def test_a_damaged_reconciliation_file_is_named_by_reconcile(billed, tmp_path, cli):
    lake, rel = damaged_copy(billed, tmp_path, "reconciliation", "truncated")
    expect_named(failure(cli, *VERBS["reconcile"](lake)), "reconcile", rel, "reconciliation")
