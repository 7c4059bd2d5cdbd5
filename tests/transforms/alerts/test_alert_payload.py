"""Webhook payload templates: placeholders filled, values JSON-escaped, unknown names refused."""

import datetime as dt
import json
from decimal import Decimal as D

import pytest

from transforms.alerts import PLACEHOLDERS, TemplateError, render_payload, validate_template

RECORD = {
    "customer_id": "globex",
    "customer_name": 'Globex "Corp" \\ Ltd\n',
    "alert_id": "compute-heavy",
    "alert_name": "Compute over 1000 hours",
    "meter_api_name": "compute_hours",
    "current_value": D("1000.500000000"),
    "previous_value": None,
    "threshold": D("1000.000000000"),
    "condition": "greater_than",
    "window_start": dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc),
    "window_end": dt.datetime(2026, 1, 12, tzinfo=dt.timezone.utc),
}


def test_spec_example_template():
    body = render_payload('{"text": "{{customer_id}} used {{current_value}}"}', RECORD)
    assert json.loads(body) == {"text": "globex used 1000.5"}


def test_values_are_json_escaped_inside_strings():
    body = render_payload('{"who": "{{customer_name}}", "w": "{{ window_start }}/{{window_end}}"}', RECORD)
    assert json.loads(body) == {"who": RECORD["customer_name"], "w": "2026-01-05T00:00:00Z/2026-01-12T00:00:00Z"}


def test_bare_placeholders_become_json_literals():
    body = render_payload(
        '{"v": {{current_value}}, "p": {{previous_value}}, "t": {{threshold}}, "c": {{condition}}}', RECORD)
    data = json.loads(body, parse_float=D)
    assert data == {"v": D("1000.5"), "p": None, "t": 1000, "c": "greater_than"}


def test_every_placeholder_is_known():
    template = json.dumps({name: "{{" + name + "}}" for name in PLACEHOLDERS})
    validate_template(template)
    data = json.loads(render_payload(template, RECORD))
    assert data["alert_name"] == "Compute over 1000 hours" and data["previous_value"] == ""


def test_unknown_placeholder_is_a_clear_error():
    with pytest.raises(TemplateError, match=r"unknown placeholder\(s\) \{\{customer\}\}.*allowed: customer_id"):
        validate_template('{"text": "{{customer}} used {{current_value}}"}')
    with pytest.raises(TemplateError, match="unknown placeholder"):
        render_payload('{"text": "{{secret}}"}', RECORD)


def test_template_that_is_not_json_is_refused():
    with pytest.raises(TemplateError, match="not valid JSON"):
        validate_template('{"text": "{{customer_id}}"')


def test_escaped_quotes_in_the_template_do_not_confuse_string_tracking():
    body = render_payload('{"a": "say \\"{{customer_id}}\\"", "b": {{current_value}}}', RECORD)
    assert json.loads(body) == {"a": 'say "globex"', "b": 1000.5}
