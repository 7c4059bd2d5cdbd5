"""The ingest flow: `<lake>/raw/**` -> `events`, `quarantine`, `ingest_files` (SPEC §2, §7).

`run_ingest` does the work; `ingest_flow` wraps the same steps in coarse Prefect tasks (plan,
revalidate when there are quarantined records to judge again, one task per batch of files,
commit) and publishes the report as the artifact "ingest-report".

How a run goes
--------------
1. plan: take the lake's ingest lock; finish any interrupted commit (`Lake.recover_commits`);
   delete scratch folders of runs that died before committing; list raw files in sorted path
   order; hash each (sha256); a file whose hash is in `ingest_files` (or repeats an earlier
   file of this run) is skipped. A file whose size, mtime, ctime and inode are those recorded
   with its hash by an earlier run (`_state/raw_hashes.json`) keeps that hash without being
   read again: the landing zone is not re-read every hour (`known_hashes`). A path ingested
   before with other bytes is a new version: it replaces the old one in quarantine and
   ingest_files. The quarantined records to judge again are found (transforms/ingest/requeue.py:
   the clock-dependent reasons when the run's clock changes their verdict, and the reasons of
   `requeue`).
1b. revalidate: those records are replayed through the parse and rules of their source's format
   and deduplicated as a group of their own, before the new files (they were read first).
2. per batch of files (~256 MB): read each file in batches of ~200k records, normalize and
   parse in DuckDB, validate with Pandera (transforms/ingest); valid records are staged as
   candidate Parquet, rejected ones as quarantine Parquet, in the run's scratch folder. A file
   that fails to read is unreadable: what it had staged is dropped, one quarantine row
   (row_number null) records it. Then the batch's candidates are deduplicated in DuckDB against
   each other (file order, row order) and against the keys already taken (`seen`: events of
   earlier runs on the same UTC dates, loaded partition by partition, plus this run's earlier
   batches); the winners are staged. Progress: one line per file.
3. commit: the winners are written as one Parquet file per event-date partition, quarantine
   and ingest_files rows as one file each, all in scratch space; the quarantine and ingest_files
   files whose rows moved or were replaced are written again beside them; then `Lake.commit`
   moves them into the warehouse under a journal (a rewritten file is renamed over its old
   copy, which is atomic).

Crash safety (write order)
--------------------------
Nothing is written under `warehouse/<table>/` before step 3's `Lake.commit`. It first writes
and fsyncs `warehouse/.journal/ingest-<run>.json` listing every move, then renames in this order:
events files, the quarantine file, the rewritten quarantine files, the rewritten ingest_files
files, and last the ingest_files file (the record that the raw files are done), then deletes
the journal. So:
- a crash before the journal exists leaves every table as it was (the scratch folder is garbage,
  removed by the next run, which ingests the same files again from scratch);
- a crash after it is rolled *forward* by the next run before it plans (every staged file is
  still in scratch space, the journal says where it goes): the next run then sees the files in
  ingest_files and skips them. It can never ingest a file's events twice, nor count them as
  duplicates of themselves, nor leave quarantine rows without their ingest_files row.
Readers that look at `events` during those few renames may see new events before their
ingest_files rows; nothing sees ingest_files rows without their events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import flows  # noqa: F401  (Prefect environment before prefect is imported)
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE as NO_CACHE

from catalog.config import Catalog
from catalog.meter_types import VALUELESS_TYPES
from catalog.lake import Lake, duck, sql_str
from catalog.schemas import SCHEMAS, conform
from flows.common import MAX_ROWS, UsageError, as_of_instant, open_catalog, open_lake
from transforms.ingest.dedupe import (
    create_seen_sql, events_keys_sql, events_sql, firsts_sql, remember_sql, taken_sql, winners_sql,
)
from transforms.ingest.formats import SUPPORTED, Format, detect_format
from transforms.ingest.normalize import normalize_sql
from transforms.ingest.parse import parse_batch, prepare
from transforms.ingest.typed_parquet import typed_parquet
from transforms.ingest.pipeline import (
    CANDIDATE_DDL, SCRATCH_PARQUET as _SCRATCH_PARQUET, candidates, ingest_batch, quarantine_rows, stage_typed_parquet,
    unreadable_row,
)
from transforms.ingest.readers import (
    DEFAULT_BATCH_ROWS, CsvNeedsRecordParser, RawBatch, UnreadableFile, parquet_file, read_batches, read_rows,
)
from transforms.ingest.report import (
    STATUS_INGESTED, STATUS_SKIPPED, STATUS_UNREADABLE, FileResult, IngestReport,
)
from transforms.ingest.requeue import maybe_due, replay_batches, requeue_sql
from transforms.ingest.validate import REASONS, Rules

__all__ = ["FileResult", "IngestReport", "IngestRun", "ingest_flow", "requeue_reasons", "run_ingest"]

GROUP_BYTES = 256 << 20  # raw bytes per batch of files (one Prefect task, one dedup pass)
GROUP_FILES = 500
# records per batch of files: the group's candidates sit in a DuckDB table (≈ 300 bytes a row
# uncompressed), which must fit the memory limit; Parquet compresses ~10x, so bytes alone let a
# 256 MB group hold 25M records (it spilled, and RSS passed 2.5 GB at 10M events)
GROUP_ROWS = 3_000_000


def _estimated_rows(path: Path, fmt: Format | None, size: int) -> int:
    """Records in a raw file: from the footer for plain Parquet, else ~100 bytes a record."""
    if fmt is not None and fmt.kind == "parquet" and not fmt.gzip:
        try:
            return pq.read_metadata(path).num_rows
        except Exception:  # unreadable: the read says why, later
            return 0
    return size // 100
SEEN = "dd.seen"
CAND = "cand"  # the group's candidate events (a temp table: spills to the run's scratch folder)

# reading a file failed: the file is unreadable (any other exception is a bug and stops the run)
_READ_ERRORS: tuple[type[BaseException], ...] = (
    UnreadableFile, OSError, EOFError, ValueError, pa.ArrowException, __import__("csv").Error,
    __import__("zlib").error, duckdb.Error,
)
_NOT_THE_FILE: tuple[type[BaseException], ...] = (duckdb.OutOfMemoryException, duckdb.InterruptException, MemoryError)


@dataclass
class RawFile:
    seq: int
    source_file: str
    path: Path
    sha256: str
    size: int
    fmt: Format | None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


CLOCK_STATE = "ingest_clock"  # warehouse/_state/ingest_clock.json: {"ingested_at": the last run's}
CHANGED_DETAIL = ("row {} of an earlier version of this file was accepted as another event; events are never "
                  "deleted: cancel that event and land the corrected record in a new file")


NOT_REQUEUED = ("changed_record", "unreadable_file")  # no replay can accept them


def requeue_reasons(values: Iterable[str] | None) -> list[str]:
    """The reasons named by `--requeue` (repeated, or comma lists), checked against the reason table."""
    names = [n.strip() for v in (values or ()) for n in str(v).split(",") if n.strip()]
    for n in names:
        if n == "unreadable_file":
            raise UsageError("--requeue: unreadable_file is a whole file, not a record: fix the file and land it "
                             "again (its new bytes are ingested as a new version)")
        if n == "changed_record":
            raise UsageError("--requeue: a changed_record stays: its row is an event already (events are never "
                             "deleted); cancel that event and land the corrected record in a new file")
        if n not in REASONS:
            raise UsageError(f"--requeue: {n!r} is not a quarantine reason "
                             f"(one of {', '.join(r for r in REASONS if r not in NOT_REQUEUED)})")
    return sorted(set(names))


HASHES_STATE = "raw_hashes"  # warehouse/_state/raw_hashes.json: {raw path: [size, mtime_ns, ctime_ns, inode, sha256]}
RACY_NS = 2_000_000_000  # a file changed this recently may change again within the same timestamps
_SHA256_HEX = re.compile("[0-9a-f]{64}")


def known_hashes(state: object) -> dict[str, list]:
    """The recorded hashes that are well formed (a damaged record is dropped: its file is hashed again)."""
    if not isinstance(state, dict):
        return {}
    return {rel: v for rel, v in state.items()
            if isinstance(v, list) and len(v) == 5 and all(type(x) is int for x in v[:4]) and isinstance(v[4], str)
            and _SHA256_HEX.fullmatch(v[4])}


def hash_file(path: Path, rel: str, known: dict[str, list], now_ns: int) -> tuple[str, int, list | None]:
    """(sha256, size, record to keep or None) of a raw file; the recorded hash when its stat is unchanged.

    Any write to a file changes its ctime, which no user can set back, so an unchanged (size,
    mtime, ctime, inode) means unchanged bytes. The stat is taken before reading: a file
    written while it is read gets a new ctime and is read again next time. A file changed less
    than RACY_NS ago is not recorded (a write within the same timestamp tick would go unseen,
    git's "racily clean" case)."""
    st = path.stat()
    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    old = known.get(rel)
    if old is not None and old[:4] == key:
        return old[4], st.st_size, old
    sha = _sha256(path)
    keep = key + [sha] if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS else None
    return sha, st.st_size, keep


def _last_clock(lk: Lake) -> dt.datetime | None:
    """The `ingested_at` of the last run that committed (a run that only moves quarantined
    records writes no ingest_files row of its own); None if unknown."""
    try:
        state = lk.read_state(CLOCK_STATE)
        return dt.datetime.fromisoformat(state["ingested_at"]).astimezone(dt.timezone.utc) if state else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _arrival_instant(last: dt.datetime | None) -> dt.datetime:
    """Now (UTC), but always after the previous run's `ingested_at`.

    `ingested_at` is when rows arrived, not the run's `as_of`: the meter flow finds new events by
    `ingested_at` > its watermark, so it must grow from run to run even when a later run has an
    earlier `as_of` (a backfill) or the clock steps back.
    """
    now = dt.datetime.now(dt.timezone.utc)
    if last is not None and now <= last:
        now = last + dt.timedelta(microseconds=1)
    return now


def _paths(paths: list[Path]) -> str:
    """A SQL list of quoted file paths."""
    return "[" + ", ".join(sql_str(p) for p in paths) + "]"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:500]


class IngestRun:
    """One ingest run over a lake; use `plan()`, `ingest_group()` for each group, `finish()`."""

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

    # ------------------------------------------------------------ 1. plan
    def plan(self) -> list[list[int]]:
        """Find and hash the raw files; return groups of file indices (consecutive, sorted order)."""
        try:
            self._lock = self.lk.lock("ingest").acquire()
        except RuntimeError as e:
            raise UsageError(f"ingest: {e}") from None
        self.lk.recover_commits()
        if self.lk.tmp_dir.is_dir():
            for d in self.lk.stage_dirs("ingest-"):
                shutil.rmtree(d, ignore_errors=True)  # died before committing: nothing of it is in a table
        known: set[str] = set()
        recorded: dict[str, str] = {}  # source file -> the sha256 of its version in ingest_files
        last = _last_clock(self.lk)
        if self.lk.exists("ingest_files"):
            prior = (pl.scan_parquet(self.lk.table_glob("ingest_files"), schema=SCHEMAS["ingest_files"],
                                     missing_columns="insert", extra_columns="ignore", include_file_paths="__file")
                     .collect().with_row_index("__i"))
            self._prior = prior
            known = set(prior["sha256"].to_list())
            for src, sha in prior.sort("ingested_at").select("source_file", "sha256").iter_rows():
                recorded[src] = sha
            top = prior["ingested_at"].max()
            last = top if last is None or (top is not None and top > last) else last
        self.ingested_at = self._ingested_at or _arrival_instant(last)
        first_of: dict[str, str] = {}
        try:
            hashes = known_hashes(self.lk.read_state(HASHES_STATE))
        except (OSError, ValueError):  # a damaged record: every file is hashed again
            hashes = {}
        keep: dict[str, list] = {}
        now_ns = time.time_ns()
        for rel, path in self.lk.raw_files():
            try:
                sha, size, rec = hash_file(path, rel, hashes, now_ns)
            except FileNotFoundError:
                continue  # vanished while listing
            if rec is not None:
                keep[rel] = rec
            fmt = detect_format(rel)
            seq = len(self.files)
            self.files.append(RawFile(seq, rel, path, sha, size, fmt))
            r = FileResult(rel, sha, fmt.name if fmt else None)
            if sha in known:
                r.status, r.error = STATUS_SKIPPED, "already ingested"
            elif sha in first_of:
                r.status, r.error = STATUS_SKIPPED, f"same content as raw/{first_of[sha]}"
            else:
                first_of[sha] = rel
                if rel in recorded:  # a new version of a file: it replaces the old one
                    r.supersedes = recorded[rel]
                    self._superseded.add(rel)
            self.results.append(r)
        if keep != hashes:
            self.lk.write_state(HASHES_STATE, keep)
        self._plan_quarantine()
        new = [f for f, r in zip(self.files, self.results) if r.status != STATUS_SKIPPED]
        if new or self._requeue_plan is not None:
            h = hashlib.sha256(self.as_of.isoformat().encode())
            h.update(self.ingested_at.isoformat().encode())
            for sha in sorted(f.sha256 for f in new):
                h.update(sha.encode())
            if self._requeue_plan is not None:
                for fn, src, n in self._requeue_plan.iter_rows():
                    h.update(f"{len(src)}:{src}:{Path(fn).name}:{n};".encode())
            self.run_id = h.hexdigest()[:16]
            self.stage = self.lk.stage_dir(f"ingest-{self.run_id}")
        groups: list[list[int]] = []
        cur: list[int] = []
        size = rows = 0
        for f, r in zip(self.files, self.results):
            est = _estimated_rows(f.path, f.fmt, f.size) if r.status != STATUS_SKIPPED else 0
            if cur and rows and rows + est > GROUP_ROWS:
                groups.append(cur)
                cur, size, rows = [], 0, 0
            cur.append(f.seq)
            if r.status != STATUS_SKIPPED:
                size += f.size
                rows += est
            if size >= self.group_bytes or len(cur) >= GROUP_FILES:
                groups.append(cur)
                cur, size, rows = [], 0, 0
        if cur:
            groups.append(cur)
        return groups

    @property
    def plans_revalidation(self) -> bool:
        return self._requeue_plan is not None

    def _plan_quarantine(self) -> None:
        """The quarantine files and source files that may hold records this run judges again
        (`requeue.maybe_due`: the reason column, and the time columns of those reasons), and the
        quarantine files holding rows of the files it replaces."""
        if not self.lk.exists("quarantine"):
            return
        lf = pl.scan_parquet(self.lk.table_glob("quarantine"), schema=SCHEMAS["quarantine"], missing_columns="insert",
                             extra_columns="ignore", include_file_paths="filename")
        if self._superseded:
            held = lf.filter(pl.col("source_file").is_in(sorted(self._superseded))).select("filename").unique()
            self._q_files.update(held.collect()["filename"].to_list())
        known = self._prior["source_file"].unique() if self._prior is not None else pl.Series([], dtype=pl.String)
        found = (lf.filter(maybe_due(self.rules, self.requeue))
                 .group_by("filename", "source_file").agg(pl.len().alias("n")).collect()
                 # a replaced file's records are judged afresh from its new version; a record needs its file's row
                 .filter(~pl.col("source_file").is_in(sorted(self._superseded)) & pl.col("source_file").is_in(known.implode()))
                 .sort("source_file", "filename"))
        self._requeue_plan = found if found.height else None

    def _due(self, src: str, files: list[str]) -> pl.DataFrame:
        """The records of source file `src` in quarantine `files` to judge again (`requeue_sql`),
        one per row (a lake from before one row per file may hold two: the later counts)."""
        rel = (f"(SELECT * FROM read_parquet({_paths(files)}, filename = true, union_by_name = true) "
               f"WHERE source_file = {sql_str(src)})")
        return self.con.sql(requeue_sql(rel, self.rules, self.requeue)).pl()

    def revalidate(self) -> None:
        """Judge the planned quarantined records again, as groups of their own before the new
        files (they were read first), a source file at a time: replayed through the parse and
        rules of their source's format, the valid ones deduplicated (first accepted key wins,
        against the lake and this run) and staged as events with their own source_file and
        row_number; their quarantine rows go (`rq_moved`) and their file's counts move. A record
        still invalid keeps its row, under its new reason if that changed (`rq_change`)."""
        if self._requeue_plan is None:
            return
        con = self._connect()
        current = self._prior.sort("ingested_at").unique("source_file", keep="last")
        fmt_of = dict(current.select("source_file", "format").iter_rows())
        sha_of = dict(current.select("source_file", "sha256").iter_rows())
        raw_now = {f.source_file: f for f in self.files}
        con.execute(f"CREATE OR REPLACE TEMP TABLE {CAND} ({CANDIDATE_DDL})")
        pending = 0
        plan = self._requeue_plan
        for seq, src in enumerate(plan["source_file"].unique(maintain_order=True).to_list()):
            files = plan.filter(pl.col("source_file") == src)["filename"].to_list()
            due = self._due(src, files)
            if due.height == 0:
                continue
            part = due.sort("row_number", "ingested_at").unique("row_number", keep="last", maintain_order=True)
            fmt = detect_format("x." + (fmt_of.get(src) or ""))
            if fmt is None:
                continue
            f = raw_now.get(src)
            f = f if f is not None and f.sha256 == sha_of.get(src) else None
            files = sorted(due["filename"].unique().to_list())
            touched: list[pl.Series] = []  # rows that leave quarantine or change
            for b in self._replay(src, part, fmt, f, files):
                v = ingest_batch(con, b, self.rules)
                replayed = part.join(pl.DataFrame({"row_number": pl.Series(b.table["__rn"])}), on="row_number", how="semi")
                self._revalidated.update(dict(replayed.group_by("reason").len().iter_rows()))
                if v.accepted.height:
                    self._insert_candidates(candidates(v.accepted, seq, src, self.ingested_at))
                    moved = v.accepted.select("row_number").join(part, on="row_number", how="left")
                    self._insert("rq_moved", moved.select(pl.col("source_file"), "row_number",
                                                          pl.col("ingested_at").alias("q_at"), written=pl.lit(False)))
                    pending += moved.height
                    touched.append(moved["row_number"])
                changed = (v.rejected.select("row_number", "reason", "detail")
                           .join(part.select("row_number", pl.col("reason").alias("old")), on="row_number")
                           .filter(pl.col("reason") != pl.col("old")))
                if changed.height:
                    self._insert("rq_change", changed.select(pl.lit(src).alias("source_file"), "row_number", "reason",
                                                             "detail"))
                    touched.append(changed["row_number"])
                if pending >= GROUP_ROWS:
                    self._write_revalidated()
                    pending = 0
            if touched:  # the quarantine files holding them are written again
                held = due.filter(pl.col("row_number").is_in(pl.concat(touched).implode()))
                self._q_files.update(held["filename"].unique().to_list())
        if pending:
            self._write_revalidated()
        if not self._revalidated:
            return
        # the moves, on the ingest_files row of the run that quarantined each record
        for src, q_at, acc, dup in con.sql("SELECT source_file, q_at, count(*) FILTER (WHERE written), "
                                           "count(*) FILTER (WHERE NOT written) FROM rq_moved GROUP BY 1, 2").fetchall():
            d = self._deltas.setdefault(self._prior_row(src, q_at), [0, 0, 0])
            d[0], d[1], d[2] = d[0] + acc, d[1] + dup, d[2] - acc - dup
            self._revalidated_accepted += acc
            self._revalidated_duplicates += dup
        n = sum(self._revalidated.values())
        if self.progress:
            moved = self._revalidated_accepted + self._revalidated_duplicates
            self.progress(f"re-validated {n} quarantined records: {self._revalidated_accepted} accepted, "
                          f"{self._revalidated_duplicates} duplicates, {n - moved} still quarantined")

    def _write_revalidated(self) -> None:
        """Deduplicate and stage the re-validated candidates gathered so far; mark those written."""
        _, written = self._write_winners()
        if written:
            self.con.execute(f"""
UPDATE rq_moved SET written = true
FROM (SELECT source_file, row_number FROM read_parquet({_paths(written)}, hive_partitioning = true)) w
WHERE rq_moved.source_file = w.source_file AND rq_moved.row_number = w.row_number""")
        self.con.execute(f"DELETE FROM {CAND}")

    def _insert(self, table: str, rows: pl.DataFrame) -> None:
        self.con.register("__rows", rows.to_arrow())
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __rows")
        finally:
            self.con.unregister("__rows")

    def _replay(self, src: str, rows: pl.DataFrame, fmt: Format, f: RawFile | None,
                files: list[str]) -> Iterator[RawBatch]:
        """Raw batches of quarantined records (`rows`: row_number): a Parquet record from its file
        `f` when it is the version that was ingested (its columns as typed, a row group at a
        time), else from the stored `raw` record (read from the quarantine `files`, `batch_rows`
        at a time)."""
        if fmt.kind == "parquet" and f is not None:
            batches = read_rows(f.path, fmt, rows["row_number"].to_list(), scratch_dir=self.stage)
            try:
                first = next(batches, None)
            except _NOT_THE_FILE:
                raise
            except _READ_ERRORS:
                first = batches = None  # the stored records, then
            if batches is not None:
                if first is not None:
                    yield first
                    yield from batches
                return
        for k in range(0, rows.height, self.batch_rows):
            self.con.register("__rns", rows.slice(k, self.batch_rows).select("row_number").to_arrow())
            try:
                raw = self.con.sql(
                    f"SELECT row_number, raw FROM read_parquet({_paths(files)}, union_by_name = true) "
                    f"WHERE source_file = {sql_str(src)} AND row_number IN (SELECT row_number FROM __rns) "
                    "QUALIFY row_number() OVER (PARTITION BY row_number ORDER BY ingested_at DESC) = 1 "
                    "ORDER BY row_number").pl()
            finally:
                self.con.unregister("__rns")
            yield from replay_batches(raw, fmt.kind)

    def _prior_row(self, source_file: str, ingested_at) -> int:
        """The ingest_files row (`__i`) of a source file's record quarantined at `ingested_at`: the
        row of that run, else the file's latest."""
        rows = self._prior.filter(pl.col("source_file") == source_file).sort("ingested_at")
        same = rows.filter(pl.col("ingested_at") == ingested_at)
        return int((same if same.height else rows)["__i"][-1])

    def _insert_candidates(self, df: pl.DataFrame) -> None:
        self.con.register("__cand", df.to_arrow())
        try:
            self.con.execute(f"INSERT INTO {CAND} SELECT * FROM __cand")
        finally:
            self.con.unregister("__cand")

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

    # ------------------------------------------------------------ 2. a group of files
    def ingest_group(self, seqs: list[int]) -> list[FileResult]:
        """Read, validate and stage the group's new files, deduplicate them, report progress."""
        todo = [s for s in seqs if self.results[s].status != STATUS_SKIPPED]
        if todo:
            self._connect().execute(f"CREATE OR REPLACE TEMP TABLE {CAND} ({CANDIDATE_DDL})")
        for s in todo:
            f, r = self.files[s], self.results[s]
            if f.fmt is None:
                self._unreadable(f, r, f"unsupported file type (expected {SUPPORTED})")
            else:
                self._read_file(f, r)
        self._dedupe([s for s in todo if self.results[s].status == STATUS_INGESTED])
        if self.progress:
            for s in seqs:
                self.progress(self.results[s].line(s + 1, len(self.files)))
        return [self.results[s] for s in seqs]

    def _file_dir(self, f: RawFile) -> Path:
        d = self.stage / "files" / f"{f.seq:06d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _read_file(self, f: RawFile, r: FileResult) -> None:
        try:
            try:
                self._stage_file(f, r, "arrow")
            except CsvNeedsRecordParser:
                self._stage_file(f, r, "python")  # a CSV record of the wrong width: keep it, flagged
        except _NOT_THE_FILE:
            raise
        except _READ_ERRORS as e:
            self._clear_staged(f)
            shutil.rmtree(self._file_dir(f), ignore_errors=True)
            self._unreadable(f, r, _one_line(e).replace(str(f.path), f"raw/{f.source_file}"))

    def _stage_file(self, f: RawFile, r: FileResult, csv_engine: str) -> None:
        """Read, validate and stage one file (starting over: what a previous try staged goes)."""
        fdir = self._clear_staged(f)
        if f.fmt.kind == "parquet" and self._stage_typed(f, r, fdir):
            return
        rows = valid = quarantined = 0
        reasons: Counter[str] = Counter()
        ctf_sql = None
        batches = read_batches(f.path, f.fmt, batch_rows=self.batch_rows, scratch_dir=fdir, csv_engine=csv_engine,
                               json_con=self._json_reader() if f.fmt.kind == "json" else None)
        try:
            for k, b in enumerate(batches):
                ctf_sql = ctf_sql or normalize_sql(b)
                v = ingest_batch(self.con, b, self.rules, ctf_sql)
                rows += b.table.num_rows
                if v.accepted.height:
                    self._insert_candidates(candidates(v.accepted, f.seq, f.source_file, self.ingested_at))
                    valid += v.accepted.height
                if v.rejected.height:
                    quarantine_rows(v.rejected, f.source_file, self.ingested_at).write_parquet(
                        fdir / f"quar-{k:05d}.parquet", **_SCRATCH_PARQUET)
                    quarantined += v.rejected.height
                    reasons.update(v.rejected["reason"].to_list())
        finally:
            batches.close()  # releases the file (and the .json reader's connection)
        r.rows_read, r.quarantined = rows, quarantined
        self._valid[f.seq] = valid
        self._reasons.update(reasons)

    def _stage_typed(self, f: RawFile, r: FileResult, fdir: Path) -> bool:
        """A Parquet file on the typed path (normalize.typed_parquet); False: not such a file, or
        DuckDB could not read it (the general path then reads it, and words any error as before)."""
        with parquet_file(f.path, f.fmt.gzip, fdir) as (path, pf):
            schema = pf.schema_arrow
            plan = typed_parquet(list(schema.names), list(schema.types))
            if plan is None:
                return False
            try:
                st = stage_typed_parquet(self.con, plan, path, self.rules, file_seq=f.seq, source_file=f.source_file,
                                         ingested_at=self.ingested_at, out_dir=fdir, cand=CAND)
            except _NOT_THE_FILE:
                raise
            except duckdb.Error:
                self._clear_staged(f, keep=path.name)
                return False
        r.rows_read, r.quarantined = st.rows, st.quarantined
        self._valid[f.seq] = st.valid
        self._reasons.update(st.reasons)
        return True

    def _clear_staged(self, f: RawFile, keep: str | None = None) -> Path:
        """Drop what a file had staged (its candidates, its scratch files but `keep`); its folder."""
        self.con.execute(f"DELETE FROM {CAND} WHERE file_seq = {int(f.seq)}")
        fdir = self._file_dir(f)
        for old in fdir.iterdir():
            if old.name != keep:
                old.unlink()
        return fdir

    def _unreadable(self, f: RawFile, r: FileResult, why: str) -> None:
        r.status, r.error = STATUS_UNREADABLE, why
        r.rows_read = r.accepted = r.duplicates = r.quarantined = 0
        unreadable_row(f.source_file, why, self.ingested_at).write_parquet(self._file_dir(f) / "quar-unreadable.parquet")
        self._reasons["unreadable_file"] += 1

    def _dedupe(self, seqs: list[int]) -> None:
        """Deduplicate the group's candidates; write the winners as events partitions (staged).

        A new version of a file: a record that is an event accepted from an earlier version
        (same dedup key, on its date) counts as accepted, once per key; a record that would be a
        new event at a row that such an event holds is quarantined `changed_record`."""
        for s in seqs:
            self.results[s].accepted, self.results[s].duplicates = 0, self._valid.get(s, 0)
        if not any(self._valid.get(s, 0) for s in seqs):
            return
        replacing = {self.results[s].source_file: s for s in seqs
                     if self.results[s].supersedes and self._valid.get(s, 0)}
        own = self._own_events(replacing) if replacing else {}
        counts, _ = self._write_winners() if any(self._valid.get(s, 0) for s in seqs) else ({}, [])
        for s in seqs:
            r = self.results[s]
            r.accepted = int(counts.get(r.source_file, 0)) + own.get(r.source_file, 0)
            r.duplicates = self._valid.get(s, 0) - r.accepted

    def _own_events(self, replacing: dict[str, int]) -> dict[str, int]:
        """For files replacing an earlier version (source file -> seq): quarantine the records
        changed under an accepted row (out of the candidates); return, per file, how many of its
        keys are events of its earlier versions (those records count as accepted)."""
        if not self.lk.exists("events"):
            return {}
        con = self.con
        con.register("__replacing", pa.table({"source_file": pa.array(sorted(replacing), pa.string())}))
        rel = (f"(SELECT * FROM read_parquet({sql_str(self.lk.table_glob('events'))}, hive_partitioning = true, "
               "union_by_name = true) WHERE source_file IN (SELECT source_file FROM __replacing))")
        keys = events_keys_sql(rel, carry=("source_file", "row_number"))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {CAND}_own AS {keys}")
        changed = con.sql(f"""
SELECT c.file_seq, c.row_number FROM {CAND} c
WHERE c.source_file IN (SELECT source_file FROM __replacing)
  AND EXISTS (SELECT 1 FROM {CAND}_own o WHERE o.source_file = c.source_file AND o.row_number = c.row_number)
  AND NOT EXISTS (SELECT 1 FROM {CAND}_own o WHERE o.source_file = c.source_file AND o.event_date = c.event_date
                                               AND o.dedup_key = c.dedup_key)
ORDER BY 1, 2""").fetchall()
        by_seq: dict[int, list[int]] = {}
        for seq, rn in changed:
            by_seq.setdefault(int(seq), []).append(int(rn))
        for seq, rns in by_seq.items():
            self._changed_records(self.files[seq], rns)
            con.execute(f"DELETE FROM {CAND} WHERE file_seq = {seq} AND row_number IN ({', '.join(map(str, rns))})")
        mine = con.sql(f"""
SELECT source_file, count(*) FROM (
  SELECT DISTINCT c.source_file, c.event_date, c.dedup_key FROM {CAND} c
  JOIN {CAND}_own o ON o.source_file = c.source_file AND o.event_date = c.event_date AND o.dedup_key = c.dedup_key)
GROUP BY 1""").fetchall()
        con.execute(f"DROP TABLE {CAND}_own")
        con.unregister("__replacing")
        return {src: int(n) for src, n in mine}

    def _changed_records(self, f: RawFile, rows: list[int]) -> None:
        """Quarantine records of a new version that changed under an accepted row (read again
        from the file for their fields as read)."""
        batches = read_rows(f.path, f.fmt, rows, scratch_dir=self._file_dir(f),
                            json_con=self._json_reader() if f.fmt.kind == "json" else None)
        parsed = [parse_batch(self.con, b) for b in batches]
        df = pl.concat(parsed, how="diagonal_relaxed").sort("row_number") if parsed else None
        if df is None or df["row_number"].to_list() != sorted(rows):
            raise UsageError(f"ingest: raw/{f.source_file} changed while it was read; run ingest again")
        df = df.with_columns(reason=pl.lit("changed_record"),
                             detail=pl.format(CHANGED_DETAIL, pl.col("row_number")))
        quarantine_rows(df, f.source_file, self.ingested_at).write_parquet(
            self._file_dir(f) / "quar-changed.parquet", **_SCRATCH_PARQUET)
        r = self.results[f.seq]
        self._valid[f.seq] -= df.height
        r.quarantined += df.height
        self._reasons["changed_record"] += df.height

    def _write_winners(self) -> tuple[dict[str, int], list[Path]]:
        """Deduplicate the candidate table (against the keys already taken) and stage the winners
        as events partitions; return the events written per source file, and the files."""
        con = self.con
        dates = [d for (d,) in con.sql(f"SELECT DISTINCT event_date FROM {CAND}").fetchall()]
        if not dates:
            return {}, []
        new_dates = sorted(d for d in dates if d not in self._loaded_dates)
        # keys already taken on these dates, computed from the events' columns: the lake's
        # partitions of dates not loaded yet, and what earlier groups of this run wrote on them
        # (remembered only when a later group touches the date: time-ordered files never pay)
        taken = self.lk.partition_files("events", new_dates)
        for d in dates:
            taken += self._unremembered.pop(d, [])
        if taken:
            rel = f"read_parquet({_paths(taken)}, hive_partitioning = true, union_by_name = true)"
            con.execute(remember_sql(SEEN, f"({events_keys_sql(rel)})"))
            con.execute("CHECKPOINT dd")  # the keys to disk: their pages can leave memory
        self._loaded_dates.update(new_dates)
        self._groups += 1
        out = self.stage / "events" / f"g{self._groups:05d}"
        out.parent.mkdir(exist_ok=True)
        # one step at a time: the hash tables of finding the duplicates are gone before the write
        con.execute(f"CREATE OR REPLACE TEMP TABLE {CAND}_taken AS {taken_sql(CAND, SEEN)}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {CAND}_firsts AS {firsts_sql(CAND)}")
        winners = winners_sql(CAND, taken=f"{CAND}_taken", firsts=f"{CAND}_firsts")
        con.execute(f"COPY ({events_sql('(' + winners + ')')}) TO {sql_str(out)} "
                    "(FORMAT parquet, PARTITION_BY (event_date), FILENAME_PATTERN 'part-{i}')")
        written = sorted(out.glob("*/*.parquet")) if out.is_dir() else []
        if not written:
            return {}, []
        events = f"read_parquet({_paths(written)}, hive_partitioning = true)"
        for p in written:  # <out>/event_date=D/part-N.parquet
            self._unremembered.setdefault(dt.date.fromisoformat(p.parent.name.split("=", 1)[1]), []).append(p)
        counts = dict(con.sql(f"SELECT source_file, count(*) FROM {events} GROUP BY 1").fetchall())
        self._event_files.extend(written)
        return {k: int(v) for k, v in counts.items()}, written

    # ------------------------------------------------------------ 3. commit
    def finish(self) -> IngestReport:
        """Write the staged results into the warehouse (see the module doc) and report."""
        report = IngestReport(as_of=self.as_of, ingested_at=self.ingested_at,
                              max_event_age_days=self.rules.max_event_age_days, run_id=self.run_id,
                              files=self.results, requeue=list(self.requeue),
                              revalidated=sum(self._revalidated.values()),
                              revalidated_by_reason=dict(sorted(self._revalidated.items())),
                              revalidated_accepted=self._revalidated_accepted,
                              revalidated_duplicates=self._revalidated_duplicates)
        if self.run_id is None:
            self.close()
            return report
        con = self._connect()
        moves: list[tuple[Path, Path]] = []
        if self._event_files:
            for p in self._event_files:  # <stage>/events/g00001/event_date=D/part-0.parquet
                group, part = p.parent.parent.name, p.parent.name.split("=", 1)[1]
                name = f"ingest-{self.run_id}-{group}-{p.stem.removeprefix('part-')}"
                moves.append((p, self.lk.table_file("events", name, partition=part)))
            events = f"read_parquet({_paths(self._event_files)}, hive_partitioning = true)"
            con.register("known_customers", pa.table({"id": pa.array(sorted(self.cat.customers), pa.string())}))
            con.register("known_meters", pa.table({"id": pa.array(sorted(self.cat.meters), pa.string())}))
            for col, known, attr in (("customer_id", "known_customers", "undefined_customers"),
                                     ("meter_api_name", "known_meters", "undefined_meters")):
                rows = con.sql(f"SELECT {col}, count(*) FROM {events} WHERE {col} NOT IN (SELECT id FROM {known}) "
                               "GROUP BY 1 ORDER BY 1").fetchall()
                setattr(report, attr, {k: int(n) for k, n in rows})
            report.cancellations = int(con.sql(f"SELECT count(*) FILTER (WHERE is_cancel) FROM {events}").fetchall()[0][0])
            report.event_dates = [d for (d,) in con.sql(
                f"SELECT DISTINCT CAST(event_date AS DATE) FROM {events} ORDER BY 1").fetchall()]
        quar = sorted(self.stage.glob("files/*/quar-*.parquet"))
        if quar:
            qfile = self.stage / "quarantine.parquet"
            con.execute(f"COPY (SELECT * FROM read_parquet({_paths(quar)}) ORDER BY source_file, row_number NULLS FIRST) "
                        f"TO {sql_str(qfile)} (FORMAT parquet)")
            moves.append((qfile, self.lk.table_file("quarantine", f"ingest-{self.run_id}")))
        # rows moved out of (or within) quarantine, and the rows of replaced versions: their files
        # are written again and renamed over the old ones, in the same journalled commit
        for i, path in enumerate(sorted(self._q_files)):
            staged = self.stage / f"quarantine-{i:05d}.parquet"
            self._rewrite_quarantine(con, path, staged)
            moves.append((staged, Path(path)))
        for i, (path, df) in enumerate(self._ingest_files_rewrites()):
            staged = self.stage / f"ingest_files-{i:05d}.parquet"
            df.write_parquet(staged)
            moves.append((staged, Path(path)))
        report.quarantine_by_reason = dict(sorted(self._reasons.items()))
        new_files = self._ingest_files_frame()
        if new_files.height:
            ifile = self.stage / "ingest_files.parquet"
            new_files.write_parquet(ifile)
            moves.append((ifile, self.lk.table_file("ingest_files", f"ingest-{self.run_id}")))
        self._close_db()  # the dedup database lives in the scratch folder
        self._before_commit()
        if moves:
            self.lk.write_state(CLOCK_STATE, {"ingested_at": self.ingested_at.isoformat()})
            self.lk.commit(f"ingest-{self.run_id}", moves)
        shutil.rmtree(self.stage, ignore_errors=True)
        self.close()
        return report

    def _rewrite_quarantine(self, con: duckdb.DuckDBPyConnection, path: str, out: Path) -> None:
        """A quarantine file without the rows that left it (`rq_moved`) and the rows of replaced
        versions, with the new reason and detail of the rows still quarantined (`rq_change`)."""
        con.register("__qrep", pa.table({"source_file": pa.array(sorted(self._superseded), pa.string())}))
        cols = ", ".join(f"coalesce(c.{c}, q.{c}) AS {c}" if c in ("reason", "detail") else f"q.{c}"
                         for c in SCHEMAS["quarantine"])
        try:
            con.execute(f"""
COPY (SELECT {cols} FROM read_parquet({sql_str(path)}, union_by_name = true) q
      LEFT JOIN rq_change c ON c.source_file = q.source_file AND c.row_number = q.row_number
      WHERE q.source_file NOT IN (SELECT source_file FROM __qrep)
        AND NOT EXISTS (SELECT 1 FROM rq_moved d WHERE d.source_file = q.source_file AND d.row_number = q.row_number)
      ORDER BY q.source_file, q.row_number NULLS FIRST) TO {sql_str(out)} (FORMAT parquet)""")
        finally:
            con.unregister("__qrep")

    def _ingest_files_rewrites(self) -> list[tuple[str, pl.DataFrame]]:
        """The ingest_files files holding rows of replaced versions (the rows go: the new version's
        row replaces them) or rows whose counts moved, as they are to be."""
        if self._prior is None:
            return []
        prior = self._prior
        hit = prior.filter(pl.col("source_file").is_in(sorted(self._superseded))
                           | pl.col("__i").is_in(sorted(self._deltas)))
        out = []
        for path in sorted(hit["__file"].unique().to_list()):
            df = prior.filter((pl.col("__file") == path) & ~pl.col("source_file").is_in(sorted(self._superseded)))
            d = [self._deltas.get(i, [0, 0, 0]) for i in df["__i"].to_list()]
            df = df.with_columns(
                accepted=pl.col("accepted") + pl.Series([x[0] for x in d], dtype=pl.Int64),
                duplicates=pl.col("duplicates") + pl.Series([x[1] for x in d], dtype=pl.Int64),
                quarantined=pl.col("quarantined") + pl.Series([x[2] for x in d], dtype=pl.Int64),
            )
            out.append((path, conform("ingest_files", df.drop("__i", "__file"))))
        return out

    def _before_commit(self) -> None:
        """A seam for crash tests: everything is staged, nothing is committed yet."""

    def _ingest_files_frame(self) -> pl.DataFrame:
        rows = [r for r in self.results if r.status != STATUS_SKIPPED]
        df = pl.DataFrame(
            {
                "source_file": [r.source_file for r in rows], "sha256": [r.sha256 for r in rows],
                "format": [r.format for r in rows], "rows_read": [r.rows_read for r in rows],
                "accepted": [r.accepted for r in rows], "duplicates": [r.duplicates for r in rows],
                "quarantined": [r.quarantined for r in rows], "status": [r.status for r in rows],
                "error": [r.error for r in rows],
            },
            schema={"source_file": pl.String, "sha256": pl.String, "format": pl.String, "rows_read": pl.Int64,
                    "accepted": pl.Int64, "duplicates": pl.Int64, "quarantined": pl.Int64,
                    "status": pl.String, "error": pl.String},
        ).with_columns(pl.lit(self.ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"))
        return conform("ingest_files", df)


# ---------------------------------------------------------------- the plain function


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


# ---------------------------------------------------------------- Prefect


@task(name="ingest-plan", cache_policy=NO_CACHE)
def _plan_task(run: IngestRun) -> list[list[int]]:
    return run.plan()


@task(name="ingest-revalidate", cache_policy=NO_CACHE)
def _revalidate_task(run: IngestRun) -> None:
    run.revalidate()


@task(name="ingest-files", cache_policy=NO_CACHE, task_run_name="ingest-files-{label}")
def _group_task(run: IngestRun, group: list[int], label: str) -> list[dict]:
    return [r.__dict__.copy() for r in run.ingest_group(group)]


@task(name="ingest-commit", cache_policy=NO_CACHE)
def _finish_task(run: IngestRun) -> IngestReport:
    return run.finish()


def _check_age(max_event_age_days: int | None) -> int | None:
    if max_event_age_days is None:
        return None
    try:
        n = int(max_event_age_days)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or str(max_event_age_days).strip() not in (str(n), f"{n}.0"):
        raise UsageError(f"--max-event-age-days: {max_event_age_days!r} is not a whole number of days ≥ 0")
    return n


@flow(name="ingest")
def ingest_flow(lake: str | None = None, as_of: str | None = None, max_event_age_days: int | None = None,
                memory_limit: str | None = None, allow_future: bool = False,
                requeue: list[str] | None = None) -> dict:
    """raw files -> events, quarantine, ingest_files; quarantined records of the clock-dependent
    reasons (and of `requeue`) judged again; returns the report as a dict.
    An `as_of` more than 5 minutes ahead of the clock is refused unless `allow_future`."""
    lk = open_lake(lake)
    cat = open_catalog(lk)
    instant = as_of_instant(as_of, allow_future, name="as_of", flag="allow_future=True")
    age = _check_age(max_event_age_days)
    reasons = requeue_reasons(requeue)
    logger = get_run_logger()
    started = time.monotonic()
    run = IngestRun(lk, cat, instant, age, progress=logger.info, memory_limit=memory_limit, requeue=reasons)
    try:
        groups = _plan_task(run)
        if run.plans_revalidation:
            _revalidate_task(run)
        for i, group in enumerate(groups, 1):
            _group_task(run, group, f"{i}-of-{len(groups)}")
        report = _finish_task(run)
    finally:
        run.close()
    create_markdown_artifact(key="ingest-report", markdown=report.to_markdown(MAX_ROWS), description=report.summary())
    logger.info("%s (%.1f s)", report.summary(), time.monotonic() - started)
    return report.to_dict()
