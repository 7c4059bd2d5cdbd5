"""The metering room: events -> meter values per window, hourly usage, the usage query.

Pure functions (no paths, no Prefect, no clock, no network): `as_of` is always a parameter.

- apply_cancellations(events)                      SPEC §2 cancellation
- meter_values(events, meter, windows, ...)        SPEC §4, all eleven meter types, exact
- hourly_usage(events, meters, hours=None)         the usage_hourly table
- hourly_rebuild_dates(new_events, events, meters) the UTC dates an incremental rebuild needs
- usage_query(events, meter, window=..., ...)      SPEC §4 usage query

Calendar windows and the percentage change are shared with the alerts: `transforms.shared`.
"""

from transforms.metering.cancel import apply_cancellations
from transforms.metering.hourly import hourly_rebuild_dates, hourly_usage
from transforms.metering.query import usage_query
from transforms.metering.values import meter_rows, meter_values

__all__ = [
    "apply_cancellations",
    "hourly_rebuild_dates",
    "hourly_usage",
    "meter_rows",
    "meter_values",
    "usage_query",
]
