"""Alert evaluation (SPEC §6): metric values per customer and window -> new `alerts_fired` rows.

Pure: the run's instant `as_of` is a parameter; nothing here reads files, the clock or the network.

Rules (exact Decimal arithmetic throughout, never binary floats):

* each customer's (or '*') last complete window is judged, the latest row with complete = true;
  earlier complete windows were judged by earlier runs and are only read as the previous value;
* `greater_than` fires when value > threshold, on the last complete window and on the window in
  progress (rows with complete = false), so it fires as soon as a customer crosses the line;
* `less_than` fires when value < threshold, on the last complete window only;
* the change conditions compare the last complete window with the complete window just before it
  (`window_end` of the earlier = `window_start` of the later): `change_above` cur − prev ≥ t,
  `change_below` prev − cur ≥ t, `percent_change_above` pct ≥ t, `percent_change_below`
  pct ≤ −t, where pct is §4's percentage change (`transforms.shared.percent.percent_change`, exact:
  (cur − prev) / prev × 100 as written, 100 when prev = 0 < cur, −100 when prev = 0 > cur,
  0 when both are 0), compared exactly with the threshold;
* at most one firing per (alert_id, customer_id or '*', window_start): what `already_fired`
  holds is never returned again, and one call returns each key at most once.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Mapping, Optional
from zoneinfo import ZoneInfo

import polars as pl

from catalog.config import Alert
from catalog.schemas import DEC, SCHEMAS, TS, conform
from transforms.shared.percent import percent_change

ALL = "*"
UTC = dt.timezone.utc
VALUE_COLUMNS = {"customer_id": pl.String, "window_start": TS, "window_end": TS, "value": DEC, "complete": pl.Boolean}

_OPS = {
    "greater_than": ">",
    "less_than": "<",
}
CONDITIONS = ("greater_than", "less_than", "change_above", "change_below", "percent_change_above",
              "percent_change_below")


# ---------------------------------------------------------------- numbers


def _pct_text(prev: Decimal, cur: Decimal) -> str:
    """The percentage change rounded to 0.01 (half to even) for a message: '-21', '385.27'."""
    hundredths = round(percent_change(prev, cur) * 100)  # exact: a Fraction rounds half to even
    return fmt_decimal(Decimal(f"{hundredths}E-2"))


# ---------------------------------------------------------------- conditions


def _first_of(cases, default):
    """The value of the first case whose test holds (plain values)."""
    for test, value in cases:
        if test:
            return value
    return default


def _first_of_expr(cases, default) -> pl.Expr:
    """The value of the first case whose test holds (Polars expressions, row by row)."""
    (test, value), *rest = cases
    e = pl.when(test).then(value)
    for test, value in rest:
        e = e.when(test).then(value)
    return e.otherwise(default)


def _holds(condition: str, t, cur, prev, unit, first_of):
    """§6's conditions, stated once for exact numbers (`decide`) and for Int128 columns (`evaluate`).

    `t`, `cur` and `prev` count the same unit 1/`unit` (Fractions with unit 1, or DECIMAL(38, 9)'s
    integers with unit 10^9); `first_of` picks the first case that holds. The percentage change
    pct = (cur − prev) / prev × 100 (§4 as written, a negative prev too; 100 when prev = 0 < cur,
    −100 when prev = 0 > cur, 0 when both are 0, as `transforms.shared.percent.percent_change`) is
    compared without dividing: for prev > 0, pct ≥ t is (cur − prev) × 100 ≥ t × prev, and the
    inequality turns for prev < 0.
    """
    if condition == "greater_than":
        return cur > t
    if condition == "less_than":
        return cur < t
    if condition == "change_above":
        return cur - prev >= t
    if condition == "change_below":
        return prev - cur >= t
    rise = (cur - prev) * (100 * unit)
    if condition == "percent_change_above":  # pct >= t
        return first_of([(prev > 0, rise >= t * prev), (prev < 0, rise <= t * prev),
                         (cur > 0, 100 * unit >= t), (cur < 0, -100 * unit >= t)], 0 >= t)
    if condition == "percent_change_below":  # pct <= -t
        return first_of([(prev > 0, rise <= -t * prev), (prev < 0, rise >= -t * prev),
                         (cur > 0, 100 * unit <= -t), (cur < 0, -100 * unit <= -t)], 0 <= -t)
    raise ValueError(f"unknown condition {condition!r}")


def decide(condition: str, threshold: Decimal, cur: Decimal, prev: Optional[Decimal]) -> bool:
    """Whether `condition` holds for the current value `cur` (and the previous window's `prev`).

    Change conditions need `prev`; without it (no earlier window known) they do not fire.
    """
    if condition not in _OPS and prev is None:
        if condition in CONDITIONS:
            return False
        raise ValueError(f"unknown condition {condition!r}")
    f = Fraction
    return bool(_holds(condition, f(threshold), f(cur), None if prev is None else f(prev),
                       1, _first_of))


_UNIT = 10 ** DEC.scale  # DECIMAL(38, 9) as integers: value × 10^9
_I128 = pl.Int128


def _decisions(alert: Alert, cur: pl.Expr, prev: pl.Expr) -> tuple[Optional[pl.Expr], Optional[pl.Expr]]:
    """(condition, in_range) as expressions over DECIMAL(38, 9) columns: `_holds` on their Int128
    integers, exact where `in_range` holds (no product can overflow 128 bits there); rows out of
    range are for `decide`. (None, None) when the threshold is no integer of 10^-9."""
    t = Fraction(Decimal(alert.threshold)) * _UNIT
    if t.denominator != 1 or abs(t) > 2 ** 125:
        return None, None
    t = int(t)
    bound = pl.lit(2 ** 125 // max(100 * _UNIT, abs(t)), dtype=_I128)
    c, p = cur.to_physical(), prev.to_physical()
    in_range = (c.abs() <= bound) & (p.is_null() | (p.abs() <= bound))
    holds = _holds(alert.condition, pl.lit(t, dtype=_I128), c, p, _UNIT, _first_of_expr)
    return holds, in_range


def fmt_decimal(d: Optional[Decimal]) -> str:
    """A decimal without exponent or trailing zeros: 1000.500000000 -> '1000.5', 1E+3 -> '1000'."""
    if d is None:
        return ""
    d = Decimal(d)
    if d == 0:
        return "0"
    with localcontext() as ctx:
        ctx.prec = 100  # normalize() rounds to the context: keep all 38 digits of DECIMAL(38, 9)
        return format(d.normalize(), "f")


def fmt_decimals(values: pl.Expr) -> pl.Expr:
    """`fmt_decimal` of each value of a decimal column ('' for null): DECIMAL(38, 9)'s text
    without the trailing zeros of its 9 places, nor the point when none is left."""
    return values.cast(DEC).cast(pl.String).str.replace(r"\.?0+$", "").fill_null("")


# ---------------------------------------------------------------- messages


def _metric_label(alert: Alert) -> str:
    if alert.metric == "usage":
        label = alert.meter_api_name or "usage"
        if alert.filter:
            label += " [" + "; ".join(f"{k}={','.join(v)}" for k, v in sorted(alert.filter.items())) + "]"
        return label
    if alert.metric == "spend":
        return f"spend on {alert.product_item_id}" if alert.product_item_id else "spend"
    return {
        "prepaid_balance": "prepaid balance",
        "undefined_customer": "events of undefined customers",
        "undefined_meter": "events of undefined meters",
    }.get(alert.metric, alert.metric)


def _when(alert: Alert, start: dt.datetime, tz: str) -> str:
    """'week of 2026-01-05', 'day 2026-01-05', 'hour of 2026-01-05 13:00', 'month of 2026-01'."""
    local = start.astimezone(ZoneInfo(tz))
    suffix = "" if tz == "UTC" else f" ({tz})"
    if alert.window == "hour":
        return f"hour of {local:%Y-%m-%d %H:%M}{suffix}"
    if alert.window == "month":
        return f"month of {local:%Y-%m}"
    if alert.window == "billing_period":
        return f"billing period from {local:%Y-%m-%d}"
    midnight = (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)
    day = f"{local:%Y-%m-%d}" if midnight else f"{local:%Y-%m-%d %H:%M}{suffix}"
    return f"{alert.window} of {day}"


def _messages(alert: Alert, fired: pl.DataFrame, timezones: Mapping[str, str] | None) -> pl.Series:
    """The message of each firing (rows of customer_id, window_start, value, prev); each window's
    local date is written once per zone."""
    zones = timezones or {}
    f = fired.select(
        "window_start", pl.Series("tz", [zones.get(c, "UTC") for c in fired["customer_id"].to_list()], dtype=pl.String),
        pl.when(pl.col("customer_id") == ALL).then(pl.lit("all customers")).otherwise("customer_id").alias("who"),
        fmt_decimals(pl.col("value")).alias("cur_text"), fmt_decimals(pl.col("prev")).alias("prev_text"))
    pairs = f.select("window_start", "tz").unique()
    whens = pairs.with_columns(pl.Series("when", [_when(alert, s, z) for s, z in pairs.iter_rows()], dtype=pl.String))
    f = f.join(whens, on=["window_start", "tz"], how="left", maintain_order="left")
    c, what, t = alert.condition, _metric_label(alert), fmt_decimal(alert.threshold)
    n = fired.height
    curs, prevs = (fired["value"].to_list(), fired["prev"].to_list()) if c not in _OPS else ([None] * n, [None] * n)
    with localcontext() as ctx:
        ctx.prec = 100  # differences and percentages of DECIMAL(38, 9) values, unrounded
        texts = [_message_text(c, who, what, when, t, cur_text, prev_text, cur, prev)
                 for who, when, cur_text, prev_text, cur, prev
                 in zip(*(f[k].to_list() for k in ("who", "when", "cur_text", "prev_text")), curs, prevs)]
    return pl.Series("message", texts, dtype=pl.String)


def _message_text(c: str, who: str, what: str, when: str, t: str, cur_text: str, prev_text: str,
                  cur: Optional[Decimal], prev: Optional[Decimal]) -> str:
    """One firing's message; `cur` and `prev` (the values) are needed by the change conditions only."""
    if c in _OPS:
        return f"{who}: {what} {cur_text} {_OPS[c]} {t} in {when}"
    change = f"{prev_text} -> {cur_text}"
    if c == "change_above":
        return f"{who}: {what} rose by {fmt_decimal(cur - prev)} ({change}), at least {t}, in {when}"
    if c == "change_below":
        return f"{who}: {what} fell by {fmt_decimal(prev - cur)} ({change}), at least {t}, in {when}"
    pct = _pct_text(prev, cur)
    if c == "percent_change_above":
        return f"{who}: {what} changed {pct}% ({change}), at least +{t}%, in {when}"
    return f"{who}: {what} changed {pct}% ({change}), at most -{t}%, in {when}"


# ---------------------------------------------------------------- evaluation


def _prepare(alert: Alert, values: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in VALUE_COLUMNS if c not in values.columns]
    if missing:
        raise ValueError(f"alert {alert.alert_id}: values lack columns {missing} (need {list(VALUE_COLUMNS)})")
    v = values.select(
        [pl.col(c).cast(t) if values.schema[c] != t else pl.col(c) for c, t in VALUE_COLUMNS.items()]
    ).filter(pl.col("value").is_not_null() & pl.col("window_start").is_not_null())
    if alert.scope == "all_customers":
        # the caller's own total ('*' rows) wins for a window; otherwise sum the customers' rows
        has_total = v.filter(pl.col("customer_id") == ALL).select("window_start").unique()
        totals = v.filter(pl.col("customer_id") == ALL)
        summed = (
            v.filter(pl.col("customer_id") != ALL)
            .join(has_total, on="window_start", how="anti")
            .group_by("window_start", "window_end")
            .agg(pl.col("value").sum(), pl.col("complete").all())
            .with_columns(pl.lit(ALL).alias("customer_id"))
        )
        v = pl.concat([totals, summed.select(totals.columns)])
    elif alert.scope == "customer":
        v = v.filter(pl.col("customer_id") == alert.customer_id)
    # per_customer: every series as given ('*' included: a caller may pre-aggregate, e.g. the
    # events of undefined customers, whose ids are not customers of the catalogue)
    v = v.sort("customer_id", "window_start")
    repeated = (pl.col("customer_id").eq_missing(pl.col("customer_id").shift())
                & (pl.col("window_start") == pl.col("window_start").shift()))  # the first row's shift is null
    if v.select(repeated.any()).item():
        dup = v.group_by("customer_id", "window_start").len().filter(pl.col("len") > 1)
        row = dup.sort("customer_id", "window_start").row(0, named=True)
        raise ValueError(
            f"alert {alert.alert_id}: values hold {row['len']} rows for customer {row['customer_id']!r} "
            f"and window {row['window_start']:%Y-%m-%dT%H:%M:%SZ}; give one value per customer and window"
        )
    return v


_KEY = ["customer_id", "window_start"]


def _gaps_filled(v: pl.DataFrame) -> pl.DataFrame:
    """The prepared values with the windows of 0 that a customer lacks next to its own (`rank`: the
    order rows came in, given rows first in (customer_id, window_start) order).

    Callers aggregate usage per customer and window, so a window without events often has no row
    at all; §4 says its value is 0. A window is filled for a customer only when it touches one of
    the customer's windows (starts where a complete one ends, or ends where one starts) and was
    computed for someone (it is one of the frame's complete windows), so windows of another time
    zone or of a range the caller did not compute are never invented; a filled window is complete
    and is touched in turn. Where complete windows of several customers share a start, the end of
    the last (in customer order) is taken; where they share an end, the start seen first last."""
    rows = v.with_columns(pl.col("complete").fill_null(False)).with_row_index("rank").with_columns(
        pl.col("rank").cast(pl.Int64))
    grid = (rows.filter("complete").group_by("window_start")
            .agg(pl.col("window_end").sort_by("rank").last(), pl.col("rank").min().alias("first")))
    ends = (grid.filter(pl.col("window_end").is_not_null()).group_by("window_end")
            .agg(pl.col("window_start").sort_by("first").last()))
    new, top = rows, rows.height
    while new.height:
        after = (new.filter("complete").select("customer_id", pl.col("window_end").alias("window_start"),
                                                "rank", pl.lit(0).alias("side"))
                 .join(grid.select("window_start", "window_end"), on="window_start"))
        before = (new.select("customer_id", pl.col("window_start").alias("window_end"), "rank", pl.lit(1).alias("side"))
                  .join(ends, on="window_end"))
        cand = pl.concat([after, before.select(after.columns)]).join(rows, on=_KEY, how="anti")
        cand = cand.sort("rank", "side").unique(_KEY, keep="first", maintain_order=True)
        new = cand.select(
            "customer_id", "window_start", "window_end", pl.lit(Decimal(0), dtype=DEC).alias("value"),
            pl.lit(True).alias("complete"), (pl.int_range(pl.len(), dtype=pl.Int64) + top).alias("rank"))
        top += new.height
        rows = pl.concat([rows, new.select(rows.columns)])
    return rows


def _judged(alert: Alert, rows: pl.DataFrame, as_of: dt.datetime) -> pl.DataFrame:
    """Each customer's windows to judge, with `prev`, the value of the window ending where it
    starts (the latest such row; null if none): the last complete window (earlier ones were judged
    by earlier runs), and for greater_than the window in progress; the change conditions need a
    complete window just before."""
    last = rows.filter("complete").group_by("customer_id").agg(pl.col("window_start").max().alias("last"))
    r = rows.join(last, on="customer_id", how="left")
    start, complete, last = pl.col("window_start"), pl.col("complete"), pl.col("last")
    judged = complete & (start == last)
    if alert.condition == "greater_than":  # the window in progress too; never a future window
        judged = judged | (~complete & (start <= as_of) & (last.is_null() | (start >= last)))
    before = rows.sort("rank").unique(["customer_id", "window_end"], keep="last").select(
        "customer_id", pl.col("window_end").alias("window_start"), pl.col("value").alias("prev"),
        pl.col("complete").alias("prev_complete"))
    out = r.filter(judged).drop("last", "rank").join(before, on=_KEY, how="left")
    if alert.condition not in _OPS:
        out = out.filter(pl.col("prev_complete").fill_null(False))
    return out


def _firing(alert: Alert, judged: pl.DataFrame) -> pl.DataFrame:
    """The judged rows whose condition holds: by Polars expressions where exact, else by `decide`."""
    holds, in_range = _decisions(alert, pl.col("value"), pl.col("prev"))
    if holds is None:
        fast, slow = judged.clear(), judged
    else:
        judged = judged.with_columns(in_range.alias("_in_range"))
        fast = judged.filter("_in_range").filter(holds).drop("_in_range")
        slow = judged.filter(~pl.col("_in_range")).drop("_in_range")
    if slow.height:
        threshold = Decimal(alert.threshold)
        keep = [decide(alert.condition, threshold, cur, prev)
                for cur, prev in zip(slow["value"].to_list(), slow["prev"].to_list())]
        fast = pl.concat([fast, slow.filter(pl.Series(keep, dtype=pl.Boolean))])
    return fast


def evaluate(
    alert: Alert,
    values: pl.DataFrame,
    as_of: dt.datetime,
    already_fired: pl.DataFrame | None = None,
    *,
    timezones: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """New firings of `alert` at `as_of`, in the `alerts_fired` schema.

    values         customer_id ('*' for all_customers), window_start, window_end, value, complete:
                   the metric per customer and window (the window in progress, complete = false,
                   and the complete windows before it). For scope all_customers, '*' rows are used
                   as given, and per-customer rows of windows without a '*' row are summed.
                   per_customer evaluates every customer_id given (a '*' row too, as one series);
                   scope customer keeps only alert.customer_id.
                   A customer missing from a computed complete window next to one of its own
                   windows counts as 0 there (see `_gaps_filled`); null values are not evaluated.
    already_fired  alerts_fired rows of earlier runs: their (alert_id, customer_id, window_start)
                   keys are not returned again.
    timezones      optional customer_id -> IANA zone, only to write the window's local date in
                   the message (default UTC).

    previous_value is the value of the window just before the firing window (null if unknown);
    fired_at is as_of. Rows are sorted by customer_id, window_start.
    """
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    as_of = as_of.astimezone(UTC)
    fired = _firing(alert, _judged(alert, _gaps_filled(_prepare(alert, values)), as_of))
    if already_fired is not None and already_fired.height:
        af = already_fired.filter(pl.col("alert_id") == alert.alert_id).select(
            "customer_id", pl.col("window_start").cast(TS))
        fired = fired.join(af, on=_KEY, how="anti")
    if not fired.height:
        return pl.DataFrame(schema=SCHEMAS["alerts_fired"])
    fired = fired.sort(_KEY)
    messages = _messages(alert, fired, timezones)
    df = fired.select(
        pl.lit(alert.alert_id).alias("alert_id"), "customer_id", "window_start", "window_end",
        pl.lit(alert.metric).alias("metric"), pl.col("value").alias("current_value"),
        pl.col("prev").alias("previous_value"),
        pl.lit(Decimal(alert.threshold), dtype=DEC).alias("threshold"), pl.lit(alert.condition).alias("condition"),
        messages, pl.lit(as_of, dtype=TS).alias("fired_at"))
    return conform("alerts_fired", df)
