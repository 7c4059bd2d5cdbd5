"""usage_hourly for the mergeable meter types (sum, count, min, max) as one DuckDB query.

The same rows as `transforms.metering.hourly_usage` gives for these types (tested row for row
in tests/transforms/metering/test_hourly_sql.py), computed where the events are (Parquet)
instead of in Python memory:

* cancellations first (SPEC §2, `transforms.metering.cancel`): cancel records never count, nor
  does any event with the same customer_id, meter_api_name, unique_id and event_time as one (a
  null unique_id matches nothing);
* events with a null meter_value do not count for sum/min/max (count ignores the value);
* one row per customer × meter × dimension combination × UTC hour: `dims_key` is the sorted
  `key\\x1evalue` pairs joined by `\\x1f` ('' without dimensions), `dimensions` the map with its
  entries sorted by key; `event_count`, `value_sum` (null when no value), `value_min`,
  `value_max`, and `value`: Σ (sum; 0 when no value), the count (count), the max or min;
* meters the catalogue does not know are aggregated as `sum` (as hourly_usage does).

A row depends only on its own hour's events and the cancel records of the same event time, so
any set of whole UTC dates can be computed on its own: the caller runs this per `event_date`
partition (bounded memory, one sorted file per partition).

Pure SQL building: the caller names the event relation and a relation `meter_types(meter_api_name,
type)` of the catalogue's meters, and sets `TimeZone = 'UTC'`.
"""

from __future__ import annotations

from catalog.meter_types import MERGEABLE_TYPES, UNKNOWN_METER_TYPE, VALUELESS_TYPES, sql_list
from transforms.metering.cancel import cancels_sql, not_cancelled_sql

# usage_hourly's columns in file order (the partition column hour_date lives in the folder name)
FILE_COLUMNS = ("customer_id", "meter_api_name", "dimensions", "dims_key", "hour", "value", "event_count",
                "value_sum", "value_min", "value_max")


def mergeable_hourly_sql(events: str, meter_types: str = "meter_types", *, with_hour_date: bool = False) -> str:
    """SELECT giving usage_hourly rows (FILE_COLUMNS, in no promised order: flows/meter.py runs
    it single-threaded, which gives the same order for the same events) for the events of
    mergeable or unknown meters in `events`."""
    dec = "DECIMAL(38, 9)"
    hd = ", CAST(hour AS DATE) AS hour_date" if with_hour_date else ""
    return f"""
WITH ev AS (
  SELECT e.customer_id, e.meter_api_name, CAST(e.meter_value AS {dec}) AS meter_value, e.event_time,
         e.unique_id, e.dimensions, coalesce(e.is_cancel, false) AS is_cancel,
         coalesce(t.type, '{UNKNOWN_METER_TYPE}') AS mtype
  FROM {events} e LEFT JOIN {meter_types} t ON t.meter_api_name = e.meter_api_name
  WHERE coalesce(t.type, '{UNKNOWN_METER_TYPE}') IN {sql_list(MERGEABLE_TYPES)}
), cancels AS ({cancels_sql(events)}
), counting AS (
  SELECT ev.* FROM ev
  WHERE NOT is_cancel AND (mtype IN {sql_list(VALUELESS_TYPES & MERGEABLE_TYPES)} OR meter_value IS NOT NULL)
    AND {not_cancelled_sql('ev')}
), keyed AS (  -- the combination as a MAP with sorted keys (ingest writes them so: rebuilt only if not)
  SELECT customer_id, meter_api_name, mtype, meter_value, date_trunc('hour', event_time) AS hour,
         CASE WHEN dimensions IS NULL THEN MAP {{}}::MAP(VARCHAR, VARCHAR)
              WHEN cardinality(dimensions) <= 1 OR map_keys(dimensions) = list_sort(map_keys(dimensions))
              THEN dimensions
              ELSE map_from_entries(list_sort(map_entries(dimensions))) END AS dimensions
  FROM counting
), agg AS (
  SELECT customer_id, meter_api_name, dimensions, hour, any_value(mtype) AS mtype, count(*) AS event_count,
         sum(meter_value) AS value_sum, min(meter_value) AS value_min, max(meter_value) AS value_max
  FROM keyed GROUP BY customer_id, meter_api_name, dimensions, hour
)
SELECT customer_id, meter_api_name, dimensions,
       coalesce(array_to_string(list_transform(map_entries(dimensions), lambda e: e.key || chr(30) || e.value), chr(31)), '') AS dims_key,
       hour,
       CAST(CASE mtype WHEN 'count' THEN CAST(event_count AS {dec}) WHEN 'max' THEN value_max
                       WHEN 'min' THEN value_min ELSE coalesce(value_sum, CAST(0 AS {dec})) END AS {dec}) AS value,
       CAST(event_count AS BIGINT) AS event_count, CAST(value_sum AS {dec}) AS value_sum,
       value_min, value_max{hd}
FROM agg"""
