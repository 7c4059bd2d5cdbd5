"""Step 1b of an ingest run: the quarantined records the plan found are judged again, before the
new files (they were read first), a source file at a time."""

from __future__ import annotations

from typing import Iterator

import polars as pl

from catalog.lake import sql_str
from flows.stages.ingest.files import CAND, GROUP_ROWS, NOT_THE_FILE, READ_ERRORS, RawFile, sql_paths
from transforms.ingest.formats import Format, detect_format
from transforms.ingest.pipeline import CANDIDATE_DDL, candidates, ingest_batch
from transforms.ingest.readers import RawBatch, read_rows
from transforms.ingest.requeue import replay_batches, requeue_sql


class Revalidate:
    """The revalidation of an `IngestRun` (flows/stages/ingest/run.py holds its state)."""

    def _due(self, src: str, files: list[str]) -> pl.DataFrame:
        """The records of source file `src` in quarantine `files` to judge again (`requeue_sql`),
        one per row (a lake from before one row per file may hold two: the later counts)."""
        rel = (f"(SELECT * FROM read_parquet({sql_paths(files)}, filename = true, union_by_name = true) "
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
            f = raw_now.get(src)
            f = f if f is not None and f.sha256 == sha_of.get(src) else None
            pending = self._revalidate_file(seq, src, files, fmt_of.get(src), f, pending)
        if pending:
            self._write_revalidated()
        if self._revalidated:
            self._count_moves()

    def _revalidate_file(self, seq: int, src: str, files: list[str], fmt_name: str | None, f: RawFile | None,
                         pending: int) -> int:
        """Judge again the due records of source file `src` (held in the quarantine `files`; `f`
        its raw file when that is the version ingested); returns the candidates pending a write."""
        due = self._due(src, files)
        if due.height == 0:
            return pending
        part = due.sort("row_number", "ingested_at").unique("row_number", keep="last", maintain_order=True)
        fmt = detect_format("x." + (fmt_name or ""))
        if fmt is None:
            return pending
        files = sorted(due["filename"].unique().to_list())
        touched: list[pl.Series] = []  # rows that leave quarantine or change
        for b in self._replay(src, part, fmt, f, files):
            v = ingest_batch(self.con, b, self.rules)
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
        return pending

    def _count_moves(self) -> None:
        """The moves, on the ingest_files row of the run that quarantined each record; the progress line."""
        for src, q_at, acc, dup in self.con.sql("SELECT source_file, q_at, count(*) FILTER (WHERE written), "
                                                "count(*) FILTER (WHERE NOT written) FROM rq_moved GROUP BY 1, 2"
                                                ).fetchall():
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
FROM (SELECT source_file, row_number FROM read_parquet({sql_paths(written)}, hive_partitioning = true)) w
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
            except NOT_THE_FILE:
                raise
            except READ_ERRORS:
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
                    f"SELECT row_number, raw FROM read_parquet({sql_paths(files)}, union_by_name = true) "
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
