"""One batch through the ingest transforms, and the shapes of what is staged.

    raw batch --normalize/parse (DuckDB)--> parsed --validate (Pandera)--> accepted | rejected

Accepted rows become *candidates* (events columns plus the file order needed by dedupe);
rejected rows become quarantine rows (fields as read, the record as JSON, reason, detail).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from catalog.schemas import DIMS, TS, conform
from transforms.ingest.normalize import BatchView
from transforms.ingest.readers import RawBatch
from transforms.ingest.validate import Rules, Validated, validate

CANDIDATE_COLUMNS = [
    "customer_id", "meter_api_name", "meter_value", "event_time", "unique_id", "dims", "dedup_key",
    "is_cancel", "event_date", "file_seq", "row_number", "source_file", "ingested_at",
]


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
