"""The DuckDB side of a lake: a connection set up for bounded memory, with a view per table."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa

from catalog.lake.errors import WarehouseError
from catalog.schemas import PARTITIONS, SCHEMAS, empty


def sql_str(s: str | os.PathLike) -> str:
    """A SQL string literal (for paths in FROM clauses, where DuckDB takes no parameters)."""
    return "'" + str(s).replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duck(lake=None, memory_limit: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up for bounded memory: limit, spill folder, no progress bar."""
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:  # inside Jupyter without ipywidgets DuckDB refuses the setting;
        pass  # the progress bar is off there anyway
    con.execute("SET preserve_insertion_order = false")
    limit = memory_limit or os.environ.get("METERBILL_MEMORY_LIMIT")
    if limit:
        con.execute(f"SET memory_limit = {sql_str(limit)}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if lake is not None:
        con.execute(f"SET temp_directory = {sql_str(lake.tmp_dir / 'duckdb')}")
    return con


def connect_views(lake, temp_directory: str | os.PathLike | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every warehouse table of `lake` (a catalog.lake.Lake) as a view of
    the same name (`catalog.connect` opens the lake first).

    DuckDB spills to `<lake>/warehouse/.tmp/`, or to `temp_directory` (then the connection
    creates nothing in the lake). The view of a table with a damaged file raises, when a query
    reads it, the error that names the file and what to do; the other views work as usual."""
    if temp_directory is None:
        con = duck(lake)
    else:
        con = duck()
        con.execute(f"SET temp_directory = {sql_str(temp_directory)}")
    for table in SCHEMAS:
        if lake.exists(table):
            hive = "true" if table in PARTITIONS else "false"
            try:
                lake._refuse_cut_files(table)
                con.execute(
                    f"CREATE VIEW {sql_ident(table)} AS SELECT * FROM read_parquet("
                    f"{sql_str(lake.table_glob(table))}, hive_partitioning={hive}, union_by_name=true)"
                )
            except (duckdb.Error, WarehouseError) as e:
                damage = e if isinstance(e, WarehouseError) else lake.damage_error(e, [table])
                if damage is None:
                    raise
                one = pa.Table.from_pylist([{}], schema=empty(table).to_arrow().schema)
                con.register(f"__damaged_{table}", one)
                con.execute(f"CREATE VIEW {sql_ident(table)} AS SELECT * FROM __damaged_{table} "
                            f"WHERE error({sql_str(str(damage))}) IS NULL")
        else:
            con.register(f"__empty_{table}", empty(table).to_arrow())
            con.execute(f"CREATE VIEW {sql_ident(table)} AS SELECT * FROM __empty_{table}")
    return con
