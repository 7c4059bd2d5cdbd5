"""`meterbill usage`: the usage query of SPEC §4 over the lake, formatted as table, csv or json.

Reading and formatting only: the numbers come from `transforms.metering.usage_query`.

- One day rule, with or without grouping: buckets are calendar windows of one zone, UTC unless
  `--tz` names another (OpenMeter's `windowTimeZone`); customers' own zones are not used, so the
  same range gives the same total grouped by customer_id or not. `--from` / `--to` given as dates
  mean midnight in that zone; ISO instants are instants. Buckets are whole calendar windows.
- Events are read for the range only (with a margin for the bucket alignment); stateful meters also
  read their history, since their level carries in.
- json: one object per group and bucket with the group-by keys, window_start (ISO-8601 in the
  bucket's zone), value (an exact JSON number), percent_from_previous, group_total.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from decimal import Decimal

import polars as pl

from catalog import Lake, load_catalog
from catalog.config import DIM_KEY_RE
from catalog.meter_types import STATEFUL_TYPES
from catalog.schemas import TS
from flows.stages.common import UsageError, parse_instant
from transforms.metering import apply_cancellations, usage_query
from transforms.shared.windows import WINDOWS, calendar_windows, zone

FORMATS = ("table", "csv", "json")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _bound(value: str | dt.date | dt.datetime, name: str) -> dt.date | dt.datetime:
    """A date (calendar, local midnight in the bucket zone) or an instant (aware UTC)."""
    if isinstance(value, dt.datetime):
        return parse_instant(value, name)
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if _DATE.match(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise UsageError(f"{name}: {value!r} is not a valid date (e.g. 2026-01-01)") from None
    return parse_instant(text, name)


def _num(d: Decimal | None) -> str:
    """An exact decimal as plain text without trailing zeros (also a valid JSON number)."""
    if d is None:
        return ""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _pct(p: float) -> str:
    return repr(float(p))


def usage_report(lake: Lake, meter_api_name: str, window: str, start: str, end: str,
                 group_by: list[str], filter: dict[str, list[str]], top: int | None,
                 fmt: str = "table", *, as_of: str | dt.datetime | None = None, tz: str = "UTC") -> str:
    """Run the usage query on the lake's events and format it (`table`, `csv` or `json`).

    Buckets and date bounds are in the zone `tz` (default UTC) for every group.
    Raises UsageError (one line) for a bad argument; CatalogError for a bad catalogue.
    `as_of` (default now) ends still-open event_duration resources."""
    cat = load_catalog(lake.catalog_dir)
    meter = cat.meters.get(meter_api_name)
    if meter is None:
        known = ", ".join(sorted(cat.meters)) or "none defined"
        raise UsageError(f"--meter: unknown meter {meter_api_name!r} (known: {known})")
    if window not in WINDOWS:
        raise UsageError(f"--window: {window!r} is not one of {', '.join(WINDOWS)}")
    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if top is not None and top < 1:
        raise UsageError(f"--top: must be at least 1, got {top}")
    group_by = [g for g in (group_by or []) if g]
    for g in group_by:
        if g != "customer_id" and not DIM_KEY_RE.match(g):
            raise UsageError(f"--group-by: {g!r} is neither customer_id nor a dimension key")
    if len(set(group_by)) != len(group_by):
        raise UsageError("--group-by: a key is given twice")
    for k, vals in (filter or {}).items():
        if not DIM_KEY_RE.match(k):
            raise UsageError(f"--filter: {k!r} is not a dimension key")
        if not vals:
            raise UsageError(f"--filter: {k} needs at least one value (key=v1,v2)")
    try:
        zone(tz)
    except ValueError:
        raise UsageError(f"--tz: {tz!r} is not an IANA time zone (e.g. UTC, Europe/Budapest)") from None
    lo, hi = _bound(start, "--from"), _bound(end, "--to")
    run_as_of = parse_instant(as_of)

    buckets = calendar_windows(lo, hi, window, tz)
    if not buckets:
        raise UsageError("--to: must be after --from")
    first, last = buckets[0][0], buckets[-1][1]

    with lake.naming_damage(["events"]):
        ev = lake.scan("events").filter(pl.col("meter_api_name") == meter_api_name)
        ev = ev.filter(pl.col("event_time") < pl.lit(last, dtype=TS))
        if meter.type not in STATEFUL_TYPES:
            ev = ev.filter(pl.col("event_time") >= pl.lit(first, dtype=TS))
        events = apply_cancellations(ev.collect())

    df = usage_query(events, meter, window=window, start=lo, end=hi, group_by=group_by,
                     filter=filter or None, top=top, tz=tz, as_of=run_as_of)
    return format_usage(df, group_by, fmt, tz)


def _local(t: dt.datetime, zone_name: str) -> str:
    return t.astimezone(zone(zone_name)).isoformat()


def format_usage(df: pl.DataFrame, group_by: list[str], fmt: str, tz: str = "UTC") -> str:
    """table / csv / json text of a usage_query frame whose buckets are in the zone `tz`."""
    fields = [*group_by, "window_start", "value", "percent_from_previous", "group_total"]

    rows = df.to_dicts()
    if fmt == "json":
        out = []
        for r in rows:
            parts = [f"{json.dumps(k)}: {json.dumps(r[k])}" for k in group_by]
            parts += [
                f'"window_start": {json.dumps(_local(r["window_start"], tz))}',
                f'"value": {_num(r["value"])}',
                f'"percent_from_previous": {_pct(r["percent_from_previous"])}',
                f'"group_total": {_num(r["group_total"])}',
            ]
            out.append("  {" + ", ".join(parts) + "}")
        return "[\n" + ",\n".join(out) + "\n]\n" if out else "[]\n"
    table = [[("" if r[k] is None else str(r[k])) for k in group_by]
             + [_local(r["window_start"], tz), _num(r["value"]), _pct(r["percent_from_previous"]),
                _num(r["group_total"])] for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(fields)
        w.writerows(table)
        return buf.getvalue()
    # table: aligned text, numbers right-aligned
    header = [*group_by, "window_start", "value", "% from previous", "group total"]
    shown = [row[:-2] + [f"{float(r['percent_from_previous']):.2f}", row[-1]] for row, r in zip(table, rows)]
    widths = [max([len(h)] + [len(x[i]) for x in shown]) for i, h in enumerate(header)]
    right = set(range(len(group_by) + 1, len(header)))

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), line(["-" * w for w in widths])]
    lines += [line(x) for x in shown]
    if not shown:
        lines.append("(no usage in this range)")
    return "\n".join(lines) + "\n"
