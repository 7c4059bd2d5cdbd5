"""The billing room: from counting events to the quantities pricing needs, and back to a reconciliation.

The glue between metering (`transforms.metering`) and pricing (`transforms.pricing`):

- quantities.py      which events are billed on which period and plan item: `line_usage`,
                     `reward_usage`, `in_periods`, `periods_frame`
- unbilled.py        usage that no price covers, never dropped: `unbilled_usage`
- reconciliation.py  whether every event's usage was billed exactly once: `reconciliation`
- from_hourly.py     what billing counts, read from `usage_hourly` instead of every event
                     (pre-aggregated pseudo-events of the mergeable meter types)
"""

from transforms.billing.quantities import in_periods, line_usage, periods_frame, reward_usage
from transforms.billing.reconciliation import reconciliation
from transforms.billing.unbilled import unbilled_usage

__all__ = ["in_periods", "line_usage", "periods_frame", "reconciliation", "reward_usage", "unbilled_usage"]
