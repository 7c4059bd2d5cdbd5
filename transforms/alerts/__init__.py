"""Alert evaluation (SPEC §6): windows, conditions, firings and payload templates. Pure functions.

Decisions where SPEC §6 is silent (peers' behaviour: Amberflo, Stripe, OpenMeter):

* Of the windows the caller passes, each customer's last complete one (the latest row with
  complete = true) is judged, plus the window in progress for greater_than; change conditions
  compare it with the complete window that ends where it starts. Earlier complete windows are
  read only as the previous value: earlier runs judged them (a backfill replays those runs).
* A customer missing from a computed complete window next to one of its own windows counts as 0
  there (§4: a window without events is 0), so a drop to nothing is a -100% change. A customer
  absent from `values` altogether is not evaluated.
* The percentage change is the usage query's (`transforms.shared.percent`): §4's formula as written,
  also for a negative previous value (-10 -> -5 is -50); prev = 0 > cur gives -100 (the mirror
  of Amberflo's 100 for prev = 0 < cur).
* previous_value of a threshold firing is the window before's value when known, else null.
* all_customers: a '*' row given for a window is used as is; otherwise its customers' rows are
  summed. Its calendar windows are UTC (transforms/alerts/values.py): the sum over customers of
  several zones has no one customer's local day. per_customer evaluates every customer_id given, '*' included (pre-aggregated series).
* A window's `complete` flag is the caller's; rows starting after as_of are never evaluated.
* `metric` in alerts_fired is the alert's metric kind (usage, spend, ...); the meter or product
  item is named in the message.
* Payload templates: a placeholder inside a JSON string is filled with escaped text, outside one
  with a JSON literal (decimals as exact numbers, null when absent).
"""

from transforms.alerts.evaluate import decide, evaluate, fmt_decimal
from transforms.alerts.payload import (
    PLACEHOLDERS,
    TemplateError,
    firing_record,
    iso,
    record_json,
    render_payload,
    validate_template,
)
from transforms.alerts.windows import AlertWindows, alert_windows

__all__ = [
    "PLACEHOLDERS",
    "AlertWindows",
    "TemplateError",
    "alert_windows",
    "decide",
    "evaluate",
    "firing_record",
    "fmt_decimal",
    "iso",
    "record_json",
    "render_payload",
    "validate_template",
]
