"""The first event of a customer: where the default plan starts (SPEC §5.2).

A customer's first event is its first *counting* event before the run's `as_of`: not a cancel
record, not an event a cancel record cancels (SPEC §2: it stops counting in every aggregate), and
not an event at or after `as_of`. Bill, backfill and alerts all take it from `first_events_sql`,
so a default-plan customer has the same periods in each.
"""

from __future__ import annotations

import datetime as dt

from transforms.metering.cancel import cancels_sql, not_cancelled_sql


def first_events_sql(events: str, as_of: dt.datetime, *, shard: bool = False) -> str:
    """SELECT customer_id, t: each customer's first counting event before `as_of` in the events
    relation `events` (columns customer_id, meter_api_name, unique_id, event_time, is_cancel); with
    `shard`, only the customers of the relation `shard_customers(customer_id)`."""
    only = "AND customer_id IN (SELECT customer_id FROM shard_customers)" if shard else ""
    # a cancel record matches only events of its own customer and event time, so the cancels of
    # every customer and time match exactly what those of the shard before `as_of` would
    return f"""
WITH ev AS (SELECT customer_id, meter_api_name, unique_id, event_time, coalesce(is_cancel, false) AS c
            FROM {events} WHERE event_time < TIMESTAMPTZ '{as_of.isoformat()}' {only}),
     cancels AS ({cancels_sql(events)})
SELECT customer_id, min(event_time) AS t FROM ev
WHERE NOT c AND {not_cancelled_sql('ev')}
GROUP BY customer_id"""
