"""Where everything of a lake lives: the one place that builds warehouse paths (SPEC §1).

`LakePaths` is the places part of `catalog.lake.Lake`: folders, table and partition paths, run
state, scratch folders and the raw files. Constructing a lake computes paths only; an
object-store lake's working copy is pulled by `Lake.open` (catalog/lake/mirror.py).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from catalog.lake.mirror import mirror_root
from catalog.schemas import PARTITIONS, SCHEMAS

DEFAULT_LAKE = "data"
_SAFE_TABLE = re.compile(r"^[a-z_]+$")


def resolve_lake(lake: str | os.PathLike | None = None) -> Path:
    """--lake, else $METERBILL_LAKE, else data/."""
    return Path(lake or os.environ.get("METERBILL_LAKE") or DEFAULT_LAKE)


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_remote(lake: str | os.PathLike | None) -> bool:
    """An object-store URL (`s3://bucket/prefix`), not a folder."""
    return isinstance(lake, str) and bool(_URL.match(lake))


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*$")


def _safe_name(name: str) -> str:
    """A file or folder name we generate ourselves: no separators, no '..'."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"unsafe name for a warehouse file or folder: {name!r}")
    return name


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class LakePaths:
    def __init__(self, root: str | os.PathLike | None = None):
        loc = root or os.environ.get("METERBILL_LAKE")
        self.url: str | None = None
        if is_remote(loc):
            # an object-store lake works on a local working copy (catalog/lake/mirror.py), pulled
            # by Lake.open and pushed by push_remote_lakes() when the command has succeeded
            self.url = loc.rstrip("/")
            self.root = mirror_root(self.url)
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

    def _rel(self, p: Path) -> str:
        """A path as people know it: relative to the lake (warehouse/invoices)."""
        try:
            return Path(os.path.relpath(p, self.root)).as_posix()
        except ValueError:
            return str(p)

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
