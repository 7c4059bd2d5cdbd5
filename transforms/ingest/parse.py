"""Parse: the common text form of a batch (transforms/ingest/normalize.py) -> typed columns.

`PARSE_SQL` turns text into types: exact decimals (a numeric string never goes through a float;
a float from a file arrives as its shortest representation and is rounded half away from zero
to 9 places), instants (epoch milliseconds, or ISO-8601 with naive = UTC), dimension pairs, the
cancellation flag, the UTC event date and the dedup key. `BatchView` runs both steps over one
raw batch in DuckDB.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa

from catalog.lake import sql_str
from transforms.ingest.formats import CANCEL_DIMENSION
from transforms.ingest.normalize import MAX_MILLIS, NON_FINITE_RE, NUMBER_RE, _json_kind, _json_text, normalize_sql
from transforms.ingest.readers import RawBatch


def dedup_key_sql(ts: str) -> str:
    """The dedup key (README, dedupe.py) over the columns customer_id, meter_api_name, uid,
    is_cancel, p_value, dims_kv and the instant `ts`; count-type meters from `valueless_meters`.

    The key is the JSON text itself, not a hash of it: exact (no two different events share a
    key, whatever their ids), and cheaper to build. It lives only while a run deduplicates (the
    candidate table, the `seen` table); the events table does not store it — `dedupe.events_keys_sql`
    computes it again from an event's columns."""
    return f"""CASE WHEN uid IS NOT NULL
       THEN 'u:' || json_array(customer_id, meter_api_name, uid, is_cancel)
       ELSE 'c:' || json_array(customer_id, meter_api_name, epoch_us({ts}),
              CASE WHEN meter_api_name IN (SELECT meter_api_name FROM valueless_meters) THEN NULL
                   ELSE CAST(p_value AS VARCHAR) END,
              list_transform(dims_kv, lambda p: [p.key, p.value]), is_cancel)
  END"""


_NUMERIC_KINDS = "('string', 'integer', 'float', 'decimal')"
_EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"

PARSE_SQL = f"""
WITH a AS (
  SELECT ctf.*,
    CASE WHEN meter_value_k IN {_NUMERIC_KINDS} THEN trim(meter_value) END AS _mv,
    CASE WHEN meter_time_in_millis_k IN {_NUMERIC_KINDS} THEN trim(meter_time_in_millis) END AS _ms,
    CASE WHEN event_time_k IN ('string', 'timestamp', 'date') THEN trim(event_time) END AS _et,
    CASE WHEN dims_json IS NOT NULL AND json_valid(dims_json) THEN
      CASE WHEN starts_with(ltrim(dims_json), '{{') THEN 'OBJECT' ELSE json_type(dims_json) END END AS _djt
  FROM ctf
), b AS (
  SELECT a.*,
    coalesce(regexp_full_match(_mv, {sql_str(NUMBER_RE)}), false) AS v_num,
    coalesce(regexp_full_match(lower(_mv), {sql_str(NON_FINITE_RE)})
             OR (regexp_full_match(_mv, {sql_str(NUMBER_RE)}) AND isinf(TRY_CAST(_mv AS DOUBLE))), false) AS v_nonfinite,
    CASE WHEN regexp_full_match(_ms, {sql_str(NUMBER_RE)}) THEN TRY_CAST(_ms AS DOUBLE) END AS _msd,
    CASE WHEN regexp_matches(_et, '^\\d{{4}}-\\d{{2}}-\\d{{2}}') THEN TRY_CAST(_et AS TIMESTAMPTZ) END AS _ets,
    CASE WHEN _djt = 'OBJECT' THEN json_transform(dims_json, '"MAP(VARCHAR, JSON)"') END AS _djm
  FROM a
), d AS (
  SELECT b.*,
    CASE WHEN v_num AND NOT v_nonfinite THEN TRY_CAST(_mv AS DECIMAL(38, 9)) END AS p_value,
    CASE WHEN meter_time_in_millis IS NOT NULL THEN 'meter_time_in_millis'
         WHEN event_time IS NOT NULL THEN 'event_time' END AS time_field,
    CASE WHEN meter_time_in_millis IS NOT NULL THEN
           CASE WHEN _msd = floor(_msd) AND _msd > 0 AND _msd <= {MAX_MILLIS}
                THEN CAST(epoch_ms(CAST(_msd AS BIGINT)) AS TIMESTAMPTZ) END
         WHEN event_time IS NOT NULL THEN
           CASE WHEN isfinite(_ets) AND _ets > {_EPOCH} THEN _ets END
    END AS p_ts,
    coalesce(CASE WHEN meter_time_in_millis IS NOT NULL THEN _msd <= 0
                  WHEN event_time IS NOT NULL THEN _ets <= {_EPOCH} END, false) AS ts_nonpositive,
    CASE WHEN dims_kind IS NOT NULL THEN 'dimensions must be an object of string values, got ' || dims_kind
         WHEN dims_json IS NOT NULL AND _djt IS NULL THEN 'dimensions is not valid JSON'
         WHEN dims_json IS NOT NULL AND _djt <> 'OBJECT' THEN 'dimensions must be a JSON object, got ' || lower(_djt)
    END AS dims_type_error,
    CASE WHEN _djt = 'OBJECT' AND _djm IS NULL THEN
      'dimension key ' || to_json(list_filter(json_keys(dims_json), lambda k, i: list_position(json_keys(dims_json), k) <> i)[1])
      || ' appears more than once' END AS dims_error,
    list_concat(
      coalesce(list_transform(map_entries(_djm), lambda e: {{
        'key': e.key, 'value': {_json_text('e.value')}, 'k': coalesce({_json_kind('e.value')}, 'null')}}), []),
      coalesce(dim_pairs, [])) AS dims
  FROM b
), e AS (
  SELECT d.*,
    CASE WHEN unique_id_k IN ('string', 'integer') AND trim(unique_id) <> '' THEN unique_id END AS uid,
    coalesce(list_bool_or(list_transform(dims, lambda p: p.key = {sql_str(CANCEL_DIMENSION)}
                                                         AND lower(trim(p.value)) = 'true')), false) AS is_cancel,
    list_sort(list_transform(dims, lambda p: {{'key': p.key, 'value': p.value}})) AS dims_kv
  FROM d
)
SELECT row_number, record_error,
  customer_id, customer_id_k, meter_api_name, meter_api_name_k, meter_value, meter_value_k,
  meter_time_in_millis, event_time, unique_id, unique_id_k,
  dims_type_error, dims_error, dims, dims_kv,
  v_num, v_nonfinite, p_value, time_field, coalesce(meter_time_in_millis, event_time) AS time_text,
  p_ts, ts_nonpositive, uid, is_cancel, CAST(p_ts AS DATE) AS event_date,
  {dedup_key_sql('p_ts')} AS dedup_key
FROM e
"""


_CHUNK_ROWS = 16_384


def prepare(con: duckdb.DuckDBPyConnection, valueless_meters: list[str]) -> None:
    """Session settings the parse relies on (UTC instants) and the run's count-type meters."""
    con.execute("SET TimeZone = 'UTC'")
    con.register("valueless_meters", pa.table({"meter_api_name": pa.array(sorted(valueless_meters), pa.string())}))


class BatchView:
    """A raw batch registered in DuckDB as `batch`, its common text form as the view `ctf`.

    `parse()` gives the parsed frame (without the bulky display columns); `display(rows)` the
    record as JSON text (`raw`) and the dimensions as text, for the given record numbers only
    (the rejected ones). Use as a context manager; `prepare(con, ...)` must have run.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, batch: RawBatch, ctf_sql: str | None = None):
        self.con, self.batch, self.ctf_sql = con, batch, ctf_sql or normalize_sql(batch)

    def __enter__(self) -> "BatchView":
        table = self.batch.table
        if table.num_rows > _CHUNK_ROWS:  # several chunks: DuckDB scans them in parallel
            table = pa.Table.from_batches(table.combine_chunks().to_batches(max_chunksize=_CHUNK_ROWS))
        self.con.register("batch", table)
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW ctf AS {self.ctf_sql}")
        return self

    def __exit__(self, *exc) -> None:
        self.con.unregister("batch")

    def parse(self) -> pl.DataFrame:
        return self.con.sql(PARSE_SQL).pl()

    def display(self, row_numbers: pl.Series) -> pl.DataFrame:
        """`raw` and `dimensions` text of the given records: the common text form is computed
        over those records only (the batch is narrowed to them first, then put back)."""
        import pyarrow.compute as pc

        table = self.batch.table
        wanted = row_numbers.cast(pl.Int64).to_arrow()
        self.con.register("batch", table.filter(pc.is_in(table["__rn"], value_set=wanted)))
        try:
            return self.con.sql("SELECT row_number, raw, dimensions FROM ctf").pl()
        finally:
            self.con.register("batch", table)


def parse_batch(con: duckdb.DuckDBPyConnection, batch: RawBatch, ctf_sql: str | None = None) -> pl.DataFrame:
    """One raw batch -> the parsed frame plus `raw` and `dimensions` text (small batches, tests)."""
    with BatchView(con, batch, ctf_sql) as view:
        parsed = view.parse()
        shown = view.display(parsed["row_number"])
    return parsed.join(shown, on="row_number", how="left", maintain_order="left")
