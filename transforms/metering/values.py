"""meter_values: a meter's exact value per window (and per dimension group) — SPEC §4."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import polars as pl

from catalog.config import Meter
from catalog.meter_types import EVENT_SET_TYPES, STATEFUL_TYPES, VALUELESS_TYPES
from catalog.schemas import DEC, TS
from transforms.metering.cancel import counting
from transforms.metering.common import RESERVED_COLUMNS, sort_rows
from transforms.metering.frames import assign_windows, normalize_windows, prepare_events
from transforms.metering.simple import simple_values
from transforms.metering.stateful import stateful_values


def check_group_by(group_by: Sequence[str], reserved=RESERVED_COLUMNS) -> list[str]:
    keys = [group_by] if isinstance(group_by, str) else list(group_by)
    seen = set()
    for k in keys:
        if not isinstance(k, str) or not k:
            raise ValueError(f"group_by: {k!r} is not a dimension key")
        if k in reserved:
            raise ValueError(f"group_by: {k!r} clashes with an output column")
        if k in seen:
            raise ValueError(f"group_by: {k!r} given twice")
        seen.add(k)
    return keys


def meter_values(
    events: pl.DataFrame,
    meter: Meter,
    windows: pl.DataFrame,
    *,
    group_by: Sequence[str] = (),
    filter: Mapping[str, Sequence[str]] | None = None,
    as_of: datetime | None = None,
) -> pl.DataFrame:
    """The meter's value over each window, per combination of the `group_by` dimension values.

    events: the counting events (cancellations are applied again if any cancel record is left; it
    is idempotent); other meters are ignored; history before the windows feeds stateful meters.
    windows: customer_id, window_start, window_end — half-open, several per customer, may overlap.
    filter: {dimension: [values]} — keys AND, values OR; an event lacking the key does not match.
    group_by: dimension keys, one String output column each (null when the event lacks the key).
    as_of: end of observed time for event_duration (open resources run to min(window end, as_of)).

    Returns customer_id, window_start, window_end, *group_by, value (DECIMAL(38, 9)), sorted.
    One row per window × group that has events in the window or (stateful types) a non-zero state
    carried in; with no group_by every distinct input window gets a row (0 when nothing counts).
    """
    return meter_rows(events, meter, windows, group_by=group_by, filter=filter, as_of=as_of,
                      fill_windows=True)


def meter_rows(
    events: pl.DataFrame,
    meter: Meter,
    windows: pl.DataFrame,
    *,
    group_by: Sequence[str] = (),
    filter: Mapping[str, Sequence[str]] | None = None,
    as_of: datetime | None = None,
    fill_windows: bool = False,
) -> pl.DataFrame:
    """meter_values, but by default only the windows (× groups) that have events or a carried-in
    stateful level get a row, also without group_by."""
    keys = check_group_by(group_by)
    gcols = {f"__g{i}": k for i, k in enumerate(keys)}
    w = normalize_windows(windows)
    t = meter.type
    extra: dict[str, str] = {}
    if t == "unique_count":
        extra = {f"__u{i}": k for i, k in enumerate(meter.unique_dimensions)}
    elif t == "event_duration":
        extra = {f"__r{i}": k for i, k in enumerate(meter.resource_dimensions)}
    ev = prepare_events(
        counting(events), meter.meter_api_name, filter=filter, dims={**gcols, **extra},
        drop_null_values=t not in VALUELESS_TYPES,
    )
    if t in STATEFUL_TYPES:
        res = stateful_values(ev.collect(), meter, w, list(gcols),
                              resource_cols=[c for c in extra if c.startswith("__r")], as_of=as_of)
    elif t in EVENT_SET_TYPES:
        res = simple_values(assign_windows(ev, w), t, list(gcols), [c for c in extra if c.startswith("__u")])
    else:
        raise ValueError(f"unknown meter type {t!r}")
    if fill_windows and not keys:
        res = (w.select("customer_id", "window_start", "window_end")
               .join(res, on=["customer_id", "window_start", "window_end"], how="left")
               .with_columns(pl.col("value").fill_null(pl.lit(0, dtype=DEC))))
    res = res.select(
        pl.col("customer_id").cast(pl.String), pl.col("window_start").cast(TS), pl.col("window_end").cast(TS),
        *[pl.col(c).cast(pl.String).alias(k) for c, k in gcols.items()],
        pl.col("value").cast(DEC),
    )
    return sort_rows(res, ["customer_id", "window_start", "window_end", *keys], nulls_last=False)
