"""One delivery attempt per channel type: webhook, Slack, email. Each returns an Outcome, never raises.

Secrets (the HMAC key, SMTP credentials, tokens in URLs) are read from the environment at the
moment of sending, and every error text is scrubbed of them before it leaves this module.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Mapping, Optional

import httpx
import jinja2

from catalog.config import Channel, Smtp
from flows.notify.redact import scrub, url_secrets
from transforms.alerts import TemplateError, fmt_decimal, iso, record_json, render_payload

TIMEOUT_SECONDS = 10.0
SIGNATURE_HEADER = "X-Meterbill-Signature"
USER_AGENT = "meterbill-notify/1"


@dataclass(frozen=True)
class Outcome:
    """What one attempt did. `retry` is False when trying again in this run cannot help
    (a configuration problem such as a missing environment variable)."""

    delivered: bool
    http_status: Optional[int] = None
    error: Optional[str] = None
    retry: bool = True


def _config_error(message: str) -> Outcome:
    return Outcome(False, None, message, retry=False)


def _env(name: str, what: str) -> tuple[Optional[str], Optional[Outcome]]:
    value = os.environ.get(name)
    if not value:
        return None, _config_error(f"{what}: environment variable {name} is not set")
    return value, None


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the exact body bytes>`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def firing_key(record: Mapping[str, Any]) -> str:
    """A stable id of a firing (same on every retry), for receivers that deduplicate."""
    text = f"{record['alert_id']}\x1f{record['customer_id']}\x1f{iso(record['window_start'])}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# ---------------------------------------------------------------- HTTP (webhook, Slack)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(record: Mapping[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: `text` (the fallback and notification text) and `blocks`."""
    text = record["message"] or f"{record['alert_name']}: {record['customer_name']}"
    fields = [
        ("Customer", f"{record['customer_name']} ({record['customer_id']})"),
        ("Current value", fmt_decimal(record["current_value"])),
        ("Previous value", fmt_decimal(record["previous_value"]) or "n/a"),
        ("Threshold", f"{record['condition']} {fmt_decimal(record['threshold'])}"),
    ]
    window = f"{iso(record['window_start'])} to {iso(record['window_end'])}" if record.get("window_end") else iso(record["window_start"])
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": (record["alert_name"] or record["alert_id"])[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(text)}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"} for k, v in fields
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": _slack_escape(f"alert {record['alert_id']} · window {window}")}
            ]},
        ],
    }


def http_body(channel: Channel, record: Mapping[str, Any]) -> bytes:
    """The exact bytes to POST: the rendered `payload` template, else the default message."""
    if channel.payload:
        text = render_payload(channel.payload, record)
    elif channel.type == "slack":
        text = json.dumps(slack_body(record), ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(record_json(record), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def send_http(client: httpx.Client, channel: Channel, record: Mapping[str, Any]) -> Outcome:
    """POST the JSON body to the channel's URL; 2xx is delivered."""
    url = channel.url or ""
    secrets = url_secrets(url, secret_path=channel.type == "slack")
    try:
        parsed = httpx.URL(url)
    except Exception:
        return _config_error("the URL cannot be parsed")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return _config_error(f"only http and https URLs are allowed, not {parsed.scheme or 'no scheme'!r}")
    try:
        body = http_body(channel, record)
    except TemplateError as e:
        return _config_error(f"payload template: {e}")
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "X-Meterbill-Firing": firing_key(record),
    }
    if channel.secret_env:
        key, problem = _env(channel.secret_env, "secret_env")
        if problem:
            return problem
        secrets.append(key)
        headers[SIGNATURE_HEADER] = signature(key, body)
    try:
        resp = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return Outcome(False, None, f"timed out after {TIMEOUT_SECONDS:g} s")
    except httpx.HTTPError as e:
        return Outcome(False, None, scrub(f"{type(e).__name__}: {e}", secrets))
    except Exception as e:  # noqa: BLE001 - an attempt must never crash the run
        return Outcome(False, None, scrub(f"{type(e).__name__}: {e}", secrets))
    if 200 <= resp.status_code < 300:
        return Outcome(True, resp.status_code)
    detail = " ".join(resp.text[:200].split())
    error = f"HTTP {resp.status_code} {resp.reason_phrase}" + (f": {detail}" if detail else "")
    return Outcome(False, resp.status_code, scrub(error, secrets))


# ---------------------------------------------------------------- email

_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html><body style="font-family: sans-serif">
<h2>{{ alert_name }}</h2>
<p>{{ message }}</p>
<table cellpadding="4" style="border-collapse: collapse">
{% for label, value in rows %}<tr><th align="left">{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<p style="color: #666">Sent by meterbill for alert {{ alert_id }}.</p>
</body></html>
"""
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def email_message(record: Mapping[str, Any], sender: str, recipient: str, now: dt.datetime) -> EmailMessage:
    """A multipart/alternative message: plain text and HTML with the firing's details."""
    rows = [
        ("Customer", f"{record['customer_name']} ({record['customer_id']})"),
        ("Metric", f"{record['metric']}" + (f" {record['meter_api_name']}" if record.get("meter_api_name") else "")),
        ("Condition", f"{record['condition']} {fmt_decimal(record['threshold'])}"),
        ("Current value", fmt_decimal(record["current_value"])),
        ("Previous value", fmt_decimal(record["previous_value"]) or "n/a"),
        ("Window", f"{iso(record['window_start'])} to {iso(record['window_end'])}" if record.get("window_end") else iso(record["window_start"])),
        ("Fired at", iso(record["fired_at"]) if record.get("fired_at") else ""),
    ]
    msg = EmailMessage()
    msg["Subject"] = _one_line(f"[meterbill] {record['alert_name']}: {record['customer_name']}")
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = format_datetime(now.astimezone(dt.timezone.utc))
    domain = sender.rpartition("@")[2].strip("<> ") or "meterbill.invalid"
    msg["Message-ID"] = f"<{firing_key(record)}@{domain}>"  # same on retries: receivers can dedupe
    plain = [record["message"] or "", ""] + [f"{label}: {value}" for label, value in rows]
    msg.set_content("\n".join(plain) + "\n")
    msg.add_alternative(
        _HTML.render(alert_name=record["alert_name"], message=record["message"] or "", rows=rows,
                     alert_id=record["alert_id"]),
        subtype="html",
    )
    return msg


def send_email(smtp: Optional[Smtp], recipient: str, record: Mapping[str, Any], now: dt.datetime) -> Outcome:
    """Send one message to one recipient over SMTP (STARTTLS if configured, implicit TLS on port 465)."""
    if smtp is None:
        return _config_error("email: settings.smtp is not configured")
    secrets: list[str] = []
    user = password = None
    if smtp.username_env:
        user, problem = _env(smtp.username_env, "smtp.username_env")
        if problem:
            return problem
        secrets.append(user)
    if smtp.password_env:
        password, problem = _env(smtp.password_env, "smtp.password_env")
        if problem:
            return problem
        secrets.append(password)
    try:
        msg = email_message(record, smtp.sender, recipient, now)
        cls = smtplib.SMTP_SSL if smtp.port == 465 else smtplib.SMTP
        with cls(smtp.host, smtp.port, timeout=TIMEOUT_SECONDS) as conn:
            if smtp.starttls and cls is smtplib.SMTP:
                conn.starttls(context=ssl.create_default_context())
            if password is not None:
                conn.login(user or "", password)
            refused = conn.send_message(msg, from_addr=smtp.sender, to_addrs=[recipient])
        if refused:
            code, text = next(iter(refused.values()))
            return Outcome(False, None, scrub(f"SMTP {code} recipient refused: {text.decode(errors='replace')}", secrets))
        return Outcome(True, None)
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return Outcome(False, None, scrub(f"SMTP {code} recipient refused: {text.decode(errors='replace')}", secrets))
    except smtplib.SMTPResponseException as e:
        text = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
        return Outcome(False, None, scrub(f"SMTP {e.smtp_code} {_one_line(text)}", secrets))
    except (OSError, smtplib.SMTPException) as e:
        return Outcome(False, None, scrub(
            f"cannot send through SMTP server {smtp.host}:{smtp.port}: {type(e).__name__}: {e}", secrets))
    except Exception as e:  # noqa: BLE001 - an attempt must never crash the run
        return Outcome(False, None, scrub(f"{type(e).__name__}: {e}", secrets))
