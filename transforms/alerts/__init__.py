"""Alert evaluation (SPEC §6): windows, conditions, firings and payload templates. Pure functions."""

from transforms.alerts.evaluate import decide, evaluate, fmt_decimal, percent_change
from transforms.alerts.payload import (
    PLACEHOLDERS,
    TemplateError,
    firing_record,
    iso,
    record_json,
    render_payload,
    validate_template,
)
from transforms.alerts.windows import (
    AlertWindows,
    alert_windows,
    calendar_windows,
    window_after,
    window_containing,
    window_start,
)

__all__ = [
    "PLACEHOLDERS",
    "AlertWindows",
    "TemplateError",
    "alert_windows",
    "calendar_windows",
    "decide",
    "evaluate",
    "firing_record",
    "fmt_decimal",
    "iso",
    "percent_change",
    "record_json",
    "render_payload",
    "validate_template",
    "window_after",
    "window_containing",
    "window_start",
]
