"""Several unpartitioned tables replaced as one unit: all of them or none (SPEC §7's billing tables).

`LakeTables` is that part of `catalog.lake.Lake`. `write_tables` replaces several unpartitioned
tables all or nothing, under the lake's "tables" lock:

  1. check that every table folder can be replaced (a folder, writable, in a writable
     warehouse), then stage every table whole in `.tmp/tables-<run>/new/<table>/` (fsynced);
  2. write the journal `.journal/tables/<run>.json` (fsynced): from here on the commit is
     decided and a crash is rolled forward;
  3. per table, rename the current folder to `.tmp/tables-<run>/old/<table>` and the new
     one into its place; then delete the journal and the staging folder (the old copies).
A failure in 1 changes nothing; a failure in 2 or 3 is undone at once (the renames done so
far are reversed), so the error can say "nothing was changed". Every reader path
(`exists`, hence `scan`, `read`, `connect`, and the next write) first finishes an
interrupted commit (`recover_tables`): when a journal is there it waits for the lock (a
commit in progress holds it for a few renames; a crashed one released it) and rolls the
journal forward. Staging folders of runs that died before their journal are removed by the
next write_tables. A reader that was already reading when a commit started can still see
one table before and another after it (the files are read when a query runs).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path

import polars as pl

from catalog.lake.commit import _fsync_dir, _fsync_file
from catalog.lake.errors import WarehouseError, _trouble
from catalog.schemas import PARTITIONS


class LakeTables:
    @property
    def _tables_journal_dir(self) -> Path:
        return self.journal_dir / "tables"

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
