"""Reading a lake's tables, and naming the damaged file when a read fails (SPEC §8).

`LakeReads` is the reads part of `catalog.lake.Lake`. Every read first finishes an interrupted
commit (`_recover`, catalog/lake/commit.py).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import duckdb
import polars as pl

from catalog.lake.errors import _BACKUP, _DAMAGE_HINTS, _STATE_HINT, WarehouseError, parquet_damage
from catalog.schemas import PARTITIONS, SCHEMAS, empty

_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, pl.exceptions.PolarsError, duckdb.Error)


class LakeReads:
    def exists(self, table: str) -> bool:
        self._recover(table)
        d = self.table_dir(table)
        return d.is_dir() and any(d.rglob("*.parquet"))

    # ------------------------------------------------------------ reads
    def scan(self, table: str) -> pl.LazyFrame:
        if not self.exists(table):
            return empty(table).lazy()
        self._refuse_cut_files(table)
        # extra_columns: events files of earlier versions also hold a `dedup_key` column
        lf = pl.scan_parquet(self.table_glob(table), hive_partitioning=table in PARTITIONS,
                             schema=SCHEMAS[table] if table not in PARTITIONS else None, extra_columns="ignore")
        if table in PARTITIONS:
            lf = lf.with_columns(pl.col(PARTITIONS[table]).cast(pl.Date))
        return lf.select(list(SCHEMAS[table]))

    def read(self, table: str) -> pl.DataFrame:
        with self.naming_damage([table]):
            return self.scan(table).collect()

    # ------------------------------------------------------------ damaged files
    def _refuse_cut_files(self, table: str) -> None:
        """A file too small to be Parquet (an empty one, which Polars' glob would skip without a
        word) is damaged: say so before anything reads the table."""
        for p, size in self._files(table):
            if size < 12:
                raise self.damaged(p, "empty" if size == 0 else "not a Parquet file, or cut short")

    def damaged(self, path: Path, what: str) -> WarehouseError:
        """The error for a damaged file: its path relative to the lake, what is wrong, what to do."""
        rel = self._rel(path)
        parts = Path(os.path.relpath(path, self.warehouse_dir)).parts
        hint = _STATE_HINT if parts and parts[0] == "_state" else _DAMAGE_HINTS.get(parts[0] if parts else "", _BACKUP)
        return WarehouseError(f"{rel} is damaged ({what}); {hint}")

    def damage_error(self, exc: BaseException, tables=None) -> WarehouseError | None:
        """If a failed read (`exc`) comes from a damaged warehouse file, the error that names it;
        else None. The files the message names are read whole; then every file of `tables`
        (default: all) is checked from its first and last bytes and its footer."""
        if isinstance(exc, WarehouseError) or not isinstance(exc, _READ_ERRORS):
            return None
        wh = os.path.abspath(self.warehouse_dir) + os.sep
        quoted = re.findall(r"'([^']+?\.parquet)'|\"([^\"]+?\.parquet)\"", str(exc))
        named = [Path(a or b) for a, b in quoted if os.path.abspath(a or b).startswith(wh)]
        for p in dict.fromkeys(named):
            what = parquet_damage(p, deep=True)
            if what:
                return self.damaged(p, what)
        for table in (SCHEMAS if tables is None else tables):
            for p, _ in sorted(self._files(table)):
                what = parquet_damage(p)
                if what:
                    return self.damaged(p, what)
        return None

    @contextlib.contextmanager
    def naming_damage(self, tables=None):
        """`with lake.naming_damage():` a read that fails on a damaged warehouse file raises the
        WarehouseError that names it (see damage_error); any other failure passes unchanged."""
        try:
            yield
        except _READ_ERRORS as e:
            err = self.damage_error(e, tables)
            if err is None:
                raise
            raise err from None
