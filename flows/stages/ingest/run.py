"""An ingest run: its state, its DuckDB connections, and the steps in order (`run_ingest`)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

import duckdb
import polars as pl

from catalog.config import VALUELESS_TYPES, Catalog
from catalog.lake import Lake, duck, sql_str
from flows.stages.ingest.commit import Commit
from flows.stages.ingest.dedupe import Dedupe
from flows.stages.ingest.files import GROUP_BYTES, SEEN, RawFile, requeue_reasons
from flows.stages.ingest.groups import Groups
from flows.stages.ingest.plan import Plan
from flows.stages.ingest.revalidate import Revalidate
from transforms.ingest.dedupe import create_seen_sql
from transforms.ingest.parse import prepare
from transforms.ingest.readers import DEFAULT_BATCH_ROWS
from transforms.ingest.report import FileResult, IngestReport
from transforms.ingest.validate import Rules


class IngestRun(Plan, Revalidate, Groups, Dedupe, Commit):
    """One ingest run over a lake; use `plan()`, `revalidate()`, `ingest_group()` for each group,
    `finish()` (the steps: plan.py, revalidate.py, groups.py and dedupe.py, commit.py)."""

    def __init__(self, lk: Lake, cat: Catalog, as_of: dt.datetime, max_event_age_days: int | None = None,
                 progress: Callable[[str], None] | None = None, memory_limit: str | None = None,
                 ingested_at: dt.datetime | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 group_bytes: int = GROUP_BYTES, requeue: Iterable[str] = ()):
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=dt.timezone.utc)
        self.lk, self.cat = lk, cat
        self.as_of = as_of.astimezone(dt.timezone.utc)
        self._ingested_at = ingested_at.astimezone(dt.timezone.utc) if ingested_at else None
        self.ingested_at = self._ingested_at or self.as_of  # set for real in plan()
        age = cat.settings.max_event_age_days if max_event_age_days is None else int(max_event_age_days)
        valueless = frozenset(n for n, m in cat.meters.items() if m.type in VALUELESS_TYPES)
        self.rules = Rules(self.as_of, age, valueless)
        self.requeue = requeue_reasons(requeue)
        self.progress = progress
        self.memory_limit = memory_limit
        self.batch_rows = batch_rows
        self.group_bytes = group_bytes
        self.files: list[RawFile] = []
        self.results: list[FileResult] = []
        self.run_id: str | None = None
        self.stage: Path | None = None
        self.con: duckdb.DuckDBPyConnection | None = None
        self._json_con: duckdb.DuckDBPyConnection | None = None
        self._lock = None
        self._valid: dict[int, int] = {}
        self._reasons: Counter[str] = Counter()
        self._loaded_dates: set = set()
        self._unremembered: dict[dt.date, list[Path]] = {}  # this run's events files whose keys are not in `seen`
        self._event_files: list[Path] = []
        self._groups = 0
        # earlier versions and quarantined records judged again (see plan and revalidate)
        self._prior: pl.DataFrame | None = None  # ingest_files rows, `__file` their file, `__i` a row index
        self._superseded: set[str] = set()  # source files whose earlier version this run replaces
        self._requeue_plan: pl.DataFrame | None = None  # (filename, source_file, n) that may hold records to judge again
        self._q_files: set[str] = set()  # quarantine files to write again
        self._deltas: dict[int, list[int]] = {}  # ingest_files row (`__i`) -> [accepted, duplicates, quarantined] moves
        self._revalidated: Counter[str] = Counter()
        self._revalidated_accepted = self._revalidated_duplicates = 0

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "IngestRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._close_db()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _close_db(self) -> None:
        for con in (self._json_con, self.con):
            if con is not None:
                con.close()
        self._json_con = self.con = None

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            self.con = duck(self.lk, self.memory_limit)
            prepare(self.con, sorted(self.rules.valueless_meters))
            self.con.execute(f"ATTACH {sql_str(self.stage / 'dedup.duckdb')} AS dd")
            self.con.execute(create_seen_sql(SEEN))
            # quarantined records judged again: those now valid (written: accepted, else duplicates),
            # and those still quarantined under another reason
            self.con.execute("CREATE TEMP TABLE rq_moved (source_file VARCHAR, row_number BIGINT, q_at TIMESTAMPTZ, "
                             "written BOOLEAN)")
            self.con.execute("CREATE TEMP TABLE rq_change (source_file VARCHAR, row_number BIGINT, reason VARCHAR, "
                             "detail VARCHAR)")
        return self.con

    def _json_reader(self) -> duckdb.DuckDBPyConnection:
        """A separate DuckDB for reading .json documents in order (an open reader locks its connection)."""
        if self._json_con is None:
            con = duck(self.lk, self.memory_limit)
            con.execute("SET preserve_insertion_order = true")  # records in file order
            tmp = self.stage / "json-tmp"  # its own spill folder: a second DuckDB in this process
            tmp.mkdir(exist_ok=True)
            con.execute(f"SET temp_directory = {sql_str(tmp)}")
            self._json_con = con
        return self._json_con


def run_ingest(lk: Lake, cat: Catalog, as_of: dt.datetime, max_event_age_days: int | None = None,
               progress: Callable[[str], None] | None = None, *, memory_limit: str | None = None,
               ingested_at: dt.datetime | None = None, requeue: Iterable[str] = ()) -> IngestReport:
    """Ingest every new raw file of the lake, and judge again the quarantined records of the
    clock-dependent reasons and of the reasons in `requeue` (see the module doc).

    `ingested_at` (stamped on every row written) defaults to the wall clock, kept strictly after
    the previous run's; tests pass it to get fixed bytes.
    """
    with IngestRun(lk, cat, as_of, max_event_age_days, progress, memory_limit, ingested_at,
                   requeue=requeue) as run:
        groups = run.plan()
        run.revalidate()
        for group in groups:
            run.ingest_group(group)
        return run.finish()
