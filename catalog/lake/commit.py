"""Writing a lake's tables: write-then-rename, and journalled moves that survive a crash.

`LakeWrites` is the writes part of `catalog.lake.Lake`: a table or partitions replaced whole
(staged, then swapped in with renames, so a crash mid-run leaves the previous outputs intact),
rows appended as new files, and `commit`: staged files moved into the warehouse as one unit
whose journal the next run rolls forward. Several tables as one unit: catalog/lake/tables.py.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import polars as pl

from catalog.lake.lock import LakeLock
from catalog.lake.paths import _safe_name
from catalog.schemas import PARTITIONS


class LakeWrites:
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


    def commit(self, name: str, moves: list[tuple[Path, Path]]) -> None:
        """Move staged files into the warehouse as one unit that survives a crash.

        The list of moves is written to `<warehouse>/.journal/<name>.json` (fsynced) before the
        first rename and deleted after the last; a crash in between is rolled forward by
        `recover_commits()` on the next run. Moves happen in the order given: put the file that
        marks the work as done last. Sources must be in the scratch space, targets in a table.
        """
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
