"""One batch through the ingest transforms, and the shapes of what is staged.

    raw batch --normalize/parse (DuckDB)--> parsed --validate (Pandera)--> accepted | rejected

Accepted rows become *candidates* (events columns plus the file order needed by dedupe);
rejected rows become quarantine rows (fields as read, the record as JSON, reason, detail).

A typed Parquet file (`typed_parquet.typed_parquet`) goes through `stage_typed_parquet` instead:
DuckDB reads the file itself; the checked columns stream to Pandera in chunks; the accepted
records go from DuckDB straight to the candidate Parquet (never through Python).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from catalog.schemas import DIMS, TS, conform
from transforms.ingest.parse import BatchView
from transforms.ingest.typed_parquet import (
    TypedParquet, typed_check_frame, typed_check_sql, typed_display_sql, typed_events_sql,
)
from transforms.ingest.readers import RawBatch
from transforms.ingest.validate import Rules, Validated, validate

SCRATCH_PARQUET = {"compression": "lz4", "statistics": False}  # staged files live for one run
CHECK_CHUNK_ROWS = 500_000  # typed Parquet: records per Pandera validation

CANDIDATE_COLUMNS = [
    "customer_id", "meter_api_name", "meter_value", "event_time", "unique_id", "dims", "dedup_key",
    "is_cancel", "event_date", "file_seq", "row_number", "source_file", "ingested_at",
]
# the candidate table in DuckDB (both paths insert into it; dedupe reads it)
CANDIDATE_DDL = (
    "customer_id VARCHAR, meter_api_name VARCHAR, meter_value DECIMAL(38, 9), event_time TIMESTAMPTZ, "
    "unique_id VARCHAR, dims MAP(VARCHAR, VARCHAR), dedup_key VARCHAR, is_cancel BOOLEAN, event_date DATE, "
    "file_seq INTEGER, row_number BIGINT, source_file VARCHAR, ingested_at TIMESTAMPTZ"
)


def ingest_batch(con: duckdb.DuckDBPyConnection, batch: RawBatch, rules: Rules, ctf_sql: str | None = None) -> Validated:
    """Parse and validate one batch; rejected rows carry `raw` and `dimensions` as read."""
    with BatchView(con, batch, ctf_sql) as view:
        v = validate(view.parse(), rules)
        if v.rejected.height:
            shown = view.display(v.rejected["row_number"])
            v.rejected = v.rejected.join(shown, on="row_number", how="left", maintain_order="left")
    return v


def candidates(accepted: pl.DataFrame, file_seq: int, source_file: str, ingested_at: dt.datetime) -> pl.DataFrame:
    """Accepted rows as candidate events (`dims`: the dimensions MAP, keys sorted)."""
    return accepted.select(
        "customer_id", "meter_api_name",
        pl.col("p_value").alias("meter_value"), pl.col("p_ts").alias("event_time"),
        pl.col("uid").alias("unique_id"), pl.col("dims_kv").cast(DIMS).alias("dims"),
        "dedup_key", "is_cancel", "event_date",
        pl.lit(file_seq, pl.Int32).alias("file_seq"), "row_number",
        pl.lit(source_file, pl.String).alias("source_file"),
        pl.lit(ingested_at).cast(TS).alias("ingested_at"),
    )


def quarantine_rows(rejected: pl.DataFrame, source_file: str, ingested_at: dt.datetime) -> pl.DataFrame:
    return conform("quarantine", rejected.select(
        "customer_id", "meter_api_name", "meter_value", "meter_time_in_millis", "event_time",
        "unique_id", "dimensions", "raw", "reason", "detail",
        pl.lit(source_file, pl.String).alias("source_file"), "row_number",
        pl.lit(ingested_at).cast(TS).alias("ingested_at"),
    ))


def unreadable_row(source_file: str, detail: str, ingested_at: dt.datetime) -> pl.DataFrame:
    """The one quarantine row of a file that cannot be read (row_number null; its bytes stay in raw/)."""
    row = pl.DataFrame({"reason": ["unreadable_file"], "detail": [detail], "source_file": [source_file]})
    return conform("quarantine", row.with_columns(pl.lit(ingested_at).cast(TS).alias("ingested_at")))


@dataclass
class Staged:
    """What one file staged: records read, accepted (before dedup), quarantined, by reason."""

    rows: int = 0
    valid: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)


def stage_typed_parquet(con: duckdb.DuckDBPyConnection, plan: TypedParquet, path: Path, rules: Rules, *,
                        file_seq: int, source_file: str, ingested_at: dt.datetime, out_dir: Path, cand: str,
                        chunk_rows: int = CHECK_CHUNK_ROWS) -> Staged:
    """A typed Parquet file -> `out_dir/quar-*.parquet` (rejected) and the table `cand` (accepted).

    1. check pass: the columns `validate` checks, streamed from DuckDB (its own cursor) to
       Pandera `chunk_rows` records at a time; the rejected records get their display text
       (`raw`, `dimensions`) from the file, for those records only, and are staged.
    2. events pass: DuckDB reads the file again and inserts the records not rejected into
       `cand` as candidates (dedup key, dimensions MAP, event date).
    `con` must be `parse.prepare`d.
    """
    st = Staged()
    rejected_rn: list[pl.Series] = []
    pending: list[pl.DataFrame] = []
    parts = 0

    def flush() -> None:
        nonlocal parts
        rej = pl.concat(pending)
        pending.clear()
        con.register("__show", rej.select("row_number").to_arrow())
        try:
            shown = con.sql(typed_display_sql(plan, path, "__show")).pl()
        finally:
            con.unregister("__show")
        rej = rej.join(shown, on="row_number", how="left", maintain_order="left")
        quarantine_rows(rej, source_file, ingested_at).write_parquet(out_dir / f"quar-{parts:05d}.parquet", **SCRATCH_PARQUET)
        parts += 1

    cur = con.cursor()  # the streaming read holds its connection; display queries run on `con`
    try:
        cur.execute("SET TimeZone = 'UTC'")
        reader = cur.sql(typed_check_sql(plan, path)).to_arrow_reader(chunk_rows)
        try:
            for rb in reader:
                if rb.num_rows == 0:
                    continue
                v = validate(typed_check_frame(plan, pl.from_arrow(rb)), rules, keep_accepted=False)
                st.rows += rb.num_rows
                if v.rejected.height:
                    rejected_rn.append(v.rejected["row_number"])
                    pending.append(v.rejected)
                    st.quarantined += v.rejected.height
                    st.reasons.update(v.rejected["reason"].to_list())
                    if sum(d.height for d in pending) >= chunk_rows:
                        flush()
        finally:
            reader.close()
    finally:
        cur.close()
    if pending:
        flush()
    st.valid = st.rows - st.quarantined
    if st.valid:
        _insert_accepted(con, plan, path, rejected_rn, cand, file_seq, source_file, ingested_at)
    return st


def _insert_accepted(con: duckdb.DuckDBPyConnection, plan: TypedParquet, path: Path, rejected_rn: list[pl.Series],
                     cand: str, file_seq: int, source_file: str, ingested_at: dt.datetime) -> None:
    """The events pass of `stage_typed_parquet`: the records not rejected, into `cand`."""
    rej = pl.concat(rejected_rn) if rejected_rn else pl.Series("row_number", [], pl.Int64)
    con.register("__rejected", pa.table({"row_number": rej.cast(pl.Int64).to_arrow()}))
    try:
        con.execute(f"INSERT INTO {cand} {typed_events_sql(plan, path, '__rejected', file_seq, source_file, ingested_at)}")
    finally:
        con.unregister("__rejected")
