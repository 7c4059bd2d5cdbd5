"""The first event of each customer, read from the lake (`transforms.firsts`: the first counting
event before `as_of`): where a default plan starts, for bill, backfill and alerts alike."""

from __future__ import annotations

import datetime as dt

from catalog import Lake
from catalog.lake import duck, sql_str
from flows.stages.common import register_customers
from transforms.firsts import first_events_sql


def first_event_times(lk: Lake, as_of: dt.datetime, customers: set[str] | None = None) -> dict:
    """customer_id -> the customer's first event before `as_of` (with `customers`, only theirs).
    One DuckDB pass over five columns of the events."""
    if not lk.exists("events"):
        return {}
    con = duck(lk)
    try:
        con.execute("SET TimeZone = 'UTC'")
        if customers is not None:
            register_customers(con, customers)
        src = f"read_parquet({sql_str(lk.table_glob('events'))}, hive_partitioning = false)"
        df = con.sql(first_events_sql(src, as_of, shard=customers is not None)).pl()
    finally:
        con.close()
    return {c: t.astimezone(dt.timezone.utc) for c, t in df.iter_rows()}
