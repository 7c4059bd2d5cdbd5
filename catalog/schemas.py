"""Warehouse table schemas (SPEC §7): one declared schema and primary key per table.

Polars dtypes are the source of truth; Arrow/Parquet types follow from them. Money and
quantities are DECIMAL(38, 9); instants are UTC microsecond timestamps; `dimensions` is a
Parquet MAP<string, string> (Polars `Map(String, String)`).
"""

from __future__ import annotations

import polars as pl

DEC = pl.Decimal(38, 9)
TS = pl.Datetime("us", "UTC")
DIMS = pl.Map(pl.String, pl.String)
S = pl.String

TIER = pl.Struct({"tier": pl.Int32, "quantity": DEC, "unit_price": DEC, "flat_fee": DEC, "amount": DEC})

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "events": {
        "customer_id": S, "meter_api_name": S, "meter_value": DEC, "event_time": TS,
        "unique_id": S, "dimensions": DIMS, "is_cancel": pl.Boolean,
        "source_file": S, "row_number": pl.Int64, "ingested_at": TS, "event_date": pl.Date,
    },
    "quarantine": {
        "customer_id": S, "meter_api_name": S, "meter_value": S, "meter_time_in_millis": S,
        "event_time": S, "unique_id": S, "dimensions": S, "raw": S,
        "reason": S, "detail": S, "source_file": S, "row_number": pl.Int64, "ingested_at": TS,
    },
    "ingest_files": {
        "source_file": S, "sha256": S, "format": S, "rows_read": pl.Int64, "accepted": pl.Int64,
        "duplicates": pl.Int64, "quarantined": pl.Int64, "status": S, "error": S, "ingested_at": TS,
    },
    "usage_hourly": {
        "customer_id": S, "meter_api_name": S, "dimensions": DIMS, "dims_key": S, "hour": TS,
        "value": DEC, "event_count": pl.Int64, "value_sum": DEC, "value_min": DEC, "value_max": DEC,
        "hour_date": pl.Date,
    },
    "line_items": {
        "invoice_id": S, "line_id": S, "kind": S, "corrects_period": TS, "customer_id": S,
        "product_item_id": S, "fee_id": S, "promotion_id": S, "grant_id": S, "dimensions": DIMS,
        "description": S, "quantity": DEC, "unit_price": DEC, "amount": DEC, "currency": S,
        "tiers": pl.List(TIER), "period_start": TS, "period_end": TS,
    },
    "invoices": {
        "invoice_id": S, "customer_id": S, "plan_id": S, "subscription_id": S, "currency": S,
        "period_start": TS, "period_end": TS, "status": S, "usage_amount": DEC, "fees_amount": DEC,
        "minimums_amount": DEC, "adjustments_amount": DEC, "subtotal": DEC, "discount": DEC,
        "credits_applied": DEC, "total_due": DEC, "base_currency": S, "total_due_base": DEC,
        "as_of": TS,
    },
    "reconciliation": {
        "customer_id": S, "period_start": TS, "period_end": TS, "product_item_id": S,
        "meter_api_name": S, "events_accepted": pl.Int64, "events_cancelled": pl.Int64,
        "usage_quantity": DEC, "billed_quantity": DEC, "adjusted_quantity": DEC,
    },
    "credit_ledger": {
        "grant_id": S, "customer_id": S, "invoice_id": S, "entry": S, "currency": S, "at": TS,
        "balance_before": DEC, "drawn": DEC, "expired": DEC, "balance_after": DEC,
    },
    "unbilled_usage": {
        "customer_id": S, "meter_api_name": S, "product_item_id": S, "dimensions": DIMS,
        "period_start": TS, "quantity": DEC, "reason": S,
    },
    "alerts_fired": {
        "alert_id": S, "customer_id": S, "window_start": TS, "window_end": TS, "metric": S,
        "current_value": DEC, "previous_value": DEC, "threshold": DEC, "condition": S,
        "message": S, "fired_at": TS,
    },
    "deliveries": {
        "alert_id": S, "customer_id": S, "window_start": TS, "channel": S, "target": S,
        "attempt": pl.Int64, "status": S, "http_status": pl.Int64, "error": S, "attempted_at": TS,
    },
}

KEYS: dict[str, list[str]] = {
    "events": ["source_file", "row_number"],  # a raw record is one event at most
    "quarantine": ["source_file", "row_number"],
    "ingest_files": ["sha256"],
    "usage_hourly": ["customer_id", "meter_api_name", "dims_key", "hour"],
    "line_items": ["invoice_id", "line_id"],
    "invoices": ["invoice_id"],
    "reconciliation": ["customer_id", "period_start", "product_item_id"],
    "credit_ledger": ["grant_id", "invoice_id", "entry"],
    "unbilled_usage": ["customer_id", "meter_api_name", "product_item_id", "dimensions", "period_start", "reason"],
    "alerts_fired": ["alert_id", "customer_id", "window_start"],
    "deliveries": ["alert_id", "customer_id", "window_start", "channel", "target", "attempt"],
}

# key columns where null is a value of its own, compared as equal (the key is unique with nulls
# equal); every other key column is never null. unbilled_usage: usage that no item measures
# (undefined customer or meter, no subscription, not in the plan) has no product item and is
# summed over every dimension combination.
NULLABLE_KEY_COLUMNS: dict[str, set[str]] = {"unbilled_usage": {"product_item_id", "dimensions"}}

# hive partition column of each partitioned table
PARTITIONS: dict[str, str] = {"events": "event_date", "usage_hourly": "hour_date"}


def empty(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMAS[table])


def conform(table: str, df: pl.DataFrame) -> pl.DataFrame:
    """Columns of the table in declared order and type (extra columns are an error)."""
    schema = SCHEMAS[table]
    if df.width == 0:  # no columns: literals would make one all-null row
        return empty(table)
    extra = set(df.columns) - set(schema)
    if extra:
        raise ValueError(f"{table}: unexpected columns {sorted(extra)}")
    exprs = []
    for name, dtype in schema.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype) if df.schema[name] != dtype else pl.col(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs)


def dims_key_expr(col: str = "dimensions") -> pl.Expr:
    """A canonical text key for a dimension map (sorted `k=v` pairs joined by \\x1f): groupable."""
    return (
        pl.col(col).map.entries()
        .list.eval(pl.concat_str(pl.element().struct.field("key"), pl.lit("\x1e"), pl.element().struct.field("value")))
        .list.sort()
        .list.join("\x1f")
        .fill_null("")
    )
