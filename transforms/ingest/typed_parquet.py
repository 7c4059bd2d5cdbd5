"""The typed Parquet path of ingest: a Parquet file checked as numbers, not through the text form.

A Parquet file whose SPEC columns are already typed (string ids, a numeric value, integer
epoch milliseconds, a MAP<string, string> of dimensions, no `event_time`) is read by DuckDB's
own Parquet reader and checked as numbers, not through the common text form. The SQL below
gives the same parsed columns as `PARSE_SQL` for such a file (same expressions where they are
cheap; integer millis compared as integers, a double's finiteness by `isfinite`), split in two
passes: `typed_check_sql` (the columns Pandera checks) and `typed_events_sql` (the candidate
events of the accepted records). Any other Parquet file takes the general path.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from catalog.lake import sql_ident, sql_str
from transforms.ingest.formats import CANCEL_DIMENSION, FIELD_NAMES
from transforms.ingest.normalize import MAX_MILLIS, PAIRS_TYPE, _parquet_sql, arrow_kind
from transforms.ingest.parse import dedup_key_sql


@dataclass(frozen=True)
class TypedParquet:
    """How a Parquet file's columns map onto SPEC fields on the typed path."""

    names: list[str]  # the file's column names (pyarrow's schema)
    types: list[pa.DataType]
    cols: dict[str, str]  # SPEC field -> the file's column name

    def kind(self, f: str) -> str | None:
        n = self.cols.get(f)
        return None if n is None else arrow_kind(self.types[self.names.index(n)])


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_signed_integer(t)


def _plain(t: pa.DataType) -> bool:
    """A column type that DuckDB's Parquet reader gives exactly as pyarrow's does (so that the
    display text of a rejected record is the same on both paths)."""
    if _is_str(t) or _is_int(t) or pa.types.is_boolean(t) or pa.types.is_floating(t) and not pa.types.is_float16(t):
        return True
    if pa.types.is_decimal128(t):
        return True
    if pa.types.is_map(t):
        return _is_str(t.key_type) and _is_str(t.item_type)
    return False


def typed_parquet(names: list[str], types: list[pa.DataType]) -> TypedParquet | None:
    """The typed plan for a Parquet schema, or None when the file needs the general path."""
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered) or not all(_plain(t) for t in types):
        return None  # DuckDB's column names are case-insensitive; unusual types: general path
    cols: dict[str, str] = {}
    for f, fnames in FIELD_NAMES.items():
        present = [n for n in fnames if n in names]
        if len(present) > 1:
            return None  # snake_case and camelCase both present: coalesced on the general path
        if present:
            cols[f] = present[0]
    t = {f: types[names.index(n)] for f, n in cols.items()}
    if "event_time" in t:
        return None
    for f in ("customer_id", "meter_api_name", "unique_id"):
        if f in t and not _is_str(t[f]):
            return None
    if "meter_value" in t and not (_is_int(t["meter_value"]) or pa.types.is_floating(t["meter_value"])
                                   or pa.types.is_decimal128(t["meter_value"])):
        return None
    if "meter_time_in_millis" in t and not _is_int(t["meter_time_in_millis"]):
        return None
    if "dimensions" in t and not pa.types.is_map(t["dimensions"]):
        return None
    return TypedParquet(list(names), list(types), cols)


def parquet_source(path, names: list[str], where: str | None = None) -> str:
    """The file read by DuckDB in the shape of a raw batch: `__rn` (1-based) and `c0..cN`."""
    cols = ", ".join(f"{sql_ident(n)} AS {sql_ident(f'c{i}')}" for i, n in enumerate(names))
    sel = f"file_row_number + 1 AS __rn{', ' + cols if cols else ''}"
    return (f"(SELECT {sel} FROM read_parquet({sql_str(path)}, file_row_number = true)"
            f"{' WHERE ' + where if where else ''})")


def _typed_fields(p: TypedParquet) -> str:
    """Per record: the parsed columns shared by both passes, over `parquet_source` as `batch`."""
    c = {f: sql_ident(f"c{p.names.index(n)}") for f, n in p.cols.items()}

    def text(f: str) -> str:
        return f"CAST({c[f]} AS VARCHAR)" if f in c else "NULL::VARCHAR"

    def kind(f: str) -> str:
        return f"CASE WHEN {c[f]} IS NOT NULL THEN {sql_str(p.kind(f))} END" if f in c else "NULL::VARCHAR"

    out = [f"{text(f)} AS {sql_ident(f)}, {kind(f)} AS {sql_ident(f + '_k')}"
           for f in ("customer_id", "meter_api_name", "meter_value", "unique_id")]
    out.append(f"{text('meter_time_in_millis')} AS meter_time_in_millis")
    v, vk = c.get("meter_value"), p.kind("meter_value")
    if v is None:
        out.append("false AS v_num, false AS v_nonfinite, NULL::DECIMAL(38, 9) AS p_value")
    elif vk == "float":  # a double's text matches NUMBER_RE exactly when it is finite
        out.append(f"coalesce(isfinite({v}), false) AS v_num, coalesce(NOT isfinite({v}), false) AS v_nonfinite, "
                   f"CASE WHEN isfinite({v}) THEN TRY_CAST(CAST({v} AS VARCHAR) AS DECIMAL(38, 9)) END AS p_value")
    else:  # integer or decimal: always a number, always finite
        out.append(f"{v} IS NOT NULL AS v_num, false AS v_nonfinite, "
                   f"TRY_CAST(CAST({v} AS VARCHAR) AS DECIMAL(38, 9)) AS p_value")
    ms = c.get("meter_time_in_millis")
    if ms is None:
        out.append("NULL::TIMESTAMPTZ AS p_ts, false AS ts_nonpositive, NULL::DATE AS event_date")
    else:
        ok = f"({ms} > 0 AND {ms} <= {MAX_MILLIS})"
        out.append(f"CASE WHEN {ok} THEN CAST(epoch_ms(CAST({ms} AS BIGINT)) AS TIMESTAMPTZ) END AS p_ts, "
                   f"coalesce({ms} <= 0, false) AS ts_nonpositive, "
                   f"CASE WHEN {ok} THEN CAST(epoch_ms(CAST({ms} AS BIGINT)) AS DATE) END AS event_date")
    if "dimensions" in c:
        d = c["dimensions"]
        out.append(f"coalesce(list_transform(map_entries({d}), lambda e: {{'key': CAST(e.key AS VARCHAR), "
                   f"'value': CAST(e.value AS VARCHAR), 'k': 'string'}}), []) AS dims")
    else:
        out.append(f"[]::{PAIRS_TYPE} AS dims")
    return ", ".join(out)


def typed_check_sql(p: TypedParquet, path) -> str:
    """What `validate` checks that only the file can tell, per record (`typed_check_frame`
    adds the columns that follow from the column types)."""
    return f"""
SELECT __rn AS row_number, customer_id, meter_api_name, meter_value, meter_time_in_millis, unique_id, dims,
  v_num, v_nonfinite, p_value, p_ts, ts_nonpositive
FROM (SELECT __rn, {_typed_fields(p)} FROM {parquet_source(path, p.names)})"""


def typed_check_frame(p: TypedParquet, df: pl.DataFrame) -> pl.DataFrame:
    """A chunk of `typed_check_sql` as the parsed frame `validate` takes (validate.PARSED_COLUMNS
    without the events-only columns): each field's kind is its column's, where it has a value."""
    def kind(f: str) -> pl.Expr:
        k = p.kind(f)
        return (pl.lit(None, pl.String) if k is None
                else pl.when(pl.col(f).is_not_null()).then(pl.lit(k)).otherwise(pl.lit(None, pl.String)))

    none = pl.lit(None, pl.String)
    ms = pl.col("meter_time_in_millis")
    return df.select(
        "row_number", none.alias("record_error"),
        "customer_id", kind("customer_id").alias("customer_id_k"),
        "meter_api_name", kind("meter_api_name").alias("meter_api_name_k"),
        "meter_value", kind("meter_value").alias("meter_value_k"),
        "meter_time_in_millis", none.alias("event_time"),
        "unique_id", kind("unique_id").alias("unique_id_k"),
        none.alias("dims_type_error"), none.alias("dims_error"), "dims",
        "v_num", "v_nonfinite", "p_value",
        pl.when(ms.is_not_null()).then(pl.lit("meter_time_in_millis")).otherwise(none).alias("time_field"),
        ms.alias("time_text"), "p_ts", "ts_nonpositive",
    )


def typed_events_sql(p: TypedParquet, path, rejected: str, file_seq: int, source_file: str,
                     ingested_at) -> str:
    """Candidate events (pipeline.CANDIDATE_COLUMNS) of the records not in `rejected(row_number)`.

    The records here passed validation, so the dimensions MAP has unique keys and string values:
    it is kept as read when its keys are already sorted (else rebuilt sorted), and the cancel
    flag is a lookup of its key; both equal what the general path computes from the pairs.
    """
    c = {f: sql_ident(f"c{p.names.index(n)}") for f, n in p.cols.items()}
    empty = "MAP {}::MAP(VARCHAR, VARCHAR)"
    if "dimensions" in c:
        d = c["dimensions"]
        dims = (f"CASE WHEN {d} IS NULL THEN {empty} "
                f"WHEN cardinality({d}) <= 1 OR map_keys({d}) = list_sort(map_keys({d})) THEN {d} "
                f"ELSE map_from_entries(list_sort(map_entries({d}))) END")
        cancel = f"coalesce(lower(trim({d}[{sql_str(CANCEL_DIMENSION)}])) = 'true', false)"
    else:
        dims, cancel = empty, "false"

    def text(f: str) -> str:
        return f"CAST({c[f]} AS VARCHAR)" if f in c else "NULL::VARCHAR"

    v = c.get("meter_value")
    if v is None:
        p_value = "NULL::DECIMAL(38, 9)"
    elif p.kind("meter_value") == "float":
        p_value = f"CASE WHEN isfinite({v}) THEN TRY_CAST(CAST({v} AS VARCHAR) AS DECIMAL(38, 9)) END"
    else:
        p_value = f"TRY_CAST(CAST({v} AS VARCHAR) AS DECIMAL(38, 9))"
    ms = c.get("meter_time_in_millis")
    # accepted records have a valid time: 0 < millis <= MAX_MILLIS
    p_ts = f"make_timestamptz(CAST({ms} AS BIGINT) * 1000)" if ms else "NULL::TIMESTAMPTZ"
    day = f"CAST(epoch_ms(CAST({ms} AS BIGINT)) AS DATE)" if ms else "NULL::DATE"
    uid = f"CASE WHEN trim({c['unique_id']}) <> '' THEN {c['unique_id']} END" if "unique_id" in c else "NULL::VARCHAR"
    return f"""
WITH e AS (
  SELECT __rn, {text('customer_id')} AS customer_id, {text('meter_api_name')} AS meter_api_name,
    {p_value} AS p_value, {p_ts} AS p_ts, {day} AS event_date, {uid} AS uid,
    {dims} AS dims, {cancel} AS is_cancel
  FROM {parquet_source(path, p.names)}
  WHERE __rn NOT IN (SELECT row_number FROM {rejected})
), k AS (
  SELECT e.*, map_entries(dims) AS dims_kv FROM e
)
SELECT customer_id, meter_api_name, p_value AS meter_value, p_ts AS event_time, uid AS unique_id,
  dims, {dedup_key_sql('p_ts')} AS dedup_key, is_cancel, event_date,
  CAST({int(file_seq)} AS INTEGER) AS file_seq, __rn AS row_number, {sql_str(source_file)} AS source_file,
  CAST({sql_str(ingested_at.isoformat())} AS TIMESTAMPTZ) AS ingested_at
FROM k"""


def typed_display_sql(p: TypedParquet, path, rows: str) -> str:
    """`raw` and `dimensions` text (as the general path shows them) of the records in `rows(row_number)`."""
    src = parquet_source(path, p.names, where=f"file_row_number + 1 IN (SELECT row_number FROM {rows})")
    return f"SELECT row_number, raw, dimensions FROM ({_parquet_sql(p.names, p.types, src)})"
