"""Step 1 of an ingest run: take the lock, finish an interrupted commit, hash the raw files,
find the quarantined records to judge again, name the run and cut the files into groups."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import polars as pl

from catalog.schemas import SCHEMAS
from flows.stages.common import UsageError
from flows.stages.ingest.files import (
    GROUP_FILES, GROUP_ROWS, HASHES_STATE, RawFile, arrival_instant, estimated_rows, hash_file, known_hashes,
    last_clock,
)
from transforms.ingest.formats import detect_format
from transforms.ingest.report import STATUS_SKIPPED, FileResult
from transforms.ingest.requeue import maybe_due


class Plan:
    """The plan of an `IngestRun` (flows/stages/ingest/run.py holds its state)."""

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
        known, recorded = self._read_prior()
        self._list_files(known, recorded)
        self._plan_quarantine()
        self._name_run()
        return self._cut_groups()

    def _read_prior(self) -> tuple[set[str], dict[str, str]]:
        """The earlier runs' ingest_files rows (`_prior`) and this run's `ingested_at`; returns the
        hashes ingested so far and the sha256 of each source file's recorded version."""
        known: set[str] = set()
        recorded: dict[str, str] = {}  # source file -> the sha256 of its version in ingest_files
        last = last_clock(self.lk)
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
        self.ingested_at = self._ingested_at or arrival_instant(last)
        return known, recorded

    def _list_files(self, known: set[str], recorded: dict[str, str]) -> None:
        """Hash every raw file (a recorded stat keeps its hash unread); a known hash, or one an
        earlier file of this run has, is skipped; a path ingested before with other bytes is a new
        version that replaces the old one."""
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

    def _name_run(self) -> None:
        """A run with work gets its id (from as_of, ingested_at, the new files' hashes and the
        records to judge again) and its scratch folder."""
        new = [f for f, r in zip(self.files, self.results) if r.status != STATUS_SKIPPED]
        if not (new or self._requeue_plan is not None):
            return
        h = hashlib.sha256(self.as_of.isoformat().encode())
        h.update(self.ingested_at.isoformat().encode())
        for sha in sorted(f.sha256 for f in new):
            h.update(sha.encode())
        if self._requeue_plan is not None:
            for fn, src, n in self._requeue_plan.iter_rows():
                h.update(f"{len(src)}:{src}:{Path(fn).name}:{n};".encode())
        self.run_id = h.hexdigest()[:16]
        self.stage = self.lk.stage_dir(f"ingest-{self.run_id}")

    def _cut_groups(self) -> list[list[int]]:
        """Consecutive files up to `group_bytes` raw bytes, GROUP_FILES files or GROUP_ROWS records."""
        groups: list[list[int]] = []
        cur: list[int] = []
        size = rows = 0
        for f, r in zip(self.files, self.results):
            est = estimated_rows(f.path, f.fmt, f.size) if r.status != STATUS_SKIPPED else 0
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
