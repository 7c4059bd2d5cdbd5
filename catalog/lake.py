"""Where every table lives, how it is written (atomically), and the DuckDB view of the lake.

This is the only module that builds warehouse paths. Writes go to a staging folder first and
are moved into place with renames, so a crash mid-run leaves the previous outputs intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from catalog.schemas import PARTITIONS, SCHEMAS, empty

DEFAULT_LAKE = "data"
_SAFE_TABLE = re.compile(r"^[a-z_]+$")


class WarehouseError(Exception):
    """A warehouse folder or file that cannot be written or read. The message is one line for
    people: the path relative to the lake, what is wrong with it, and what to do."""


def _trouble(e: OSError) -> tuple[str, str]:
    """(what is wrong, what to do) for an operating-system error on a warehouse path."""
    n = e.errno
    if n in (errno.EACCES, errno.EPERM):
        return "permission denied", "fix the folder's permissions"
    if n in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return e.strerror or "no space left", "free some space"
    if n == errno.EROFS:
        return e.strerror or "read-only file system", "make the file system writable"
    if n in (errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
        return e.strerror or str(e), "move what is in the way"
    if n == errno.EIO:
        return e.strerror or "input/output error", "check the disk"
    return e.strerror or str(e), "fix the cause"


def resolve_lake(lake: str | os.PathLike | None = None) -> Path:
    """--lake, else $METERBILL_LAKE, else data/."""
    return Path(lake or os.environ.get("METERBILL_LAKE") or DEFAULT_LAKE)


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_remote(lake: str | os.PathLike | None) -> bool:
    """An object-store URL (`s3://bucket/prefix`), not a folder."""
    return isinstance(lake, str) and bool(_URL.match(lake))


def sql_str(s: str | os.PathLike) -> str:
    """A SQL string literal (for paths in FROM clauses, where DuckDB takes no parameters)."""
    return "'" + str(s).replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# What to do about a damaged file of each table (SPEC §8: the error says it).
_BACKUP = "restore it from a backup"
_DAMAGE_HINTS = {
    "events": f"{_BACKUP} (events are the record of accepted raw events: nothing rebuilds them)",
    "quarantine": f"{_BACKUP} (it is the record of rejected raw records)",
    "ingest_files": f"{_BACKUP} (without it, ingest would take its raw files for new ones)",
    "usage_hourly": "delete it and warehouse/_state/meter.json, then run `meterbill meter` (it rebuilds "
                    "usage_hourly from the events)",
    "invoices": f"{_BACKUP} (bill reads final invoices back and never recomputes them)",
    "line_items": f"{_BACKUP} (bill reads final invoices back and never recomputes them)",
    "credit_ledger": f"{_BACKUP} (bill reads final invoices back and never recomputes them)",
    "unbilled_usage": "delete it and run `meterbill bill` (every bill makes it again)",
    "reconciliation": "delete it and run `meterbill bill` (every bill makes it again)",
    "alerts_fired": f"{_BACKUP} (without it, alerts that fired would fire again)",
    "deliveries": f"{_BACKUP} (it is the record of notifications sent)",
}
_STATE_HINT = "delete it (a cache: the next run makes it again)"
_PARQUET_MAGIC = b"PAR1"
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, pl.exceptions.PolarsError, duckdb.Error)


def parquet_damage(path: Path, deep: bool = False) -> str | None:
    """What is wrong with a Parquet file (None when nothing is): empty, not Parquet or cut short
    (checked from its first and last bytes), an unreadable footer, or (`deep`) unreadable data."""
    import pyarrow.parquet as pq

    try:
        size = path.stat().st_size
        if size == 0:
            return "empty"
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if size < 12 or head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
        return "not a Parquet file, or cut short"
    try:
        meta = pq.read_metadata(path)
        if deep:
            pf = pq.ParquetFile(path)
            for i in range(meta.num_row_groups):
                pf.read_row_group(i)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several kinds)
        return f"unreadable {'data' if deep else 'footer'}: {' '.join(str(e).split())[:120]}"
    return None


class Lake:
    def __init__(self, root: str | os.PathLike | None = None):
        loc = root or os.environ.get("METERBILL_LAKE")
        self.url: str | None = None
        if is_remote(loc):
            # an object-store lake works on a local mirror (see Mirror): pulled here, pushed by
            # push_remote_lakes() when the command has succeeded
            self.url = loc.rstrip("/")
            mirror = _REMOTE_LAKES.get(self.url) or Mirror(self.url)
            mirror.pull()
            _REMOTE_LAKES[self.url] = mirror
            self.root = mirror.local
        else:
            self.root = resolve_lake(root)

    # ------------------------------------------------------------ places
    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def warehouse_dir(self) -> Path:
        return self.root / "warehouse"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space for DuckDB spills and staged writes (same filesystem as the warehouse)."""
        p = self.warehouse_dir / ".tmp"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def table_dir(self, table: str) -> Path:
        if table not in SCHEMAS or not _SAFE_TABLE.match(table):
            raise KeyError(f"unknown table {table!r}")
        return self.warehouse_dir / table

    def table_glob(self, table: str) -> str:
        return str(self.table_dir(table) / "**" / "*.parquet")

    def exists(self, table: str) -> bool:
        self._recover(table)
        d = self.table_dir(table)
        return d.is_dir() and any(d.rglob("*.parquet"))

    def partition_dir(self, table: str, value) -> Path:
        return self.table_dir(table) / f"{PARTITIONS[table]}={value}"

    # ------------------------------------------------------------ run state (watermarks)
    def _state_path(self, name: str) -> Path:
        if not _SAFE_TABLE.match(name):
            raise KeyError(f"bad state name {name!r}")
        return self.warehouse_dir / "_state" / f"{name}.json"

    def state_dir(self, name: str) -> Path:
        """A folder of run state (a cache) under `_state/`."""
        if not _SAFE_TABLE.match(name):
            raise KeyError(f"bad state name {name!r}")
        return self.warehouse_dir / "_state" / name

    def read_state(self, name: str) -> dict | None:
        p = self._state_path(name)
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None

    def write_state(self, name: str, state: dict) -> None:
        p = self._state_path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, p)

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
    def _files(self, table: str):
        """(path, size) of every Parquet file of a table, from the folder listing alone."""
        stack = [self.table_dir(table)]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.name.endswith(".parquet"):
                    yield Path(e.path), e.stat().st_size

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

    # ------------------------------------------------------------ writes
    def _staging(self) -> Path:
        p = self.tmp_dir / f"stage-{uuid.uuid4().hex}"
        p.mkdir(parents=True)
        return p

    def _swap(self, staged: Path, target: Path) -> None:
        """Move `staged` to `target`, replacing it; the old copy is kept until the new one is in."""
        target.parent.mkdir(parents=True, exist_ok=True)
        trash = target.with_name(target.name + ".old")
        if trash.exists():
            shutil.rmtree(trash)
        if target.exists():
            os.rename(target, trash)
        os.rename(staged, target)
        if trash.exists():
            shutil.rmtree(trash)

    def _recover(self, table: str) -> None:
        """A crash between the two renames of _swap leaves `<table>.old`: put it back. An
        interrupted commit of several tables (`write_tables`) is finished first."""
        self.recover_tables()
        d = self.warehouse_dir / table
        trash = d.with_name(table + ".old")
        if trash.exists() and not d.exists():
            os.rename(trash, d)

    def write(self, table: str, df: pl.DataFrame) -> None:
        """Replace the whole table atomically."""
        from catalog.schemas import conform

        df = conform(table, df)
        staged = self._staging()
        try:
            if table in PARTITIONS:
                col = PARTITIONS[table]
                for (value,), part in df.partition_by(col, as_dict=True, maintain_order=True).items():
                    p = staged / f"{col}={value}"
                    p.mkdir()
                    part.drop(col).write_parquet(p / "part-0.parquet")
            else:
                df.write_parquet(staged / "part-0.parquet")
            self._swap(staged, self.table_dir(table))
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    # ------------------------------------------------------------ several tables as one unit
    #
    # write_tables replaces several unpartitioned tables (the billing tables, SPEC §7) all or
    # nothing, under the lake's "tables" lock:
    #   1. check that every table folder can be replaced (a folder, writable, in a writable
    #      warehouse), then stage every table whole in `.tmp/tables-<run>/new/<table>/` (fsynced);
    #   2. write the journal `.journal/tables/<run>.json` (fsynced): from here on the commit is
    #      decided and a crash is rolled forward;
    #   3. per table, rename the current folder to `.tmp/tables-<run>/old/<table>` and the new
    #      one into its place; then delete the journal and the staging folder (the old copies).
    # A failure in 1 changes nothing; a failure in 2 or 3 is undone at once (the renames done so
    # far are reversed), so the error can say "nothing was changed". Every reader path
    # (`exists`, hence `scan`, `read`, `connect`, and the next write) first finishes an
    # interrupted commit (`recover_tables`): when a journal is there it waits for the lock (a
    # commit in progress holds it for a few renames; a crashed one released it) and rolls the
    # journal forward. Staging folders of runs that died before their journal are removed by the
    # next write_tables. A reader that was already reading when a commit started can still see
    # one table before and another after it (the files are read when a query runs).

    @property
    def _tables_journal_dir(self) -> Path:
        return self.journal_dir / "tables"

    def _rel(self, p: Path) -> str:
        """A path as people know it: relative to the lake (warehouse/invoices)."""
        try:
            return Path(os.path.relpath(p, self.root)).as_posix()
        except ValueError:
            return str(p)

    def _failed(self, p: Path, e: OSError, verb: str, outcome: str = "nothing was changed") -> WarehouseError:
        what, todo = _trouble(e)
        return WarehouseError(f"cannot write {self._rel(p)}: {what}; {todo} and run `meterbill {verb}` again; {outcome}")

    def _check_replaceable(self, target: Path, verb: str) -> None:
        """Refuse (WarehouseError, nothing changed) a table folder that a commit could not replace."""
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise WarehouseError(f"cannot write {self._rel(target)}: it is a file, not a folder; move it away and "
                                 f"run `meterbill {verb}` again; nothing was changed")
        folders = [target.parent] + ([target, *(p for p in target.rglob("*") if p.is_dir())] if target.is_dir() else [])
        for d in folders:
            if not os.access(d, os.W_OK | os.X_OK):
                raise self._failed(d, PermissionError(errno.EACCES, "Permission denied"), verb)

    def write_tables(self, tables: dict[str, pl.DataFrame], verb: str = "bill") -> None:
        """Replace several unpartitioned tables as one unit: all of them or none (see above).

        Raises WarehouseError naming the folder that failed and what to do; `verb` is the
        command the message tells people to run again."""
        from catalog.schemas import conform

        for table in tables:
            if table in PARTITIONS:
                raise ValueError(f"{table} is partitioned: use write() or replace_partitions()")
            self.table_dir(table)  # KeyError for an unknown table
        names = list(tables)
        with self.lock("tables", wait=True):
            self._recover_tables_locked()
            for dead in self.tmp_dir.glob("tables-*"):  # runs that died before their journal
                shutil.rmtree(dead, ignore_errors=True)
            for t in names:
                self._check_replaceable(self.table_dir(t), verb)
            run = uuid.uuid4().hex
            stage = self.tmp_dir / f"tables-{run}"
            journal = self._tables_journal_dir / f"{run}.json"
            try:
                try:
                    (stage / "old").mkdir(parents=True)
                    for t in names:
                        d = stage / "new" / t
                        d.mkdir(parents=True)
                        f = d / "part-0.parquet"
                        conform(t, tables[t]).write_parquet(f)
                        _fsync_file(f)
                        _fsync_dir(d)
                    _fsync_dir(stage / "new")
                except OSError as e:
                    raise WarehouseError(f"cannot write {self._rel(self.tmp_dir)} (the scratch space): "
                                         f"{_trouble(e)[0]}; {_trouble(e)[1]} and run `meterbill {verb}` again; "
                                         "nothing was changed") from None
                self._write_journal(journal, stage, names, verb)
                self._commit_tables(journal, stage, names, verb)
            finally:
                if not journal.exists():
                    shutil.rmtree(stage, ignore_errors=True)

    def _write_journal(self, journal: Path, stage: Path, names: list[str], verb: str) -> None:
        part = journal.with_name(journal.name + ".tmp")
        try:
            journal.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "w", encoding="utf-8") as f:
                json.dump({"stage": os.path.relpath(stage, self.warehouse_dir), "tables": names}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, journal)
            _fsync_dir(journal.parent)
        except OSError as e:
            part.unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
            raise self._failed(journal.parent, e, verb) from None

    def _swap_in(self, stage: Path, table: str) -> None:
        """Roll one table of a commit forward: the current folder to old/, the new one in (a no-op
        when done). Safe to repeat after a crash at any point."""
        new, old, target = stage / "new" / table, stage / "old" / table, self.warehouse_dir / table
        if not new.exists():
            return
        if target.exists() or target.is_symlink():
            os.rename(target, old)
        os.rename(new, target)

    def _swap_out(self, stage: Path, table: str) -> None:
        """Undo `_swap_in` of one table (from any point of it)."""
        new, old, target = stage / "new" / table, stage / "old" / table, self.warehouse_dir / table
        if not new.exists() and target.exists():
            os.rename(target, new)
        if old.exists() and not target.exists():
            os.rename(old, target)

    def _commit_tables(self, journal: Path, stage: Path, names: list[str], verb: str) -> None:
        current = names[0]
        try:
            for current in names:
                self._swap_in(stage, current)
            _fsync_dir(self.warehouse_dir)
        except BaseException as e:
            try:
                for t in reversed(names):
                    self._swap_out(stage, t)
                _fsync_dir(self.warehouse_dir)
                journal.unlink()
                _fsync_dir(journal.parent)
            except OSError:  # the journal stays: the next command rolls the commit forward
                if isinstance(e, OSError):
                    raise self._failed(self.warehouse_dir / current, e, verb,
                                       "the next command finishes the commit") from None
                raise
            if isinstance(e, OSError):
                raise self._failed(self.warehouse_dir / current, e, verb) from None
            raise
        journal.unlink()
        _fsync_dir(journal.parent)
        shutil.rmtree(stage, ignore_errors=True)  # the old copies

    def recover_tables(self) -> list[str]:
        """Finish commits of `write_tables` that a crash interrupted (roll forward); return the
        tables they replaced. Cheap when there is none (one listing of an empty folder)."""
        try:
            if not any(self._tables_journal_dir.iterdir()):
                return []
        except (FileNotFoundError, NotADirectoryError):
            return []
        lock = self.lock("tables", wait=True)
        if lock.held_here():  # this process is committing: its own journal, not a crash
            return []
        try:
            lock.acquire()
        except OSError as e:
            raise WarehouseError(f"cannot finish the interrupted commit in {self._rel(self._tables_journal_dir)}: "
                                 f"cannot take its lock ({_trouble(e)[0]}); run any meterbill command with "
                                 "write access to the lake") from None
        try:
            return self._recover_tables_locked()
        finally:
            lock.release()

    def _recover_tables_locked(self) -> list[str]:
        jdir = self._tables_journal_dir
        if not jdir.is_dir():
            return []
        done: list[str] = []
        for part in jdir.glob("*.json.tmp"):  # never completed: no rename had started
            shutil.rmtree(self.tmp_dir / f"tables-{part.name.split('.')[0]}", ignore_errors=True)
            part.unlink(missing_ok=True)
        for journal in sorted(jdir.glob("*.json")):
            body = json.loads(journal.read_text(encoding="utf-8"))
            stage = self.warehouse_dir / body["stage"]
            for t in body["tables"]:
                try:
                    self._swap_in(stage, t)
                except OSError as e:
                    what, todo = _trouble(e)
                    raise WarehouseError(
                        f"cannot write {self._rel(self.warehouse_dir / t)}: {what}; {todo} and run any meterbill "
                        f"command again (it finishes the interrupted commit {self._rel(journal)})") from None
            _fsync_dir(self.warehouse_dir)
            journal.unlink()
            _fsync_dir(jdir)
            shutil.rmtree(stage, ignore_errors=True)
            done.extend(body["tables"])
        return done

    def replace_partitions(self, table: str, df: pl.DataFrame, values: list | None = None) -> None:
        """Replace only the partitions named by `values` (default: those present in df).

        Each partition folder is written whole and swapped in, so stale files never remain;
        a named partition that df has no rows for is removed.
        """
        from catalog.schemas import conform

        col = PARTITIONS[table]
        df = conform(table, df)
        parts = df.partition_by(col, as_dict=True, maintain_order=True)
        values = list({k[0] for k in parts}) if values is None else values
        for value in values:
            target = self.partition_dir(table, value)
            part = parts.get((value,))
            if part is None or part.height == 0:
                if target.exists():
                    shutil.rmtree(target)
                continue
            staged = self._staging()
            try:
                part.drop(col).write_parquet(staged / "part-0.parquet")
                self._swap(staged, target)
            finally:
                shutil.rmtree(staged, ignore_errors=True)

    def append(self, table: str, df: pl.DataFrame, name: str | None = None) -> None:
        """Add rows as new files (one per partition), without touching existing ones."""
        from catalog.schemas import conform

        df = conform(table, df)
        if df.height == 0:
            return
        name = name or uuid.uuid4().hex
        if table in PARTITIONS:
            col = PARTITIONS[table]
            for (value,), part in df.partition_by(col, as_dict=True, maintain_order=True).items():
                d = self.partition_dir(table, value)
                d.mkdir(parents=True, exist_ok=True)
                tmp = self.tmp_dir / f"{name}-{value}.parquet.tmp"
                part.drop(col).write_parquet(tmp)
                os.replace(tmp, d / f"{name}.parquet")
        else:
            d = self.table_dir(table)
            d.mkdir(parents=True, exist_ok=True)
            tmp = self.tmp_dir / f"{name}.parquet.tmp"
            df.write_parquet(tmp)
            os.replace(tmp, d / f"{name}.parquet")


    # ------------------------------------------------------------ ingestion support
    # (raw files, scratch folders, recoverable multi-file commits, a writer lock)
    def raw_files(self) -> list[tuple[str, Path]]:
        """Every regular file under raw/ (any depth) as (path relative to raw/ in POSIX form, path),
        sorted by the relative path.

        Hidden files and folders (name starting with '.' or '_', as in Hadoop and Spark:
        `_SUCCESS`, `_temporary/`) are left out; a symbolic link is followed only if it resolves
        inside raw/.
        """
        root = self.raw_dir
        if not root.is_dir():
            return []
        out: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
            for fn in filenames:
                p = Path(dirpath) / fn
                if fn.startswith((".", "_")) or (p.is_symlink() and not _inside(p.resolve(), root.resolve())):
                    continue
                if p.is_file():
                    out.append((p.relative_to(root).as_posix(), p))
        out.sort(key=lambda t: t[0])
        return out

    def stage_dir(self, name: str, create: bool = True) -> Path:
        """A private scratch folder `<warehouse>/.tmp/<name>` (same filesystem as the tables)."""
        p = self.tmp_dir / _safe_name(name)
        if create:
            p.mkdir(parents=True, exist_ok=True)
        return p

    def stage_dirs(self, prefix: str) -> list[Path]:
        """Existing scratch folders whose name starts with `prefix`."""
        _safe_name(prefix)
        return sorted(p for p in self.tmp_dir.iterdir() if p.is_dir() and p.name.startswith(prefix))

    def table_file(self, table: str, name: str, partition=None) -> Path:
        """Where a new file `<name>.parquet` of `table` goes (in its partition folder if given)."""
        d = self.table_dir(table) if partition is None else self.partition_dir(table, partition)
        return d / f"{_safe_name(name)}.parquet"

    def partition_files(self, table: str, values) -> list[Path]:
        """The Parquet files of the named partitions of `table` (only those; absent ones are skipped)."""
        self._recover(table)
        files: list[Path] = []
        for v in values:
            d = self.partition_dir(table, v)
            if d.is_dir():
                files.extend(sorted(d.glob("*.parquet")))
        return files

    def partition_listing(self, table: str) -> dict[str, list[tuple[str, int, int]]] | None:
        """Partition value -> [(file name, size, mtime_ns)] of a partitioned table's Parquet files
        (files are replaced, never rewritten in place, so these say when one changed); None when
        a file is not in a partition folder."""
        self._recover(table)
        root, prefix = self.table_dir(table), f"{PARTITIONS[table]}="
        out: dict[str, list[tuple[str, int, int]]] = {}
        for f in root.rglob("*.parquet"):
            if f.parent.parent != root or not f.parent.name.startswith(prefix):
                return None
            st = f.stat()
            out.setdefault(f.parent.name.removeprefix(prefix), []).append((f.name, st.st_size, st.st_mtime_ns))
        return out

    @property
    def journal_dir(self) -> Path:
        return self.warehouse_dir / ".journal"

    def commit(self, name: str, moves: list[tuple[Path, Path]]) -> None:
        """Move staged files into the warehouse as one unit that survives a crash.

        The list of moves is written to `<warehouse>/.journal/<name>.json` (fsynced) before the
        first rename and deleted after the last; a crash in between is rolled forward by
        `recover_commits()` on the next run. Moves happen in the order given: put the file that
        marks the work as done last. Sources must be in the scratch space, targets in a table.
        """
        import json

        wh = os.path.abspath(self.warehouse_dir)
        tmp = os.path.abspath(self.tmp_dir)
        for src, dst in moves:
            s, d = os.path.abspath(src), os.path.abspath(dst)
            if not s.startswith(tmp + os.sep) or not d.startswith(wh + os.sep) or d.startswith(tmp + os.sep):
                raise ValueError(f"refusing to move {src} to {dst}: outside the scratch space or the warehouse")
        jdir = self.journal_dir
        jdir.mkdir(parents=True, exist_ok=True)
        journal = jdir / f"{_safe_name(name)}.json"
        body = {"name": name, "moves": [[os.path.relpath(s, wh), os.path.relpath(d, wh)] for s, d in moves]}
        part = jdir / f"{_safe_name(name)}.json.tmp"
        with open(part, "w", encoding="utf-8") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, journal)
        _fsync_dir(jdir)
        self._apply_journal(journal)

    def _apply_journal(self, journal: Path) -> list[str]:
        """Do the moves a journal still lists; return targets whose staged source went missing."""
        import json

        wh = self.warehouse_dir
        body = json.loads(journal.read_text(encoding="utf-8"))
        lost: list[str] = []
        parents: set[Path] = set()
        for s, d in body["moves"]:
            src, dst = wh / s, wh / d
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                parents.add(dst.parent)
            elif not dst.exists():
                lost.append(d)
        for p in parents:
            _fsync_dir(p)
        journal.unlink()
        return lost

    def recover_commits(self) -> list[str]:
        """Finish commits that a crash interrupted (roll forward); return the names finished."""
        jdir = self.journal_dir
        if not jdir.is_dir():
            return []
        for unfinished in jdir.glob("*.json.tmp"):
            unfinished.unlink()  # the journal was never complete: no move had started
        done = []
        for journal in sorted(jdir.glob("*.json")):
            lost = self._apply_journal(journal)
            if lost:
                import warnings

                warnings.warn(f"commit {journal.stem}: staged files were missing for {lost}", stacklevel=2)
            done.append(journal.stem)
        return done

    def lock(self, name: str, wait: bool = False) -> "LakeLock":
        """`with lake.lock("ingest"):` one writer of a kind at a time (RuntimeError if taken;
        with `wait`, block until it is free)."""
        return LakeLock(self.warehouse_dir / ".locks" / f"{_safe_name(name)}.lock", wait=wait)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*$")


def _safe_name(name: str) -> str:
    """A file or folder name we generate ourselves: no separators, no '..'."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"unsafe name for a warehouse file or folder: {name!r}")
    return name


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _fsync_file(p: Path) -> None:
    with open(p, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_HELD: set[str] = set()  # lock files this process holds (a flock does not exclude its own process)


class LakeLock:
    """An exclusive advisory lock (flock) on a file, non-blocking unless `wait`; usable as a
    context manager."""

    def __init__(self, path: Path, wait: bool = False):
        self.path = path
        self.wait = wait
        self.fd: int | None = None

    def held_here(self) -> bool:
        return os.path.abspath(self.path) in _HELD

    def acquire(self) -> "LakeLock":
        import fcntl

        if self.fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            raise RuntimeError(f"another {self.path.stem} run holds {self.path}") from None
        self.fd = fd
        _HELD.add(os.path.abspath(self.path))
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            _HELD.discard(os.path.abspath(self.path))
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "LakeLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------ object storage (s3://)
#
# Design: a local working copy synchronised with the bucket. Every engine of meterbill (DuckDB
# COPY, Polars, the ingest journal and locks) keeps working on plain files with real atomic
# renames; the bucket is the system of record. `pull()` makes the mirror equal to the bucket
# (downloads new or changed objects by ETag, re-downloads files changed locally since, deletes
# local files the bucket no longer has); `push()` uploads the warehouse files that changed and
# deletes the warehouse objects that are gone, `_state/` files last. A command that fails pushes
# nothing, and the next pull puts the mirror back to the bucket's state. Object stores have no
# atomic rename: during a push a reader of the bucket can see a table half old, half new; one
# writer at a time (the lake's flock locks only guard one machine).

_REMOTE_LAKES: dict[str, "Mirror"] = {}
_MANIFEST = ".meterbill-mirror.json"
_NOT_SYNCED = ("warehouse/.tmp/", "warehouse/.locks/", _MANIFEST)
_PUSHED = ("warehouse/", "reports/")


def object_store(url: str):
    """An fsspec filesystem for `url`; for s3:// the endpoint is $METERBILL_S3_ENDPOINT or
    $AWS_ENDPOINT_URL, credentials the usual AWS_* variables (or the machine's role)."""
    import fsspec

    scheme = url.split("://", 1)[0]
    opts: dict = {"skip_instance_cache": True}
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("METERBILL_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        opts["use_listings_cache"] = False
        if endpoint:
            opts["endpoint_url"] = endpoint
        scheme = "s3"
    return fsspec.filesystem(scheme, **opts)


def mirror_root(url: str) -> Path:
    """Where the working copy of `url` lives: $METERBILL_CACHE/lakes/<scheme>/<bucket>/<prefix>
    (default ~/.cache/meterbill)."""
    scheme, rest = url.split("://", 1)
    cache = Path(os.environ.get("METERBILL_CACHE") or Path.home() / ".cache" / "meterbill")
    parts = [p for p in rest.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"--lake: {url!r} is not a bucket/prefix URL")
    return cache / "lakes" / scheme / Path(*parts)


class Mirror:
    """A local working copy of an object-store lake (see the design note above)."""

    def __init__(self, url: str, local: Path | None = None):
        self.url = url.rstrip("/")
        self.prefix = self.url.split("://", 1)[1].strip("/")
        self.fs = object_store(self.url)
        self.local = local or mirror_root(self.url)

    def _remote(self) -> dict[str, dict]:
        out = {}
        for key, info in self.fs.find(self.prefix, detail=True).items():
            if info.get("type") == "directory":
                continue
            rel = key[len(self.prefix):].lstrip("/")
            if rel and not rel.endswith("/"):
                out[rel] = {"etag": str(info.get("ETag") or info.get("etag") or info.get("mtime") or ""),
                            "size": int(info.get("size") or 0)}
        return out

    def _manifest(self) -> dict[str, dict]:
        p = self.local / _MANIFEST
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    def _save(self, man: dict) -> None:
        p = self.local / _MANIFEST
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(man, sort_keys=True), encoding="utf-8")
        os.replace(tmp, p)

    def _local(self, under: tuple[str, ...] | None = None) -> dict[str, Path]:
        out = {}
        if not self.local.is_dir():
            return out
        for p in self.local.rglob("*"):
            if p.is_file():
                rel = p.relative_to(self.local).as_posix()
                if not rel.startswith(_NOT_SYNCED) and (under is None or rel.startswith(under)):
                    out[rel] = p
        return out

    @staticmethod
    def _stat(p: Path) -> list[int]:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]

    def pull(self) -> dict:
        """Make the working copy equal to the bucket; returns counts of files fetched and removed."""
        self.local.mkdir(parents=True, exist_ok=True)
        remote, man = self._remote(), self._manifest()
        fetched = removed = 0
        for rel, r in remote.items():
            if rel.startswith(_NOT_SYNCED):
                continue
            lp, m = self.local / rel, man.get(rel)
            if m and m["etag"] == r["etag"] and lp.is_file() and self._stat(lp) == m["stat"]:
                continue
            lp.parent.mkdir(parents=True, exist_ok=True)
            tmp = lp.with_name(f".{lp.name}.{uuid.uuid4().hex}.part")
            self.fs.get_file(f"{self.prefix}/{rel}", str(tmp))
            os.replace(tmp, lp)
            man[rel] = {"etag": r["etag"], "stat": self._stat(lp)}
            fetched += 1
        for rel, lp in self._local().items():
            if rel not in remote:
                lp.unlink()
                man.pop(rel, None)
                removed += 1
        for rel in [r for r in man if r not in remote]:
            man.pop(rel)
        self._save(man)
        return {"fetched": fetched, "removed": removed}

    def push(self) -> dict:
        """Upload the warehouse (and reports) files that changed, then delete the objects that are gone."""
        remote, man = self._remote(), self._manifest()
        local = self._local(_PUSHED)
        changed = [rel for rel, lp in local.items()
                   if rel not in remote or rel not in man or man[rel]["stat"] != self._stat(lp)
                   or man[rel]["etag"] != remote[rel]["etag"]]
        changed.sort(key=lambda rel: (rel.startswith("warehouse/_state/"), rel))  # watermarks last
        for rel in changed:
            key = f"{self.prefix}/{rel}"
            self.fs.put_file(str(local[rel]), key)
            info = self.fs.info(key)
            man[rel] = {"etag": str(info.get("ETag") or info.get("etag") or info.get("mtime") or ""),
                        "stat": self._stat(local[rel])}
        gone = sorted(rel for rel in remote if rel.startswith(_PUSHED) and not rel.startswith(_NOT_SYNCED)
                      and rel not in local)
        if gone:
            self.fs.rm([f"{self.prefix}/{rel}" for rel in gone])
        for rel in gone:
            man.pop(rel, None)
        self._save(man)
        return {"uploaded": len(changed), "deleted": len(gone)}


def push_remote_lakes() -> dict[str, dict]:
    """Push every object-store lake opened in this process (the CLI calls it when a command succeeded)."""
    return {url: m.push() for url, m in list(_REMOTE_LAKES.items())}


def forget_remote_lakes() -> None:
    _REMOTE_LAKES.clear()


def duck(lake: Lake | None = None, memory_limit: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
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


def connect(lake: str | os.PathLike | Lake | None = None,
            temp_directory: str | os.PathLike | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every warehouse table as a view of the same name.

    DuckDB spills to `<lake>/warehouse/.tmp/`, or to `temp_directory` (then the connection
    creates nothing in the lake). The view of a table with a damaged file raises, when a query
    reads it, the error that names the file and what to do; the other views work as usual."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
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
