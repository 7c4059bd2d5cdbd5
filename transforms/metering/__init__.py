"""The metering room: events -> meter values per window, hourly usage, the usage query.

Pure functions (no paths, no Prefect, no clock, no network): `as_of` is always a parameter.
"""

from transforms.metering.cancel import apply_cancellations
from transforms.metering.values import meter_values
from transforms.metering.windows import calendar_windows, window_containing

__all__ = [
    "apply_cancellations",
    "calendar_windows",
    "meter_values",
    "window_containing",
]
