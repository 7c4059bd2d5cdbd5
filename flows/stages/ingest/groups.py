"""Step 2 of an ingest run, for each group of files: read, validate and stage each new file (a
file that fails to read is unreadable: what it staged goes, one quarantine row records it), then
deduplicate the group's candidates (dedupe.py)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl

from flows.stages.ingest.files import CAND, NOT_THE_FILE, READ_ERRORS, RawFile, one_line
from transforms.ingest.formats import SUPPORTED
from transforms.ingest.normalize import normalize_sql
from transforms.ingest.typed_parquet import typed_parquet
from transforms.ingest.pipeline import (
    CANDIDATE_DDL, SCRATCH_PARQUET, candidates, ingest_batch, quarantine_rows, stage_typed_parquet, unreadable_row,
)
from transforms.ingest.readers import CsvNeedsRecordParser, parquet_file, read_batches
from transforms.ingest.report import STATUS_INGESTED, STATUS_SKIPPED, STATUS_UNREADABLE, FileResult


class Groups:
    """The reading of an `IngestRun`'s groups (flows/stages/ingest/run.py holds its state)."""

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
        except NOT_THE_FILE:
            raise
        except READ_ERRORS as e:
            self._clear_staged(f)
            shutil.rmtree(self._file_dir(f), ignore_errors=True)
            self._unreadable(f, r, one_line(e).replace(str(f.path), f"raw/{f.source_file}"))

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
                        fdir / f"quar-{k:05d}.parquet", **SCRATCH_PARQUET)
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
            except NOT_THE_FILE:
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

    def _insert_candidates(self, df: pl.DataFrame) -> None:
        self.con.register("__cand", df.to_arrow())
        try:
            self.con.execute(f"INSERT INTO {CAND} SELECT * FROM __cand")
        finally:
            self.con.unregister("__cand")
