"""`meterbill sql`: one read-only query over the warehouse views, printed as a table, csv or json.

Read-only by two locks:

- the statement: exactly one, of DuckDB's statement type SELECT (which covers WITH, FROM, VALUES,
  PIVOT with its values, SHOW, DESCRIBE, SUMMARIZE); COPY, INSERT, CREATE, ATTACH, INSTALL, LOAD,
  SET, PRAGMA, EXPORT, CALL, EXPLAIN (ANALYZE runs its statement) and the rest are refused before
  anything runs;
- the connection: after the views are created, file access is limited to the warehouse folder
  (`allowed_directories` with `enable_external_access = false`), extensions are neither installed
  nor loaded, and the configuration is locked, so a query reads no file elsewhere (the catalogue,
  /etc) and writes none. DuckDB spills to a temporary folder outside the lake, which the command
  removes: nothing is created in the lake (a lake without `warehouse/` shows empty views of the
  declared schemas).

Output: decimals as exact plain numbers without trailing zeros (`13.5`, `0`, never `0E-9`) in
csv and json (read json with `parse_float=Decimal` to keep them exact); instants as ISO-8601 in
UTC; maps and structs as JSON objects, lists as JSON arrays (in csv, as JSON text in the cell).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import os
import sys
import tempfile
from decimal import Decimal

import duckdb

from catalog import Lake
from catalog.lake import sql_str
from flows.stages.common import UsageError

FORMATS = ("table", "csv", "json")
QUERY_KINDS = "SELECT, WITH, FROM, VALUES, SHOW, DESCRIBE or SUMMARIZE"
CHUNK = 10_000  # rows fetched and printed at a time


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def read_only_statement(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """The query's text if it is exactly one SELECT statement; else a UsageError."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise UsageError(f"sql: {_one_line(e)}") from None
    if not statements:
        raise UsageError("sql: no query given")
    if len(statements) != 1:
        raise UsageError(f"sql: one statement at a time (got {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise UsageError(f"sql is read-only: {kind.name} is refused (only one query: {QUERY_KINDS})")
    return statements[0].query


def lock_down(con: duckdb.DuckDBPyConnection, lk: Lake) -> None:
    """No file outside the warehouse, no extension, no change of configuration from here on."""
    con.execute("SET TimeZone = 'UTC'")
    wh = lk.warehouse_dir
    if wh.is_dir():  # as the views name it and as it resolves (through symbolic links)
        dirs = sorted({os.path.abspath(wh) + os.sep, str(wh.resolve()) + os.sep})
        con.execute(f"SET allowed_directories = [{', '.join(sql_str(d) for d in dirs)}]")
    for setting in ("autoinstall_known_extensions = false", "autoload_known_extensions = false",
                    "enable_external_access = false", "lock_configuration = true"):
        con.execute(f"SET {setting}")


@contextlib.contextmanager
def read_only_connection(lk: Lake):
    """A connection with the warehouse views, locked down; spills go to a temporary folder outside the lake."""
    from catalog import connect

    with tempfile.TemporaryDirectory(prefix="meterbill-sql-") as scratch:
        con = connect(lk, temp_directory=scratch)
        try:
            lock_down(con, lk)
            yield con
        finally:
            con.close()


def run_sql(lk: Lake, query: str, fmt: str, out=None) -> None:
    """Run one read-only query and print it in `fmt` (table, csv or json)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: must be table, csv or json, got {fmt!r}")
    with read_only_connection(lk) as con:
        text = read_only_statement(con, query)
        try:
            if fmt == "table":
                import polars as pl

                df = con.sql(text).pl()
                with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=60, tbl_width_chars=200):
                    if out is not None:
                        out.print(str(df), markup=False)
                    else:
                        print(df)
            else:
                (_write_csv if fmt == "csv" else _write_json)(con.execute(text), sys.stdout)
        except duckdb.PermissionException as e:
            raise UsageError(f"sql: {_one_line(e)} (sql reads only the warehouse's files)") from None
        except duckdb.Error as e:
            damage = lk.damage_error(e)  # a damaged warehouse file is named, with what to do
            if damage is not None:
                raise damage from None
            raise UsageError(f"sql: {_one_line(e)}") from None


def _columns(res: duckdb.DuckDBPyConnection) -> list[str]:
    return [d[0] for d in res.description]


def _rows(res: duckdb.DuckDBPyConnection):
    while chunk := res.fetchmany(CHUNK):
        yield from chunk


def _write_csv(res: duckdb.DuckDBPyConnection, stream) -> None:
    w = csv.writer(stream, lineterminator="\n")
    w.writerow(_columns(res))
    for row in _rows(res):
        w.writerow([_cell(v) for v in row])


def _write_json(res: duckdb.DuckDBPyConnection, stream) -> None:
    names = [json.dumps(c, ensure_ascii=False) for c in _columns(res)]
    first = True
    for row in _rows(res):
        stream.write(("[\n  " if first else ",\n  ") + "{" + ", ".join(
            f"{k}: {_json(v)}" for k, v in zip(names, row)) + "}")
        first = False
    stream.write("[]\n" if first else "\n]\n")


def plain(d: Decimal) -> str:
    """An exact decimal in plain notation without trailing zeros: 13.5, 0, 100 (never 0E-9 or 1E+2)."""
    if d == 0:
        return "0"
    return f"{d.normalize():f}"


def _cell(v) -> str:
    """A csv cell: nothing for NULL, nested values as JSON text."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list, tuple)):
        return _json(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return _scalar(v)


def _scalar(v) -> str:
    if isinstance(v, Decimal):
        return plain(v) if v.is_finite() else str(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def _json(v) -> str:
    """JSON text of a DuckDB value: exact numbers, ISO-8601 instants, objects for maps and structs."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    if isinstance(v, Decimal):
        return plain(v) if v.is_finite() else "null"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_json(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_json(x) for x in v) + "]"
    return json.dumps(v if isinstance(v, str) else _scalar(v), ensure_ascii=False)
