"""`meterbill sql` (SPEC §8): a read-only query over the warehouse views; its csv and json output."""

import json
from decimal import Decimal

import pytest

from tests.e2e.conftest import tree, write_lake
from tests.e2e.test_cli_errors import one_line


def invoice_count(cli, lake) -> int:
    code, out, err = cli("sql", "select count(*) as n from invoices", "--lake", lake, "--format", "json")
    assert code == 0, err
    return json.loads(out)[0]["n"]


# ------------------------------------------------------------------ read-only

WRITES = [  # (the statement, its kind as DuckDB parses it)
    # the statement: it added a row to `invoices`
    ("COPY (SELECT * FROM invoices LIMIT 1) TO '{wh}/invoices/extra.parquet' (FORMAT parquet)", "COPY"),
    ("INSERT INTO invoices SELECT * FROM invoices", "INSERT"),
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("DROP VIEW invoices", "DROP"),
    ("ATTACH '{wh}/x.duckdb' AS x", "ATTACH"),
    ("INSTALL httpfs", "LOAD"),
    ("LOAD httpfs", "LOAD"),
    ("SET enable_external_access = true", "SET"),
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("EXPORT DATABASE '{wh}/export'", "EXPORT"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{wh}/invoices/x.csv'", "EXPLAIN"),
    ("CALL checkpoint()", "CALL"),
    ("UPDATE invoices SET total_due = 0", "UPDATE"),
]


@pytest.mark.parametrize("q, kind", WRITES)
def test_sql_refuses_a_statement_that_would_write(cli, billed_lake, q, kind):
    before = tree(billed_lake)
    code, out, err = cli("sql", q.format(wh=billed_lake / "warehouse"), "--lake", billed_lake)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"meterbill sql: error: sql is read-only: {kind} is refused (only one query: "), line
    assert tree(billed_lake) == before
    assert invoice_count(cli, billed_lake) == 4


def test_sql_refuses_a_write_hidden_after_a_query(cli, billed_lake):
    before = tree(billed_lake)
    q = f"SELECT 1; COPY (SELECT * FROM invoices) TO '{billed_lake}/warehouse/invoices/extra.parquet'"
    code, out, err = cli("sql", q, "--lake", billed_lake)
    assert code == 2
    assert one_line(err) == "meterbill sql: error: sql: one statement at a time (got 2)"
    assert tree(billed_lake) == before and out == ""


@pytest.mark.parametrize("q", [
    "SELECT * FROM read_text('{lake}/catalog/plans.yaml')",                 # the lake, outside the warehouse
    "SELECT * FROM read_csv('/etc/passwd')",                                # anywhere else
    "SELECT * FROM read_text('{lake}/warehouse/../catalog/plans.yaml')",    # out of the warehouse by ..
    "SELECT * FROM query('COPY (SELECT 1) TO ''{lake}/warehouse/x.csv''')",  # a write inside a query
])
def test_sql_select_reads_no_file_outside_the_warehouse(cli, billed_lake, q):
    before = tree(billed_lake)
    code, out, err = cli("sql", q.format(lake=billed_lake), "--lake", billed_lake)
    assert code == 2
    assert one_line(err).startswith("meterbill sql: error: sql: ")
    assert tree(billed_lake) == before


def test_sql_still_reads_the_warehouse_files_and_every_view(cli, billed_lake):
    glob = f"{billed_lake}/warehouse/invoices/**/*.parquet"
    code, out, err = cli("sql", f"SELECT count(*) AS n FROM read_parquet('{glob}')", "--lake", billed_lake,
                         "--format", "json")
    assert (code, json.loads(out)) == (0, [{"n": 4}]), err
    q = ("SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM quarantine) AS quarantined, "
         "(SELECT count(*) FROM line_items WHERE kind = 'usage') AS usage_lines")
    code, out, err = cli("sql", q, "--lake", billed_lake, "--format", "json")
    assert (code, json.loads(out)) == (0, [{"events": 6, "quarantined": 1, "usage_lines": 4}]), err


def test_sql_writes_nothing_into_the_lake(cli, billed_lake):
    before = tree(billed_lake)
    for fmt in ("table", "csv", "json"):
        assert cli("sql", "SELECT * FROM line_items ORDER BY invoice_id, line_id", "--lake", billed_lake,
                   "--format", fmt)[0] == 0
    assert tree(billed_lake) == before


def test_sql_works_before_the_warehouse_exists(cli, tmp_path):
    lake = write_lake(tmp_path / "lake")
    code, out, err = cli("sql", "SELECT invoice_id, total_due FROM invoices", "--lake", lake, "--format", "csv")
    assert (code, out) == (0, "invoice_id,total_due\n"), err
    code, out, err = cli("sql", "SELECT count(*) AS n FROM events", "--lake", lake, "--format", "json")
    assert (code, json.loads(out)) == (0, [{"n": 0}]), err
    assert not (lake / "warehouse").exists()


# ------------------------------------------------------------------ formats


def test_sql_json_prints_zero_and_amounts_as_exact_plain_numbers(cli, billed_lake):
    q = ("SELECT customer_id, period_start, status, total_due, discount FROM invoices "
         "WHERE period_start = '2026-01-01' ORDER BY customer_id")
    code, out, err = cli("sql", q, "--lake", billed_lake, "--format", "json")
    assert code == 0, err
    assert "E-" not in out
    assert json.loads(out, parse_float=Decimal) == [
        {"customer_id": "c1", "period_start": "2026-01-01T00:00:00+00:00", "status": "final",
         "total_due": Decimal("13.5"), "discount": 0},
        {"customer_id": "c2", "period_start": "2026-01-01T00:00:00+00:00", "status": "final",
         "total_due": Decimal("6.4"), "discount": 0},
    ]


def test_sql_csv_writes_nested_columns_as_json_text(cli, billed_lake):
    q = ("SELECT customer_id, quantity, amount, tiers, dimensions FROM line_items "
         "WHERE customer_id = 'c2' AND kind = 'usage' ORDER BY quantity DESC")
    code, out, err = cli("sql", q, "--lake", billed_lake, "--format", "csv")
    assert code == 0, err
    import csv
    import io

    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["customer_id", "quantity", "amount", "tiers", "dimensions"]
    # January: 170 calls, 100 in tier 1 (flat 5.00), 70 × 0.02 = 1.40; February: 7 calls in tier 1
    assert rows[1][:3] == ["c2", "170", "6.4"] and rows[2][:3] == ["c2", "7", "5"]
    assert json.loads(rows[1][3]) == [
        {"tier": 1, "quantity": 100, "unit_price": 0, "flat_fee": 5, "amount": 5},
        {"tier": 2, "quantity": 70, "unit_price": 0.02, "flat_fee": 0, "amount": 1.4},
    ]
    assert rows[1][4] == "{}" and len(rows) == 3


def test_sql_csv_and_json_write_a_map_as_an_object(cli, billed_lake):
    q = "SELECT MAP {'region': 'eu', 'tier': 'gold'} AS dimensions, [1.50::DECIMAL(10, 2)] AS xs, NULL AS nothing"
    code, out, err = cli("sql", q, "--lake", billed_lake, "--format", "csv")
    assert (code, out) == (0, 'dimensions,xs,nothing\n"{""region"": ""eu"", ""tier"": ""gold""}",[1.5],\n'), err
    code, out, err = cli("sql", q, "--lake", billed_lake, "--format", "json")
    assert (code, json.loads(out)) == (0, [{"dimensions": {"region": "eu", "tier": "gold"}, "xs": [1.5],
                                            "nothing": None}]), err


def test_sql_bad_format_is_refused(cli, billed_lake):
    code, out, err = cli("sql", "SELECT 1", "--lake", billed_lake, "--format", "xml")
    assert code == 2
    assert one_line(err) == "meterbill sql: error: --format: must be table, csv or json, got 'xml'"
