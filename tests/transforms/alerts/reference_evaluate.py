"""A small, obviously-correct `evaluate` to check the vectorised one against: the loop over each
customer's windows, one row at a time, with the same rules (SPEC §6) and the module's own
`decide` and messages. Test code only."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, localcontext

import polars as pl

from catalog.config import Alert
from catalog.schemas import SCHEMAS, TS, conform
from transforms.alerts.evaluate import (_OPS, ALL, UTC, _metric_label, _pct_text, _prepare, _when, decide,
                                        fmt_decimal)


def _exact(v) -> Decimal | None:
    if v is None:
        return None
    if isinstance(v, float):  # never expected; read through the shortest repr, not the binary value
        return Decimal(repr(v))
    return Decimal(v)


def _message(alert: Alert, customer: str, start: dt.datetime, tz: str, cur: Decimal,
             prev: Decimal | None) -> str:
    with localcontext() as ctx:
        ctx.prec = 100  # differences and percentages of DECIMAL(38, 9) values, unrounded
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


def _fill_gaps(series: dict[str, dict[dt.datetime, dict]], grid: dict[dt.datetime, dt.datetime]) -> None:
    """A customer's complete window that the caller computed for others but not for this customer
    is 0, when it touches one of the customer's windows (ends where one starts, or starts where a
    complete one ends); filled windows are complete and touch further ones."""
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
    series: dict[str, dict[dt.datetime, dict]] = {}
    for r in v.iter_rows(named=True):
        r["value"] = _exact(r["value"])
        series.setdefault(r["customer_id"], {})[r["window_start"]] = r
    grid = {r["window_start"]: r["window_end"] for rows in series.values() for r in rows.values() if r["complete"]}
    _fill_gaps(series, grid)
    return series


def _judged(alert: Alert, rows: dict[dt.datetime, dict], as_of: dt.datetime):
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
            continue
        before = by_end.get(start)
        if change and not (r["complete"] and before is not None and before["complete"]):
            continue
        prev = before["value"] if before is not None else None
        if decide(alert.condition, threshold, r["value"], prev):
            yield start, r, prev


def reference_evaluate(alert: Alert, values: pl.DataFrame, as_of: dt.datetime,
                       already_fired: pl.DataFrame | None = None, *, timezones=None) -> pl.DataFrame:
    as_of = (as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of).astimezone(UTC)
    series = _series(_prepare(alert, values))
    fired: set = set()
    if already_fired is not None and already_fired.height:
        af = already_fired.filter(pl.col("alert_id") == alert.alert_id).select(
            "customer_id", pl.col("window_start").cast(TS))
        fired = set(af.iter_rows())
    out = []
    for customer in sorted(series):
        tz = (timezones or {}).get(customer, "UTC")
        for start, r, prev in _judged(alert, series[customer], as_of):
            if (customer, start) in fired:
                continue
            fired.add((customer, start))
            out.append({
                "alert_id": alert.alert_id, "customer_id": customer, "window_start": start,
                "window_end": r["window_end"], "metric": alert.metric, "current_value": r["value"],
                "previous_value": prev, "threshold": Decimal(alert.threshold), "condition": alert.condition,
                "message": _message(alert, customer, start, tz, r["value"], prev), "fired_at": as_of,
            })
    if not out:
        return pl.DataFrame(schema=SCHEMAS["alerts_fired"])
    return conform("alerts_fired", pl.DataFrame(out, schema=SCHEMAS["alerts_fired"])).sort(
        "customer_id", "window_start")
