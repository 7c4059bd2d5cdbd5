"""Deliver alert firings to their channels (SPEC §6) and record every attempt (`deliveries`, §7).

Delivery is at-least-once and never repeated after a success: a (firing, channel, target) that
is `delivered` in the earlier deliveries is not sent again; a failed one is retried with
exponential backoff inside the run (`retries_in_run` attempts) and again on later runs, until
`max_attempts` attempts in total (numbered from 1 across runs); the last one is recorded as
`gave_up` if it fails too, and nothing is tried after it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from typing import Any, Callable, Mapping

import httpx
import polars as pl

from catalog.config import Alert, Channel, Customer, Settings
from catalog.schemas import SCHEMAS, conform
from flows.notify.channels import TIMEOUT_SECONDS, USER_AGENT, Outcome, send_email, send_http
from flows.notify.redact import redact_url, scrub, url_secrets
from transforms.alerts import firing_record

log = logging.getLogger("meterbill.notify")

UTC = dt.timezone.utc
KEY = ("alert_id", "customer_id", "window_start", "channel", "target")


def channel_targets(alert: Alert) -> list[tuple[str, str, Channel, str | None]]:
    """(channel type, target as recorded, channel, email recipient) for every target of an alert.

    An email channel has one target per recipient (one message each, so a retry never resends to
    a recipient that already got it). A webhook or Slack target is its redacted URL; should two
    channels of one alert redact to the same text, the later ones get ` #2`, ` #3`, ... .
    """
    out: list[tuple[str, str, Channel, str | None]] = []
    for ch in alert.channels:
        if ch.type == "email":
            for rcpt in dict.fromkeys(r.strip() for r in ch.to if r.strip()):
                out.append((ch.type, rcpt, ch, rcpt))
        else:
            out.append((ch.type, redact_url(ch.url or "", secret_path=ch.type == "slack"), ch, None))
    seen: Counter = Counter()
    unique = []
    for kind, target, ch, rcpt in out:
        seen[(kind, target)] += 1
        n = seen[(kind, target)]
        unique.append((kind, target if n == 1 else f"{target} #{n}", ch, rcpt))
    return unique


class _RedactLogs(logging.Filter):
    """httpx logs every request's full URL at INFO; mask URL secrets in those records."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage(), self.secrets)
        record.args = ()
        return True


def _history(previous: pl.DataFrame | None) -> dict[tuple, dict[str, Any]]:
    """Per delivery key: attempts made so far, and whether it was delivered or given up."""
    state: dict[tuple, dict[str, Any]] = {}
    if previous is None or previous.height == 0:
        return state
    for r in previous.select(*KEY, "attempt", "status").iter_rows(named=True):
        k = tuple(r[c] for c in KEY)
        s = state.setdefault(k, {"attempts": 0, "delivered": False, "gave_up": False})
        s["attempts"] = max(s["attempts"], r["attempt"] or 0)
        s["delivered"] |= r["status"] == "delivered"
        s["gave_up"] |= r["status"] == "gave_up"
    return state


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def deliver(
    firings: pl.DataFrame,
    alerts: Mapping[str, Alert],
    settings: Settings,
    customers: Mapping[str, Customer],
    previous: pl.DataFrame | None,
    now: Callable[[], dt.datetime],
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int | None = None,
    retries_in_run: int = 3,
    backoff: float = 0.5,
) -> pl.DataFrame:
    """Send every firing to every target of its alert's channels; return the new `deliveries` rows.

    firings         alerts_fired rows to consider (new and old ones)
    previous        deliveries of earlier runs (or None): delivered and given-up keys are skipped,
                    attempt numbers continue after the highest recorded one
    now             the clock, called for each attempt's attempted_at
    sleep, backoff  the wait before in-run retry k (k = 1, 2, ...) is backoff × 2^(k−1) seconds
    max_attempts    total attempts per target across runs (default settings.max_delivery_attempts)
    retries_in_run  attempts per target in this run (a configuration error, such as a missing
                    environment variable, is tried once per run: retrying cannot help)

    A firing whose alert is no longer in `alerts` is skipped (logged). Nothing here raises for a
    failed delivery: the failure is a row with its error.
    """
    limit = max_attempts or settings.max_delivery_attempts
    per_run = max(1, retries_in_run)
    state = _history(previous)
    rows: list[dict[str, Any]] = []
    todo = firings.sort("alert_id", "customer_id", "window_start") if firings.height else firings

    url_parts = [
        part for a in alerts.values() for ch in a.channels if ch.url
        for part in url_secrets(ch.url, secret_path=ch.type == "slack")
    ]
    guard = _RedactLogs(url_parts)
    httpx_log = logging.getLogger("httpx")
    httpx_log.addFilter(guard)
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, headers={"User-Agent": USER_AGENT}) as client:
            rows += _send_all(client, todo, alerts, settings, customers, state, now, sleep, limit, per_run, backoff)
    finally:
        httpx_log.removeFilter(guard)

    if not rows:
        return pl.DataFrame(schema=SCHEMAS["deliveries"])
    out = conform("deliveries", pl.DataFrame(rows, schema=SCHEMAS["deliveries"]))
    return out.sort(*KEY, "attempt")


def _send_all(client, todo, alerts, settings, customers, state, now, sleep, limit, per_run, backoff) -> list[dict]:
    rows: list[dict[str, Any]] = []
    seen_firings: set[tuple] = set()
    for f in todo.iter_rows(named=True):
        fkey = (f["alert_id"], f["customer_id"], f["window_start"])
        if fkey in seen_firings:
            continue
        seen_firings.add(fkey)
        alert = alerts.get(f["alert_id"])
        if alert is None:
            log.warning("alert %s is not in the catalogue any more: its firing for %s is not delivered",
                        f["alert_id"], f["customer_id"])
            continue
        cust = customers.get(f["customer_id"])
        record = firing_record(f, alert, cust.customer_name if cust is not None else None)
        for kind, target, channel, rcpt in channel_targets(alert):
            key = (*fkey, kind, target)
            st = state.get(key, {"attempts": 0, "delivered": False, "gave_up": False})
            if st["delivered"] or st["gave_up"] or st["attempts"] >= limit:
                continue

            def send(at: dt.datetime, kind=kind, channel=channel, rcpt=rcpt) -> Outcome:
                if kind == "email":
                    return send_email(settings.smtp, rcpt or "", record, at)
                return send_http(client, channel, record)

            rows += _attempts(key, st["attempts"], send, now, sleep, limit, per_run, backoff)
    return rows


def _attempts(key: tuple, done: int, send, now, sleep, limit: int, per_run: int, backoff: float) -> list[dict]:
    """Up to `per_run` attempts for one target, stopping at a success or at attempt `limit`."""
    rows = []
    attempt = done
    for k in range(1, per_run + 1):
        attempt += 1
        at = _utc(now())
        try:
            outcome = send(at)
        except Exception as e:  # noqa: BLE001 - the senders do not raise; belt and braces
            outcome = Outcome(False, None, f"internal error: {type(e).__name__}", retry=False)
        status = "delivered" if outcome.delivered else ("gave_up" if attempt >= limit else "failed")
        rows.append({
            "alert_id": key[0], "customer_id": key[1], "window_start": key[2],
            "channel": key[3], "target": key[4], "attempt": attempt, "status": status,
            "http_status": outcome.http_status, "error": outcome.error, "attempted_at": at,
        })
        _log(status, key, attempt, outcome)
        if outcome.delivered or attempt >= limit or k == per_run or not outcome.retry:
            break
        sleep(backoff * 2 ** (k - 1))
    return rows


def _log(status: str, key: tuple, attempt: int, outcome: Outcome) -> None:
    alert_id, customer_id, _, kind, target = key
    if status == "delivered":
        log.info("alert %s for %s delivered by %s to %s (attempt %d)", alert_id, customer_id, kind, target, attempt)
    else:
        log.warning("alert %s for %s not delivered by %s to %s (attempt %d, %s): %s",
                    alert_id, customer_id, kind, target, attempt, status, outcome.error)
