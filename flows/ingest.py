"""The ingest flow: `<lake>/raw/**` -> `events`, `quarantine`, `ingest_files` (SPEC §2, §7).

`run_ingest` does the work; `ingest_flow` wraps the same steps in coarse Prefect tasks (plan,
one task per batch of files, commit) and publishes the report as the artifact "ingest-report".

How a run goes
--------------
1. plan: take the lake's ingest lock; finish any interrupted commit (`Lake.recover_commits`);
   delete scratch folders of runs that died before committing; list raw files in sorted path
   order; hash each (sha256); a file whose hash is in `ingest_files` (or repeats an earlier
   file of this run) is skipped. A file whose size, mtime, ctime and inode are those recorded
   with its hash by an earlier run (`_state/raw_hashes.json`) keeps that hash without being
   read again: the landing zone is not re-read every hour (`known_hashes`).
2. per batch of files (~256 MB): read each file in batches of ~200k records, normalize and
   parse in DuckDB, validate with Pandera (transforms/ingest); valid records are staged as
   candidate Parquet, rejected ones as quarantine Parquet, in the run's scratch folder. A file
   that fails to read is unreadable: what it had staged is dropped, one quarantine row
   (row_number null) records it. Then the batch's candidates are deduplicated in DuckDB against
   each other (file order, row order) and against the keys already taken (`seen`: events of
   earlier runs on the same UTC dates, loaded partition by partition, plus this run's earlier
   batches); the winners are staged. Progress: one line per file.
3. commit: the winners are written as one Parquet file per event-date partition, quarantine
   and ingest_files rows as one file each, all in scratch space; then `Lake.commit` moves them
   into the warehouse under a journal.

Crash safety (write order)
--------------------------
Nothing is written under `warehouse/<table>/` before step 3's `Lake.commit`. It first writes
and fsyncs `warehouse/.journal/ingest-<run>.json` listing every move, then renames in this order:
events files, the quarantine file, and last the ingest_files file (the record that the raw
files are done), then deletes the journal. So:
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
from typing import Callable

import flows  # noqa: F401  (Prefect environment before prefect is imported)
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE as NO_CACHE

from catalog.config import VALUELESS_TYPES, Catalog
from catalog.lake import Lake, duck, sql_str
from catalog.schemas import conform
from flows.common import MAX_ROWS, UsageError, open_catalog, open_lake, parse_instant
from transforms.ingest.dedupe import (
    create_seen_sql, events_keys_sql, events_sql, firsts_sql, remember_sql, taken_sql, winners_sql,
)
from transforms.ingest.formats import SUPPORTED, Format, detect_format
from transforms.ingest.normalize import normalize_sql, prepare, typed_parquet
from transforms.ingest.pipeline import (
    CANDIDATE_DDL, SCRATCH_PARQUET as _SCRATCH_PARQUET, candidates, ingest_batch, quarantine_rows, stage_typed_parquet,
    unreadable_row,
)
from transforms.ingest.readers import (
    DEFAULT_BATCH_ROWS, CsvNeedsRecordParser, UnreadableFile, parquet_file, read_batches,
)
from transforms.ingest.report import (
    STATUS_INGESTED, STATUS_SKIPPED, STATUS_UNREADABLE, FileResult, IngestReport,
)
from transforms.ingest.validate import Rules

__all__ = ["FileResult", "IngestReport", "IngestRun", "ingest_flow", "run_ingest"]

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
                 group_bytes: int = GROUP_BYTES):
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=dt.timezone.utc)
        self.lk, self.cat = lk, cat
        self.as_of = as_of.astimezone(dt.timezone.utc)
        self._ingested_at = ingested_at.astimezone(dt.timezone.utc) if ingested_at else None
        self.ingested_at = self._ingested_at or self.as_of  # set for real in plan()
        age = cat.settings.max_event_age_days if max_event_age_days is None else int(max_event_age_days)
        valueless = frozenset(n for n, m in cat.meters.items() if m.type in VALUELESS_TYPES)
        self.rules = Rules(self.as_of, age, valueless)
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
        last = None
        if self.lk.exists("ingest_files"):
            prior = self.lk.scan("ingest_files").select("sha256", "ingested_at").collect()
            known = set(prior["sha256"].to_list())
            last = prior["ingested_at"].max()
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
            self.results.append(r)
        if keep != hashes:
            self.lk.write_state(HASHES_STATE, keep)
        new = [f for f, r in zip(self.files, self.results) if r.status != STATUS_SKIPPED]
        if new:
            h = hashlib.sha256(self.as_of.isoformat().encode())
            for sha in sorted(f.sha256 for f in new):
                h.update(sha.encode())
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

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            self.con = duck(self.lk, self.memory_limit)
            prepare(self.con, sorted(self.rules.valueless_meters))
            self.con.execute(f"ATTACH {sql_str(self.stage / 'dedup.duckdb')} AS dd")
            self.con.execute(create_seen_sql(SEEN))
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
                    self.con.register("__cand", candidates(v.accepted, f.seq, f.source_file, self.ingested_at).to_arrow())
                    try:
                        self.con.execute(f"INSERT INTO {CAND} SELECT * FROM __cand")
                    finally:
                        self.con.unregister("__cand")
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
        """Deduplicate the group's candidates; write the winners as events partitions (staged)."""
        for s in seqs:
            self.results[s].accepted, self.results[s].duplicates = 0, self._valid.get(s, 0)
        if not any(self._valid.get(s, 0) for s in seqs):
            return
        con = self.con
        dates = [d for (d,) in con.sql(f"SELECT DISTINCT event_date FROM {CAND}").fetchall()]
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
            return
        events = f"read_parquet({_paths(written)}, hive_partitioning = true)"
        for p in written:  # <out>/event_date=D/part-N.parquet
            self._unremembered.setdefault(dt.date.fromisoformat(p.parent.name.split("=", 1)[1]), []).append(p)
        counts = dict(con.sql(f"SELECT source_file, count(*) FROM {events} GROUP BY 1").fetchall())
        for s in seqs:
            r = self.results[s]
            r.accepted = int(counts.get(r.source_file, 0))
            r.duplicates = self._valid.get(s, 0) - r.accepted
        self._event_files.extend(written)

    # ------------------------------------------------------------ 3. commit
    def finish(self) -> IngestReport:
        """Write the staged results into the warehouse (see the module doc) and report."""
        report = IngestReport(as_of=self.as_of, ingested_at=self.ingested_at,
                              max_event_age_days=self.rules.max_event_age_days, run_id=self.run_id,
                              files=self.results)
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
        report.quarantine_by_reason = dict(sorted(self._reasons.items()))
        ifile = self.stage / "ingest_files.parquet"
        self._ingest_files_frame().write_parquet(ifile)
        moves.append((ifile, self.lk.table_file("ingest_files", f"ingest-{self.run_id}")))
        self._close_db()  # the dedup database lives in the scratch folder
        self._before_commit()
        self.lk.commit(f"ingest-{self.run_id}", moves)
        shutil.rmtree(self.stage, ignore_errors=True)
        self.close()
        return report

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
               ingested_at: dt.datetime | None = None) -> IngestReport:
    """Ingest every new raw file of the lake (see the module doc).

    `ingested_at` (stamped on every row written) defaults to the wall clock, kept strictly after
    the previous run's; tests pass it to get fixed bytes.
    """
    with IngestRun(lk, cat, as_of, max_event_age_days, progress, memory_limit, ingested_at) as run:
        for group in run.plan():
            run.ingest_group(group)
        return run.finish()


# ---------------------------------------------------------------- Prefect


@task(name="ingest-plan", cache_policy=NO_CACHE)
def _plan_task(run: IngestRun) -> list[list[int]]:
    return run.plan()


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
                memory_limit: str | None = None) -> dict:
    """raw files -> events, quarantine, ingest_files; returns the report as a dict."""
    lk = open_lake(lake)
    cat = open_catalog(lk)
    instant = parse_instant(as_of)
    age = _check_age(max_event_age_days)
    logger = get_run_logger()
    started = time.monotonic()
    run = IngestRun(lk, cat, instant, age, progress=logger.info, memory_limit=memory_limit)
    try:
        groups = _plan_task(run)
        for i, group in enumerate(groups, 1):
            _group_task(run, group, f"{i}-of-{len(groups)}")
        report = _finish_task(run)
    finally:
        run.close()
    create_markdown_artifact(key="ingest-report", markdown=report.to_markdown(MAX_ROWS), description=report.summary())
    logger.info("%s (%.1f s)", report.summary(), time.monotonic() - started)
    return report.to_dict()
