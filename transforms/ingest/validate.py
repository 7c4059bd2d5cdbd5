"""Validate: the SPEC §2 rules as a Pandera schema over a parsed batch (Polars).

The rules are a table of (reason, field, pass condition) (`_rules`); the Pandera schema has one
check per reason (named by the reason code) that all of the reason's field rules must pass.
`validate` runs the schema lazily over the whole batch (all checks, all rows), reads the
failing row indices from Pandera's `failure_cases`, gives each failing record exactly one reason
(the first in SPEC order, `REASONS`), then names the field (the reason's first failing rule) in a
`detail` that says what would be right.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from catalog.schemas import DEC, TS
from transforms.ingest.formats import BAD_IDENTIFIER_RE, DIMENSION_KEY_RE, IDENTIFIER_FIELDS

# SPEC §2 order; a record breaking several rules gets the first one. `changed_record` is not a
# rule of the record itself: dedupe finds it (a new version of a file changing an accepted row).
REASONS = (
    "missing_field", "bad_type", "bad_identifier", "non_finite_value", "bad_timestamp", "future_event",
    "too_old", "bad_dimension", "changed_record", "unreadable_file",
)
# reasons that depend on the run's as_of, not on the record: every later ingest re-validates them
CLOCK_REASONS = ("future_event", "too_old")
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
DEFAULT_MAX_EVENT_AGE_DAYS = 60

_ID_KINDS = ["string", "integer"]
_NUMERIC_KINDS = ["string", "integer", "float", "decimal"]
DIM_PAIR = pl.Struct({"key": pl.String, "value": pl.String, "k": pl.String})


@dataclass(frozen=True)
class Rules:
    """What a run checks against: its instant, the age limit, the count-type meters."""

    as_of: dt.datetime
    max_event_age_days: int = DEFAULT_MAX_EVENT_AGE_DAYS
    valueless_meters: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self):
        if self.as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        if self.max_event_age_days < 0:
            raise ValueError("max_event_age_days must be ≥ 0")

    @property
    def latest_allowed(self) -> dt.datetime:
        return self.as_of + FUTURE_TOLERANCE

    @property
    def oldest_allowed(self) -> dt.datetime:
        return self.as_of - dt.timedelta(days=self.max_event_age_days)

    @cached_property
    def schema(self) -> pa.DataFrameSchema:
        return _schema(self)


# ---------------------------------------------------------------- rule expressions


def _blank(c: str) -> pl.Expr:
    return pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")


def _valueless(rules: Rules) -> pl.Expr:
    return pl.col("meter_api_name").is_in(sorted(rules.valueless_meters))


def _identifier_ok(c: str) -> pl.Expr:
    """No control, format or separator character, no whitespace at either end (a blank id is
    another rule's: missing for customer_id and meter_api_name, none for unique_id)."""
    return _blank(c) | ~pl.col(c).str.contains(BAD_IDENTIFIER_RE)


def _key_ok(key: pl.Expr) -> pl.Expr:
    return key.str.contains(DIMENSION_KEY_RE).fill_null(False)


def _value_ok(value: pl.Expr, kind: pl.Expr) -> pl.Expr:
    """A dimension value is a string of 1–200 characters."""
    return ((kind == "string") & value.str.len_chars().is_between(1, 200)).fill_null(False)


# per record (for details): the first key breaking each rule
_KEY = pl.element().struct.field("key")
_BAD_KEY = pl.col("dims").list.eval(_KEY.filter(~_key_ok(_KEY))).list.first()
_BAD_VAL = pl.col("dims").list.eval(
    _KEY.filter(~_value_ok(pl.element().struct.field("value"), pl.element().struct.field("k")))).list.first()
_DUP_KEY = pl.col("dims").list.eval(_KEY.filter(_KEY.is_duplicated())).list.first()


def _dimensions_ok(lf: pl.LazyFrame) -> pl.Expr:
    """True where every dimension has a valid key, a valid value, and no key repeats.

    Computed over the exploded pairs (one pass, vectorized) rather than per list; the key
    pattern is matched once per distinct key (a batch has few), and repeated keys are looked
    for only in records with two pairs or more.
    """
    base = lf.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("__i"), "dims").collect()
    pairs = (
        base.lazy().explode("dims")
        .filter(pl.col("dims").is_not_null())
        .select("__i", pl.col("dims").struct.field("key").alias("k"),
                pl.col("dims").struct.field("value").alias("v"), pl.col("dims").struct.field("k").alias("t"))
        .collect()
    )
    keys = pairs.select(pl.col("k").unique().drop_nulls())
    bad_keys = keys.filter(~_key_ok(pl.col("k")))["k"]
    bad = pairs.filter(pl.col("k").is_null() | pl.col("k").is_in(bad_keys.implode())
                       | ~_value_ok(pl.col("v"), pl.col("t")))["__i"]
    multi = base.filter(pl.col("dims").list.len() >= 2)
    dup = multi.filter(pl.col("dims").list.eval(pl.element().struct.field("key")).list.n_unique()
                       < pl.col("dims").list.len())["__i"]
    bad_rows = pl.concat([bad, dup]).unique()
    return pl.col("dims_error").is_null() & ~pl.int_range(pl.len(), dtype=pl.Int64).is_in(bad_rows.implode())


def _rules(rules: Rules) -> list[tuple[str, str, object]]:
    """(reason, field, pass condition) in SPEC order; a condition is an expression or a
    function of the frame giving one. A record that is not a record (bad JSON, wrong CSV width)
    fails only the first rule."""
    valueless = _valueless(rules)
    latest = pl.lit(rules.latest_allowed).cast(TS)
    oldest = pl.lit(rules.oldest_allowed).cast(TS)
    ts_absent = pl.col("p_ts").is_null()
    return [
        ("bad_type", "record", pl.col("record_error").is_null()),
        ("missing_field", "customer_id", ~_blank("customer_id")),
        ("missing_field", "meter_api_name", ~_blank("meter_api_name")),
        ("missing_field", "meter_value", ~_blank("meter_value") | valueless),
        ("missing_field", "time", pl.col("time_text").is_not_null()),
        ("bad_type", "customer_id",
         _blank("customer_id") | (pl.col("customer_id_k").is_in(_ID_KINDS) & (pl.col("customer_id").str.len_chars() <= 200))),
        ("bad_type", "meter_api_name", _blank("meter_api_name") | pl.col("meter_api_name_k").is_in(_ID_KINDS)),
        ("bad_type", "meter_value",
         valueless | _blank("meter_value") | pl.col("v_nonfinite") | pl.col("p_value").is_not_null()),
        ("bad_type", "unique_id", pl.col("unique_id").is_null() | pl.col("unique_id_k").is_in(_ID_KINDS)),
        ("bad_type", "dimensions", pl.col("dims_type_error").is_null()),
        *(("bad_identifier", f, _identifier_ok(f)) for f in IDENTIFIER_FIELDS),
        ("non_finite_value", "meter_value", valueless | ~pl.col("v_nonfinite")),
        ("bad_timestamp", "time", pl.col("time_text").is_null() | pl.col("p_ts").is_not_null()),
        ("future_event", "time", ts_absent | (pl.col("p_ts") <= latest)),
        ("too_old", "time", ts_absent | (pl.col("p_ts") >= oldest)),
        ("bad_dimension", "dimensions", _dimensions_ok),
    ]


# the column each reason's check is attached to (its value is Pandera's failure case)
_CHECK_COLUMN = {
    "missing_field": "row_number", "bad_type": "row_number", "bad_identifier": "row_number",
    "non_finite_value": "meter_value",
    "bad_timestamp": "time_text", "future_event": "time_text", "too_old": "time_text",
    "bad_dimension": "dims_error",
}
_NOT_A_RECORD = pl.col("record_error").is_not_null()


def _reason_checks(rules: Rules) -> dict[str, object]:
    """One pass condition per reason: all of its field rules (a non-record passes all but one)."""
    by_reason: dict[str, list] = {}
    for reason, fld, cond in _rules(rules):
        if fld != "record":
            if callable(cond):
                cond = (lambda c: lambda lf: c(lf) | _NOT_A_RECORD)(cond)
            else:
                cond = cond | _NOT_A_RECORD
        by_reason.setdefault(reason, []).append(cond)

    def all_of(conds: list):
        if not any(callable(c) for c in conds):
            return pl.all_horizontal(conds)
        return lambda lf: pl.all_horizontal([c(lf) if callable(c) else c for c in conds])

    return {r: all_of(by_reason[r]) for r in REASONS if r in by_reason}


def _field(rules: Rules) -> pl.Expr:
    """For a failing record and its reason: the field the detail names (the reason's first failing rule)."""
    expr = None
    for reason, fld, cond in _rules(rules):
        if callable(cond):
            cond = pl.lit(False)  # only rule of its reason: reached when the others pass
        when = (pl.col("reason") == reason) & ~cond.fill_null(False)
        expr = pl.when(when).then(pl.lit(fld)) if expr is None else expr.when(when).then(pl.lit(fld))
    return expr.otherwise(pl.lit("dimensions"))


def _check(name: str, expr) -> pa.Check:
    """A Pandera check from an expression (or a function of the frame giving one)."""
    def fn(data: PolarsData) -> pl.LazyFrame:
        e = expr(data.lazyframe) if callable(expr) else expr
        return data.lazyframe.select(e.alias(data.key))

    return pa.Check(fn, name=name, ignore_na=False)


PARSED_COLUMNS: dict[str, pl.DataType] = {
    "row_number": pl.Int64, "record_error": pl.String,
    "customer_id": pl.String, "customer_id_k": pl.String,
    "meter_api_name": pl.String, "meter_api_name_k": pl.String,
    "meter_value": pl.String, "meter_value_k": pl.String,
    "meter_time_in_millis": pl.String, "event_time": pl.String,
    "unique_id": pl.String, "unique_id_k": pl.String,
    "dims_type_error": pl.String, "dims_error": pl.String, "dims": pl.List(DIM_PAIR),
    "v_num": pl.Boolean, "v_nonfinite": pl.Boolean, "p_value": DEC, "time_field": pl.String,
    "time_text": pl.String, "p_ts": TS, "ts_nonpositive": pl.Boolean, "uid": pl.String,
    "is_cancel": pl.Boolean, "event_date": pl.Date, "dedup_key": pl.String,
}


# the columns the schema declares: those the checks hang on, and the typed values they check
# (the events-only columns, dedup_key, event_date and is_cancel, are typed by the candidate
# table; the typed Parquet path never brings them into Python)
SCHEMA_COLUMNS = ("row_number", "meter_value", "time_text", "dims_error", "p_value", "p_ts", "dims")


def _schema(rules: Rules) -> pa.DataFrameSchema:
    checks: dict[str, list[pa.Check]] = {c: [] for c in SCHEMA_COLUMNS}
    for reason, cond in _reason_checks(rules).items():
        checks[_CHECK_COLUMN[reason]].append(_check(reason, cond))
    return pa.DataFrameSchema(
        {c: pa.Column(PARSED_COLUMNS[c], nullable=True, checks=checks[c]) for c in SCHEMA_COLUMNS},
        strict=False, name="raw_events",
    )


# ---------------------------------------------------------------- details


def _q(c: str | pl.Expr) -> pl.Expr:
    e = pl.col(c) if isinstance(c, str) else c
    return pl.concat_str([pl.lit('"'), e.str.slice(0, 120), pl.lit('"')])


def _iso(c: str) -> pl.Expr:
    return pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").str.replace(r"\.000000Z$", "Z")


def _detail(rules: Rules) -> pl.Expr:
    r, f = pl.col("reason"), pl.col("field")
    as_of = rules.as_of.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    cases: list[tuple[pl.Expr, pl.Expr]] = [
        ((r == "bad_type") & (f == "record"), pl.col("record_error")),
        ((r == "missing_field") & (f == "time"), pl.lit("meter_time_in_millis (or event_time) is missing")),
        ((r == "missing_field") & (f == "meter_value"),
         pl.lit("meter_value is missing (required unless the meter is a count or unique_count meter)")),
        (r == "missing_field", pl.concat_str([f, pl.lit(" is missing or empty")])),
        ((r == "bad_type") & (f == "customer_id") & pl.col("customer_id_k").is_in(_ID_KINDS),
         pl.concat_str([pl.lit("customer_id must be 1–200 characters, got "),
                        pl.col("customer_id").str.len_chars().cast(pl.String)])),
        ((r == "bad_type") & (f == "meter_value") & ~pl.col("meter_value_k").is_in(_NUMERIC_KINDS),
         pl.concat_str([pl.lit("meter_value must be a number, got "), pl.col("meter_value_k")])),
        ((r == "bad_type") & (f == "meter_value") & pl.col("v_num"),
         pl.concat_str([pl.lit("meter_value "), _q("meter_value"), pl.lit(" is out of range for DECIMAL(38, 9)")])),
        ((r == "bad_type") & (f == "meter_value"),
         pl.concat_str([pl.lit("meter_value "), _q("meter_value"), pl.lit(" is not a number")])),
        ((r == "bad_type") & (f == "dimensions"), pl.col("dims_type_error")),
        (r == "bad_type", pl.concat_str([f, pl.lit(" must be a string, got "),
                                         pl.when(f == "customer_id").then(pl.col("customer_id_k"))
                                         .when(f == "meter_api_name").then(pl.col("meter_api_name_k"))
                                         .otherwise(pl.col("unique_id_k"))])),
        (r == "non_finite_value", pl.concat_str([pl.lit("meter_value "), _q("meter_value"), pl.lit(" is not finite")])),
        ((r == "bad_timestamp") & pl.col("ts_nonpositive"),
         pl.concat_str([pl.col("time_field"), pl.lit(" "), _q("time_text"), pl.lit(" is not after 1970-01-01T00:00:00Z")])),
        ((r == "bad_timestamp") & (pl.col("time_field") == "meter_time_in_millis"),
         pl.concat_str([pl.lit("meter_time_in_millis "), _q("time_text"),
                        pl.lit(" is not a whole number of epoch milliseconds (up to year 9999)")])),
        (r == "bad_timestamp",
         pl.concat_str([pl.lit("event_time "), _q("time_text"), pl.lit(" is not an ISO-8601 timestamp")])),
        (r == "future_event",
         pl.concat_str([pl.lit("event time "), _iso("p_ts"),
                        pl.lit(f" is more than 5 minutes after as_of {as_of}")])),
        (r == "too_old",
         pl.concat_str([pl.lit("event time "), _iso("p_ts"),
                        pl.lit(f" is older than as_of {as_of} minus max_event_age_days={rules.max_event_age_days}")])),
        ((r == "bad_dimension") & pl.col("dims_error").is_not_null(), pl.col("dims_error")),
        ((r == "bad_dimension") & _BAD_KEY.is_not_null(),
         pl.concat_str([pl.lit("dimension key "), _q(_BAD_KEY), pl.lit(f" does not match {DIMENSION_KEY_RE}")])),
        ((r == "bad_dimension") & _BAD_VAL.is_not_null(),
         pl.concat_str([pl.lit("dimension "), _q(_BAD_VAL), pl.lit(" value must be a string of 1–200 characters")])),
        ((r == "bad_dimension") & _DUP_KEY.is_not_null(),
         pl.concat_str([pl.lit("dimension key "), _q(_DUP_KEY), pl.lit(" appears more than once")])),
    ]
    expr = pl.when(cases[0][0]).then(cases[0][1])
    for cond, value in cases[1:]:
        expr = expr.when(cond).then(value)
    return expr.otherwise(pl.lit("invalid record"))


def _shown_id(s: str) -> str:
    """An id as text a person can read: invisible characters (and any whitespace but the space)
    as \\uXXXX escapes, a backslash doubled; at most 120 characters of it."""
    out = []
    for ch in s[:120]:
        cat = unicodedata.category(ch)
        if ch == "\\":
            out.append("\\\\")
        elif cat in ("Cc", "Cf", "Zl", "Zp") or (ch.isspace() or cat == "Zs") and ch != " ":
            cp = ord(ch)
            out.append(f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}")
        else:
            out.append(ch)
    return "".join(out)


def identifier_detail(field: str, value: str) -> str:
    """The detail of a bad_identifier record: the id escaped, the first invisible character and
    where it is, else the padding."""
    for i, ch in enumerate(value, 1):
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return (f'{field} "{_shown_id(value)}" has an invisible or control character '
                    f"(U+{ord(ch):04X}) at character {i}")
    return f'{field} "{_shown_id(value)}" has leading or trailing whitespace'


def _identifier_details(bad: pl.DataFrame) -> pl.DataFrame:
    """Fill in the details of the bad_identifier records (a few rows: computed in Python)."""
    which = bad["reason"] == "bad_identifier"
    if not which.any():
        return bad
    fields, details = bad["field"].to_list(), bad["detail"].to_list()
    values = {f: bad[f].to_list() for f in IDENTIFIER_FIELDS}
    for i in which.arg_true().to_list():
        details[i] = identifier_detail(fields[i], values[fields[i]][i])
    return bad.with_columns(pl.Series("detail", details, pl.String))


# ---------------------------------------------------------------- validate

CHECK_PRECEDENCE: dict[str, int] = {r: i for i, r in enumerate(REASONS)}


@dataclass
class Validated:
    accepted: pl.DataFrame  # parsed rows that pass every rule
    rejected: pl.DataFrame  # parsed rows that fail, with `reason` and `detail`


def validate(df: pl.DataFrame, rules: Rules, keep_accepted: bool = True) -> Validated:
    """Split a parsed batch into accepted and rejected records (one reason each);
    `keep_accepted=False`: the caller needs only the rejected ones (`accepted` is left empty)."""
    try:
        rules.schema.validate(df, lazy=True)
        return Validated(df if keep_accepted else df.clear(),
                         df.clear().with_columns(reason=pl.lit(None, pl.String), detail=pl.lit(None, pl.String)))
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
    known = pl.col("check").is_in(list(CHECK_PRECEDENCE)) & pl.col("index").is_not_null()
    unexpected = fc.filter(~known)
    if unexpected.height:
        raise RuntimeError(f"parsed batch does not have the expected shape: {unexpected.head(5).to_dicts()}")
    worst = (
        fc.select(pl.col("index").cast(pl.Int64).alias("__i"),
                  pl.col("check").replace_strict(CHECK_PRECEDENCE, return_dtype=pl.Int32).alias("__p"))
        .group_by("__i").agg(pl.col("__p").min())
        .sort("__i")
        .with_columns(reason=pl.col("__p").replace_strict(dict(enumerate(REASONS)), return_dtype=pl.String))
    )
    idx = worst["__i"]
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    bad = df.filter(row.is_in(idx.implode())).with_columns(worst["reason"])
    bad = bad.with_columns(field=_field(rules)).with_columns(detail=_detail(rules))
    bad = _identifier_details(bad).drop("field")
    good = df.filter(~row.is_in(idx.implode())) if keep_accepted else df.clear()
    return Validated(good, bad)
