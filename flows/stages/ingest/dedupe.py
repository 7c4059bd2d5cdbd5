"""Step 2, the end of a group: its candidates deduplicated in DuckDB against each other (file
order, row order) and against the keys already taken (`seen`: events of earlier runs on the same
UTC dates, loaded partition by partition, plus this run's earlier groups); the winners staged as
events partitions. A new version of a file keeps the events of its earlier versions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa

from catalog.lake import sql_str
from flows.stages.common import UsageError
from flows.stages.ingest.files import CAND, CHANGED_DETAIL, SEEN, RawFile, sql_paths
from transforms.ingest.dedupe import events_keys_sql, events_sql, firsts_sql, remember_sql, taken_sql, winners_sql
from transforms.ingest.parse import parse_batch
from transforms.ingest.pipeline import SCRATCH_PARQUET, quarantine_rows
from transforms.ingest.readers import read_rows


class Dedupe:
    """The deduplication of an `IngestRun`'s groups (flows/stages/ingest/run.py holds its state)."""

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
            self._file_dir(f) / "quar-changed.parquet", **SCRATCH_PARQUET)
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
            rel = f"read_parquet({sql_paths(taken)}, hive_partitioning = true, union_by_name = true)"
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
        events = f"read_parquet({sql_paths(written)}, hive_partitioning = true)"
        for p in written:  # <out>/event_date=D/part-N.parquet
            self._unremembered.setdefault(dt.date.fromisoformat(p.parent.name.split("=", 1)[1]), []).append(p)
        counts = dict(con.sql(f"SELECT source_file, count(*) FROM {events} GROUP BY 1").fetchall())
        self._event_files.extend(written)
        return {k: int(v) for k, v in counts.items()}, written
