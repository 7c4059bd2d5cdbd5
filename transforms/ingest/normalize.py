"""Normalize: a raw batch of any format -> one frame of the fields as read and as parsed.

Two SQL steps run in DuckDB over the Arrow batch (registered as `batch`):

1. `normalize_sql(batch)` (per format, here) gives the *common text form*: per record its
   number, `raw` (the record as JSON text), `record_error` (the record itself is unusable), and
   for each SPEC §2 field its value as text exactly as read plus its kind (`string`, `integer`,
   `float`, `decimal`, `bool`, `object`, `array`, `timestamp`, `date`); dimensions as display
   text, JSON text still to parse (`dims_json`), a wrong container kind (`dims_kind`), or ready
   pairs (`dim_pairs`: Parquet MAP/STRUCT, CSV extra columns).
2. `PARSE_SQL` (transforms/ingest/parse.py) turns text into types.

A Parquet file whose columns are already typed skips the text form: transforms/ingest/typed_parquet.py.
Nothing is decided here: the rules (and reasons) are checked by `validate` with Pandera.
Every name taken from a file reaches SQL only as a quoted literal or identifier.
"""

from __future__ import annotations

import json

import pyarrow as pa

from catalog.lake import sql_ident, sql_str
from transforms.ingest.formats import FIELD_NAMES, KNOWN_NAMES, SCALAR_FIELDS
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
