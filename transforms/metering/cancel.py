"""Cancellation of erroneous events (SPEC §2, Amberflo's cancellation).

A cancel record carries the dimension `meterbill_cancel: "true"` (ingest sets `is_cancel`) and
the customer_id, meter_api_name, unique_id and event time of the event it cancels. The record
itself never counts, and neither does any event with the same four values.

Events without a unique_id cannot be cancelled (a cancel record names its target by unique_id;
null never matches null).

The rule in Polars (`apply_cancellations`) and in DuckDB SQL (`cancels_sql`, `not_cancelled_sql`).
"""

from __future__ import annotations

import polars as pl

CANCEL_DIMENSION = "meterbill_cancel"
CANCEL_KEY = ["customer_id", "meter_api_name", "unique_id", "event_time"]


def cancel_flag(columns: list[str]) -> pl.Expr:
    """True for cancel records: `is_cancel` when the frame has it, else the dimension."""
    if "is_cancel" in columns:
        return pl.col("is_cancel").fill_null(False)
    if "dimensions" in columns:
        return (pl.col("dimensions").map.get(CANCEL_DIMENSION) == "true").fill_null(False)
    return pl.lit(False)


def apply_cancellations(events: pl.DataFrame) -> pl.DataFrame:
    """The events that count: cancel records and the events they cancel removed (order kept)."""
    flag = cancel_flag(events.columns)
    is_cancel = events.select(flag.alias("c")).to_series()
    if not is_cancel.any():
        return events
    cancels = events.filter(is_cancel).select(CANCEL_KEY).unique()
    kept = events.filter(~is_cancel)
    return kept.join(cancels, on=CANCEL_KEY, how="anti", maintain_order="left")


def counting(events: pl.DataFrame) -> pl.DataFrame:
    """Guard used by the meter functions: apply cancellations when the frame still has cancel
    records (idempotent, and a no-op on frames without them)."""
    return apply_cancellations(events)


def cancels_sql(events: str) -> str:
    """The cancel records of `events` as (customer_id, meter_api_name, unique_id, event_time).

    Read from the source relation, not from a CTE that is read again later: DuckDB materialises a
    CTE read twice (every event)."""
    return f"SELECT DISTINCT customer_id, meter_api_name, unique_id, event_time FROM {events} WHERE is_cancel"


def not_cancelled_sql(row: str, cancels: str = "cancels") -> str:
    """The condition that the event `row` is not cancelled by a record of `cancels` (SPEC §2: same
    customer_id, meter_api_name, unique_id and event_time; a null unique_id matches nothing)."""
    return (f"NOT EXISTS (SELECT 1 FROM {cancels} c WHERE c.customer_id = {row}.customer_id "
            f"AND c.meter_api_name = {row}.meter_api_name AND c.unique_id = {row}.unique_id "
            f"AND c.event_time = {row}.event_time)")
