"""Normalize: a raw batch of any format -> one frame of the fields as read and as parsed.

Two SQL steps run in DuckDB over the Arrow batch (registered as `batch`):

1. `normalize_sql(batch)` (per format) gives the *common text form*: per record its number,
   `raw` (the record as JSON text), `record_error` (the record itself is unusable), and for each
   SPEC §2 field its value as text exactly as read plus its kind (`string`, `integer`, `float`,
   `decimal`, `bool`, `object`, `array`, `timestamp`, `date`); dimensions as display text, JSON
   text still to parse (`dims_json`), a wrong container kind (`dims_kind`), or ready pairs
   (`dim_pairs`: Parquet MAP/STRUCT, CSV extra columns).
2. `PARSE_SQL` turns text into types: exact decimals (a numeric string never goes through a
   float; a float from a file arrives as its shortest representation and is rounded half away
   from zero to 9 places), instants (epoch milliseconds, or ISO-8601 with naive = UTC),
   dimension pairs, the cancellation flag, the UTC event date and the dedup key.

Nothing is decided here: the rules (and reasons) are checked by `validate` with Pandera.
Every name taken from a file reaches SQL only as a quoted literal or identifier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import polars as pl
import pyarrow as pa

from catalog.lake import sql_ident, sql_str
from transforms.ingest.formats import FIELD_NAMES, KNOWN_NAMES, SCALAR_FIELDS, CANCEL_DIMENSION
from transforms.ingest.readers import RawBatch

PAIRS_TYPE = "STRUCT(key VARCHAR, value VARCHAR, k VARCHAR)[]"
NUMBER_RE = r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"
NON_FINITE_RE = r"[+-]?(nan|inf|infinity)"
MAX_MILLIS = 253402300799999  # 9999-12-31T23:59:59.999Z

CTF_COLUMNS = (
    ["row_number", "raw", "record_error"]
    + [c for f in SCALAR_FIELDS for c in (f, f + "_k")]
    + ["dimensions", "dims_json", "dims_kind", "dim_pairs"]
)


def _json_kind(v: str) -> str:
    """The kind of a JSON value (valid JSON text; SQL NULL for JSON null) from its first character."""
    t = f"CAST({v} AS VARCHAR)"
    return (f"CASE WHEN {v} IS NULL THEN NULL WHEN starts_with({t}, '\"') THEN 'string' "
            f"WHEN starts_with({t}, '{{') THEN 'object' WHEN starts_with({t}, '[') THEN 'array' "
            f"WHEN {t} IN ('true', 'false') THEN 'bool' WHEN {t} = 'null' THEN NULL "
            f"WHEN regexp_full_match({t}, '-?[0-9]+') THEN 'integer' ELSE 'float' END")


def _json_text(v: str) -> str:
    """A JSON value as text: a string unquoted (unescaped only if it has escapes), else its JSON."""
    t = f"CAST({v} AS VARCHAR)"
    return (f"CASE WHEN starts_with({t}, '\"') THEN CASE WHEN contains({t}, '\\') "
            f"THEN json_extract_string({v}, '$') ELSE {t}[2:-2] END ELSE {t} END")


# ---------------------------------------------------------------- step 1: per format


def normalize_sql(b: RawBatch) -> str:
    if b.kind == "json":
        return _json_sql()
    if b.kind == "csv":
        return _csv_sql(b.names)
    if b.kind == "parquet":
        return _parquet_sql(b.names, b.types)
    raise ValueError(b.kind)  # pragma: no cover


def _json_sql() -> str:
    """JSON records: one parse of each record (`json_transform`), dimensions straight into a
    MAP; only a record whose dimensions are not a plain object (a JSON string holding an object,
    a repeated key, a wrong type) pays a second look."""
    spec = json.dumps({n: ("MAP(VARCHAR, JSON)" if n == "dimensions" else "JSON") for n in sorted(KNOWN_NAMES)})
    fields = ",\n    ".join(
        f"coalesce({', '.join('o.' + sql_ident(n) for n in names)}) AS {sql_ident('v_' + f)}"
        if len(names) > 1 else f"o.{sql_ident(names[0])} AS {sql_ident('v_' + f)}"
        for f, names in FIELD_NAMES.items()
    )
    out = []
    for f in SCALAR_FIELDS:
        v = sql_ident("v_" + f)
        out.append(f"{_json_text(v)} AS {sql_ident(f)}, {_json_kind(v)} AS {sql_ident(f + '_k')}")
    d = sql_ident("v_dimensions")
    dj = "json_extract(raw, '$.dimensions')"
    return f"""
WITH s AS (
  SELECT __rn AS row_number, c0 AS raw,
    CASE WHEN NOT json_valid(c0) THEN 'the record is not valid JSON'
         WHEN NOT starts_with(c0, '{{') THEN 'the record is a JSON ' || lower(json_type(c0)) || ', not an object'
    END AS record_error,
    CASE WHEN json_valid(c0) AND starts_with(c0, '{{') THEN json_transform(c0, {sql_str(spec)}) END AS o
  FROM batch
), f AS (
  SELECT row_number, raw, record_error,
    {fields},
    CASE WHEN o IS NOT NULL AND o.dimensions IS NULL AND contains(raw, 'dimensions')
         THEN json_type(raw, '$.dimensions') END AS dims_type
  FROM s
)
SELECT row_number, raw, record_error,
  {", ".join(out)},
  CASE WHEN o_dims_text IS NOT NULL THEN o_dims_text END AS dimensions,
  CASE WHEN dims_type = 'OBJECT' THEN CAST({dj} AS VARCHAR)
       WHEN dims_type = 'VARCHAR' THEN json_extract_string(raw, '$.dimensions') END AS dims_json,
  CASE WHEN dims_type NOT IN ('OBJECT', 'VARCHAR', 'NULL') THEN {_json_kind(dj)} END AS dims_kind,
  list_transform(map_entries({d}), lambda e: {{
    'key': e.key, 'value': {_json_text('e.value')}, 'k': coalesce({_json_kind('e.value')}, 'null')}}) AS dim_pairs
FROM (SELECT *, CASE WHEN contains(raw, 'dimensions') THEN
        CASE WHEN json_type(raw, '$.dimensions') = 'VARCHAR' THEN json_extract_string(raw, '$.dimensions')
             ELSE CAST({dj} AS VARCHAR) END END AS o_dims_text FROM f)"""


def _csv_sql(names: list[str]) -> str:
    cols = {n: sql_ident(f"c{i}") for i, n in enumerate(names)}

    def text(field: str) -> str:
        present = [f"NULLIF({cols[n]}, '')" for n in FIELD_NAMES[field] if n in cols]
        if not present:
            return "NULL::VARCHAR"
        return present[0] if len(present) == 1 else f"coalesce({', '.join(present)})"

    out = []
    for f in SCALAR_FIELDS:
        t = text(f)
        out.append(f"{t} AS {sql_ident(f)}, CASE WHEN {t} IS NOT NULL THEN 'string' END AS {sql_ident(f + '_k')}")
    extra = [n for n in names if n not in KNOWN_NAMES]
    if extra:
        items = ", ".join(f"{{'key': {sql_str(n)}, 'value': NULLIF({cols[n]}, ''), 'k': 'string'}}" for n in extra)
        pairs = f"list_filter([{items}], lambda p: p.value IS NOT NULL)"
        shown = (f"CASE WHEN len({pairs}) > 0 THEN to_json(map_from_entries(list_transform({pairs}, "
                 f"lambda p: {{'key': p.key, 'value': p.value}}))) END")
    else:
        pairs, shown = f"NULL::{PAIRS_TYPE}", "NULL::VARCHAR"
    dims_text = text("dimensions")
    raw_obj = "json_object(" + ", ".join(f"{sql_str(n)}, {cols[n]}" for n in names) + ")" if names else "'{}'"
    return f"""
SELECT __rn AS row_number, coalesce(__raw, {raw_obj}) AS raw, __err AS record_error,
  {", ".join(out)},
  coalesce({dims_text}, {shown}) AS dimensions,
  {dims_text} AS dims_json,
  NULL::VARCHAR AS dims_kind,
  {pairs} AS dim_pairs
FROM batch"""


def arrow_kind(t: pa.DataType) -> str | None:
    """How a Parquet column's type reads as a SPEC field (None: no value at all)."""
    if pa.types.is_dictionary(t):
        return arrow_kind(t.value_type)
    if pa.types.is_null(t):
        return None
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_map(t) or pa.types.is_struct(t):
        return "object"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "array"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    return str(t)


def _parquet_sql(names: list[str], types: list[pa.DataType], source: str = "batch") -> str:
    idx: dict[str, int] = {}
    for i, n in enumerate(names):
        idx.setdefault(n, i)
    col = {n: sql_ident(f"c{i}") for n, i in idx.items()}

    def field(f: str) -> tuple[str, str]:
        present = [n for n in FIELD_NAMES[f] if n in idx and arrow_kind(types[idx[n]]) is not None]
        if not present:
            return "NULL::VARCHAR", "NULL::VARCHAR"
        texts = [f"CAST({col[n]} AS VARCHAR)" for n in present]
        kinds = [sql_str(arrow_kind(types[idx[n]])) for n in present]
        if len(present) == 1:
            return texts[0], f"CASE WHEN {col[present[0]]} IS NOT NULL THEN {kinds[0]} END"
        kind = "CASE " + " ".join(f"WHEN {col[n]} IS NOT NULL THEN {k}" for n, k in zip(present, kinds)) + " END"
        return f"coalesce({', '.join(texts)})", kind

    out = []
    for f in SCALAR_FIELDS:
        t, k = field(f)
        out.append(f"{t} AS {sql_ident(f)}, {k} AS {sql_ident(f + '_k')}")

    shown, dims_json, dims_kind, pairs = "NULL::VARCHAR", "NULL::VARCHAR", "NULL::VARCHAR", f"NULL::{PAIRS_TYPE}"
    if "dimensions" in idx:
        c, t = col["dimensions"], types[idx["dimensions"]]
        if pa.types.is_dictionary(t):
            t = t.value_type
        kind = arrow_kind(t)
        if pa.types.is_map(t):
            vk = sql_str(arrow_kind(t.item_type) or "null")
            pairs = (f"list_transform(map_entries({c}), lambda e: {{'key': CAST(e.key AS VARCHAR), "
                     f"'value': CAST(e.value AS VARCHAR), 'k': {vk}}})")
            shown = f"to_json({c})"
        elif pa.types.is_struct(t):
            items = ", ".join(
                f"{{'key': {sql_str(t.field(j).name)}, 'value': CAST(struct_extract({c}, {sql_str(t.field(j).name)}) AS VARCHAR), "
                f"'k': {sql_str(arrow_kind(t.field(j).type) or 'null')}}}"
                for j in range(t.num_fields)
            )
            pairs = f"CASE WHEN {c} IS NOT NULL THEN list_filter([{items}], lambda p: p.value IS NOT NULL) END" if items else f"NULL::{PAIRS_TYPE}"
            shown = f"to_json({c})"
        elif kind == "string":
            dims_json = shown = f"CAST({c} AS VARCHAR)"
        elif kind is not None:
            dims_kind = f"CASE WHEN {c} IS NOT NULL THEN {sql_str(kind)} END"
            shown = f"CAST({c} AS VARCHAR)"
    raw_obj = "json_object(" + ", ".join(f"{sql_str(n)}, {sql_ident(f'c{i}')}" for i, n in enumerate(names)) + ")" if names else "'{}'"
    return f"""
SELECT __rn AS row_number, {raw_obj}::VARCHAR AS raw, NULL::VARCHAR AS record_error,
  {", ".join(out)},
  {shown} AS dimensions,
  {dims_json} AS dims_json,
  {dims_kind} AS dims_kind,
  {pairs} AS dim_pairs
FROM {source}"""


# ---------------------------------------------------------------- step 2: text -> types

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


# ---------------------------------------------------------------- typed Parquet path
#
# A Parquet file whose SPEC columns are already typed (string ids, a numeric value, integer
# epoch milliseconds, a MAP<string, string> of dimensions, no `event_time`) is read by DuckDB's
# own Parquet reader and checked as numbers, not through the common text form. The SQL below
# gives the same parsed columns as `PARSE_SQL` for such a file (same expressions where they are
# cheap; integer millis compared as integers, a double's finiteness by `isfinite`), split in two
# passes: `typed_check_sql` (the columns Pandera checks) and `typed_events_sql` (the candidate
# events of the accepted records). Any other Parquet file takes the general path.


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
