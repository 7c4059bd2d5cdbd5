"""Webhook payload templates (SPEC §6): `{{placeholder}}` filling that keeps the JSON valid.

A template is JSON text with `{{name}}` placeholders (spaces inside the braces allowed):

    {"text": "{{customer_id}} used {{current_value}}", "value": {{current_value}}}

Inside a JSON string a placeholder is replaced by the value's text, JSON-escaped (quotes,
backslashes, control characters), so a customer name such as `Acme "Rockets"` cannot break out of
the string. Outside a string it is replaced by a JSON literal: numbers as numbers (exact decimal
text), text as a quoted string, a missing value as `null`. Decimals are written without exponent
or trailing zeros and instants as ISO-8601 UTC (`2026-01-05T00:00:00Z`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any, Mapping

from transforms.alerts.evaluate import fmt_decimal

PLACEHOLDERS: tuple[str, ...] = (
    "customer_id", "customer_name", "alert_id", "alert_name", "meter_api_name",
    "current_value", "previous_value", "threshold", "condition", "window_start", "window_end",
)

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A payload template that cannot be used (unknown placeholder, or not JSON once filled)."""


def iso(t: dt.datetime) -> str:
    """An instant as ISO-8601 UTC with a Z: 2026-01-05T00:00:00Z (microseconds only when present)."""
    t = t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)
    return t.isoformat().replace("+00:00", "Z")


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, Decimal):
        return fmt_decimal(v)
    if isinstance(v, dt.datetime):
        return iso(v)
    return str(v)


def _literal(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, Decimal)):
        return fmt_decimal(Decimal(v))
    return json.dumps(_text(v), ensure_ascii=False)


def _placeholders(template: str) -> list[tuple[int, int, str, bool]]:
    """(start, end, name, inside_a_json_string) of every placeholder, in order."""
    out = []
    in_string = False
    i = 0
    n = len(template)
    while i < n:
        if template.startswith("{{", i):
            m = _PLACEHOLDER.match(template, i)
            if m:
                out.append((m.start(), m.end(), m.group(1), in_string))
                i = m.end()
                continue
        ch = template[i]
        if in_string and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
        i += 1
    return out


def validate_template(template: str) -> None:
    """Raise TemplateError unless `template` only uses known placeholders and fills to valid JSON.

    Call it when the catalogue is validated, so a bad template stops the run before anything is
    sent (one message naming the placeholder and the allowed names).
    """
    unknown = sorted({name for _, _, name, _ in _placeholders(template) if name not in PLACEHOLDERS})
    if unknown:
        raise TemplateError(
            f"unknown placeholder(s) {', '.join('{{' + u + '}}' for u in unknown)}; "
            f"allowed: {', '.join(PLACEHOLDERS)}"
        )
    sample = {
        "customer_id": 'c"1', "customer_name": "Name \\ \"q\"", "alert_id": "a", "alert_name": "n",
        "meter_api_name": "m", "current_value": Decimal("1.5"), "previous_value": None,
        "threshold": Decimal(1), "condition": "greater_than",
        "window_start": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        "window_end": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
    }
    _render(template, sample)


def _render(template: str, record: Mapping[str, Any]) -> str:
    parts: list[str] = []
    last = 0
    for start, end, name, in_string in _placeholders(template):
        if name not in PLACEHOLDERS:
            raise TemplateError(f"unknown placeholder {{{{{name}}}}}; allowed: {', '.join(PLACEHOLDERS)}")
        value = record.get(name)
        parts.append(template[last:start])
        parts.append(json.dumps(_text(value), ensure_ascii=False)[1:-1] if in_string else _literal(value))
        last = end
    parts.append(template[last:])
    body = "".join(parts)
    try:
        json.loads(body)
    except json.JSONDecodeError as e:
        raise TemplateError(f"the payload is not valid JSON once filled: {e.msg} at character {e.pos}") from None
    return body


def render_payload(template: str, record: Mapping[str, Any]) -> str:
    """Fill the `{{placeholders}}` of a JSON template from `record`; the result is valid JSON.

    Raises TemplateError for an unknown placeholder or a template that is not JSON once filled.
    """
    return _render(template, record)


def firing_record(firing: Mapping[str, Any], alert: Any, customer_name: str | None = None) -> dict[str, Any]:
    """Everything a notification may say about one firing (an alerts_fired row) of `alert`.

    The keys are the template placeholders plus metric, message and fired_at. customer_name
    defaults to the customer_id ('all customers' for '*').
    """
    cid = firing["customer_id"]
    if customer_name is None:
        customer_name = "all customers" if cid == "*" else cid
    return {
        "alert_id": firing["alert_id"],
        "alert_name": (getattr(alert, "name", "") or firing["alert_id"]) if alert is not None else firing["alert_id"],
        "customer_id": cid,
        "customer_name": customer_name,
        "metric": firing.get("metric"),
        "meter_api_name": getattr(alert, "meter_api_name", None) if alert is not None else None,
        "window_start": firing["window_start"],
        "window_end": firing.get("window_end"),
        "current_value": firing.get("current_value"),
        "previous_value": firing.get("previous_value"),
        "threshold": firing.get("threshold"),
        "condition": firing.get("condition"),
        "message": firing.get("message"),
        "fired_at": firing.get("fired_at"),
    }


def record_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A firing record as plain JSON values: decimals as exact strings, instants as ISO-8601 UTC."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, Decimal):
            out[k] = fmt_decimal(v)
        elif isinstance(v, dt.datetime):
            out[k] = iso(v)
        else:
            out[k] = v
    return out
