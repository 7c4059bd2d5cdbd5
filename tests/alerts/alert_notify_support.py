"""Shared fixtures' building blocks for the delivery tests (a firing, an alert, a clock)."""

import datetime as dt
import itertools
from decimal import Decimal as D

import polars as pl

from catalog.config import Alert, Customer, Settings
from catalog.schemas import SCHEMAS

UTC = dt.timezone.utc
WINDOW_START = dt.datetime(2026, 1, 5, tzinfo=UTC)
FIRED_AT = dt.datetime(2026, 1, 7, 12, tzinfo=UTC)

CUSTOMERS = {
    "globex": Customer(customer_id="globex", customer_name='Globex "Corp"', timezone="UTC"),
    "acme": Customer(customer_id="acme", customer_name="Acme <Rockets> & Co", timezone="UTC"),
}


def firings(*customers: str, alert_id: str = "compute-heavy") -> pl.DataFrame:
    rows = [
        {
            "alert_id": alert_id, "customer_id": c, "window_start": WINDOW_START,
            "window_end": WINDOW_START + dt.timedelta(days=7), "metric": "usage",
            "current_value": D("1000.5"), "previous_value": D("900"), "threshold": D(1000),
            "condition": "greater_than", "message": f"{c}: compute_hours 1000.5 > 1000 in week of 2026-01-05",
            "fired_at": FIRED_AT,
        }
        for c in customers
    ]
    return pl.DataFrame(rows, schema=SCHEMAS["alerts_fired"])


def alert(channels: list[dict], alert_id: str = "compute-heavy") -> Alert:
    return Alert(alert_id=alert_id, name="Compute over 1000 hours in a week", metric="usage",
                 meter_api_name="compute_hours", window="week", condition="greater_than",
                 threshold=1000, channels=channels)


def clock():
    """A fake clock: one second later at every call."""
    ticks = itertools.count()
    return lambda: FIRED_AT + dt.timedelta(seconds=next(ticks))


def no_sleep(seconds: float) -> None:
    pass


SETTINGS = Settings(max_delivery_attempts=5)
