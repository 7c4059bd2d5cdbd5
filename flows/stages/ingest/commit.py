"""Step 3 of an ingest run: the staged results written into the warehouse, in the write order of
the package doc (flows/stages/ingest/__init__.py, "Crash safety"), and the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from catalog.lake import sql_str
from catalog.schemas import SCHEMAS, conform
from flows.stages.ingest.files import CLOCK_STATE, sql_paths
from transforms.ingest.report import STATUS_SKIPPED, IngestReport


class Commit:
    """The commit of an `IngestRun` (flows/stages/ingest/run.py holds its state)."""

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
            events = f"read_parquet({sql_paths(self._event_files)}, hive_partitioning = true)"
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
            con.execute(f"COPY (SELECT * FROM read_parquet({sql_paths(quar)}) ORDER BY source_file, row_number NULLS FIRST) "
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
