"""Builders for small event and window frames used by the metering tests."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl

from catalog.schemas import SCHEMAS, TS

UTC = dt.timezone.utc
EVENT_COLS = ["customer_id", "meter_api_name", "meter_value", "event_time", "unique_id", "dimensions", "is_cancel"]
EVENT_SCHEMA = {k: SCHEMAS["events"][k] for k in EVENT_COLS}
WINDOW_SCHEMA = {"customer_id": pl.String, "window_start": TS, "window_end": TS}


def t(s: str) -> dt.datetime:
    """ISO-8601 (Z or offset) -> aware UTC datetime."""
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def D(x) -> Decimal | None:
    return None if x is None else Decimal(str(x))


def event(time, value=None, dims=None, *, customer="c1", meter="m", uid=None, cancel=False) -> dict:
    return {
        "customer_id": customer, "meter_api_name": meter, "meter_value": D(value),
        "event_time": t(time) if isinstance(time, str) else time, "unique_id": uid,
        "dimensions": dict(dims or {}), "is_cancel": cancel,
    }


def events_frame(rows: list[dict]) -> pl.DataFrame:
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        if r.get("unique_id", "auto") == "auto" or "unique_id" not in r:
            r["unique_id"] = f"e{i}"
        out.append(r)
    return pl.DataFrame(out, schema=EVENT_SCHEMA)


def evs(spec: list, *, customer="c1", meter="m") -> pl.DataFrame:
    """[time, value] or [time, value, dims] triples (the cases' notation) -> events frame."""
    rows = []
    for i, e in enumerate(spec):
        rows.append(event(e[0], e[1], e[2] if len(e) > 2 else None, customer=customer, meter=meter, uid=f"u{i}"))
    return events_frame(rows)


def windows_frame(pairs, customer="c1") -> pl.DataFrame:
    rows = [(customer, t(s) if isinstance(s, str) else s, t(e) if isinstance(e, str) else e) for s, e in pairs]
    return pl.DataFrame(rows, schema=WINDOW_SCHEMA, orient="row")


def month(ym: str) -> tuple[dt.datetime, dt.datetime]:
    y, m = map(int, ym.split("-"))
    start = dt.datetime(y, m, 1, tzinfo=UTC)
    end = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
    return start, end


def values(df: pl.DataFrame) -> list[Decimal]:
    return df["value"].to_list()
