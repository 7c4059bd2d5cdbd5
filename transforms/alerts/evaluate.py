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


# ---------------------------------------------------------------- numbers


def _exact(v) -> Optional[Decimal]:
    if v is None:
        return None
    if isinstance(v, float):  # never expected; read through the shortest repr, not the binary value
        return Decimal(repr(v))
    return Decimal(v)


def _pct_text(prev: Decimal, cur: Decimal) -> str:
    """The percentage change rounded to 0.01 (half to even) for a message: '-21', '385.27'."""
    hundredths = round(percent_change(prev, cur) * 100)  # exact: a Fraction rounds half to even
    return fmt_decimal(Decimal(f"{hundredths}E-2"))


def decide(condition: str, threshold: Decimal, cur: Decimal, prev: Optional[Decimal]) -> bool:
    """Whether `condition` holds for the current value `cur` (and the previous window's `prev`).

    Change conditions need `prev`; without it (no earlier window known) they do not fire.
    """
    with localcontext() as ctx:
        ctx.prec = 200
        if condition == "greater_than":
            return cur > threshold
        if condition == "less_than":
            return cur < threshold
        if prev is None:
            return False
        if condition == "change_above":
            return cur - prev >= threshold
        if condition == "change_below":
            return prev - cur >= threshold
        if condition == "percent_change_above":
            return percent_change(prev, cur) >= Fraction(threshold)
        if condition == "percent_change_below":
            return percent_change(prev, cur) <= -Fraction(threshold)
    raise ValueError(f"unknown condition {condition!r}")


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


def _message(alert: Alert, customer: str, start: dt.datetime, tz: str, cur: Decimal,
             prev: Optional[Decimal]) -> str:
    with localcontext() as ctx:
        ctx.prec = 100  # differences and percentages of DECIMAL(38, 9) values, unrounded
        return _message_text(alert, customer, start, tz, cur, prev)


def _message_text(alert: Alert, customer: str, start: dt.datetime, tz: str, cur: Decimal,
                  prev: Optional[Decimal]) -> str:
    who = "all customers" if customer == ALL else customer
    what = _metric_label(alert)
    when = _when(alert, start, tz)
    t = fmt_decimal(alert.threshold)
    c = alert.condition
    if c in _OPS:
        return f"{who}: {what} {fmt_decimal(cur)} {_OPS[c]} {t} in {when}"
    change = f"{fmt_decimal(prev)} -> {fmt_decimal(cur)}"
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
    dup = v.group_by("customer_id", "window_start").len().filter(pl.col("len") > 1)
    if dup.height:
        row = dup.sort("customer_id", "window_start").row(0, named=True)
        raise ValueError(
            f"alert {alert.alert_id}: values hold {row['len']} rows for customer {row['customer_id']!r} "
            f"and window {row['window_start']:%Y-%m-%dT%H:%M:%SZ}; give one value per customer and window"
        )
    return v.sort("customer_id", "window_start")


def _fill_gaps(series: dict[str, dict[dt.datetime, dict]], grid: dict[dt.datetime, dt.datetime]) -> None:
    """A customer's complete window that the caller computed for others but not for this customer is 0.

    Callers aggregate usage per customer and window, so a window without events often has no row
    at all; §4 says its value is 0. A window is filled for a customer only when it touches one of
    the customer's own windows (ends where one starts, or starts where one ends) and was computed
    for someone (it is in `grid`, the complete windows of the frame), so windows of another time
    zone or of a range the caller did not compute are never invented.
    """
    ends = {e: s for s, e in grid.items()}
    for rows in series.values():
        changed = True
        while changed:
            changed = False
            for start in list(rows):
                r = rows[start]
                nxt = r["window_end"]
                if nxt in grid and nxt not in rows and r["complete"]:
                    rows[nxt] = {"window_start": nxt, "window_end": grid[nxt], "value": Decimal(0), "complete": True}
                    changed = True
                if start in ends and ends[start] not in rows:
                    s = ends[start]
                    rows[s] = {"window_start": s, "window_end": start, "value": Decimal(0), "complete": True}
                    changed = True


def _series(v: pl.DataFrame) -> dict[str, dict[dt.datetime, dict]]:
    """customer_id -> window_start -> row of the prepared values, gaps next to a customer's own
    complete windows filled with 0 (`_fill_gaps`)."""
    series: dict[str, dict[dt.datetime, dict]] = {}
    for r in v.iter_rows(named=True):
        r["value"] = _exact(r["value"])
        series.setdefault(r["customer_id"], {})[r["window_start"]] = r
    grid = {r["window_start"]: r["window_end"] for rows in series.values() for r in rows.values() if r["complete"]}
    _fill_gaps(series, grid)
    return series


def _judged(alert: Alert, rows: dict[dt.datetime, dict], as_of: dt.datetime):
    """(window_start, row, previous value) of one customer's windows whose condition holds: the last
    complete window (earlier ones were judged by earlier runs), and for greater_than the window in
    progress; the change conditions need the complete window just before."""
    threshold = Decimal(alert.threshold)
    change = alert.condition not in _OPS
    by_end = {r["window_end"]: r for r in rows.values()}
    last = max((s for s, r in rows.items() if r["complete"]), default=None)
    for start in sorted(rows):
        r = rows[start]
        if r["complete"] and start != last:
            continue
        if not r["complete"] and (alert.condition != "greater_than" or start > as_of
                                  or (last is not None and start < last)):
            continue  # only greater_than looks at the window in progress; never at future windows
        before = by_end.get(start)
        if change and not (r["complete"] and before is not None and before["complete"]):
            continue
        prev = before["value"] if before is not None else None
        if decide(alert.condition, threshold, r["value"], prev):
            yield start, r, prev


def _firing(alert: Alert, customer: str, start: dt.datetime, r: dict, prev, as_of: dt.datetime, tz: str) -> dict:
    """One alerts_fired row."""
    cur = r["value"]
    return {
        "alert_id": alert.alert_id,
        "customer_id": customer,
        "window_start": start,
        "window_end": r["window_end"],
        "metric": alert.metric,
        "current_value": cur,
        "previous_value": prev,
        "threshold": Decimal(alert.threshold),
        "condition": alert.condition,
        "message": _message(alert, customer, start, tz, cur, prev),
        "fired_at": as_of,
    }


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
                   windows counts as 0 there (see `_fill_gaps`); null values are not evaluated.
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
    series = _series(_prepare(alert, values))
    fired: set[tuple[str, dt.datetime]] = set()
    if already_fired is not None and already_fired.height:
        af = already_fired.filter(pl.col("alert_id") == alert.alert_id).select(
            "customer_id", pl.col("window_start").cast(TS)
        )
        fired = {(c, s) for c, s in af.iter_rows()}
    out: list[dict] = []
    for customer in sorted(series):
        tz = (timezones or {}).get(customer, "UTC")
        for start, r, prev in _judged(alert, series[customer], as_of):
            key = (customer, start)
            if key in fired:
                continue
            fired.add(key)
            out.append(_firing(alert, customer, start, r, prev, as_of, tz))
    if not out:
        return pl.DataFrame(schema=SCHEMAS["alerts_fired"])
    df = pl.DataFrame(out, schema=SCHEMAS["alerts_fired"])
    return conform("alerts_fired", df).sort("customer_id", "window_start")
