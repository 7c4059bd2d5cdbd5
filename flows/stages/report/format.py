"""How amounts, quantities and periods read on a page."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from transforms.pricing.periods import local_days

MINUS = "\u2212"


def money(v: Decimal | None, minor: int) -> str:
    """An exact amount with at least the currency's minor units (more only if it has them)."""
    if v is None:
        return ""
    v = Decimal(v)
    exp = v.normalize().as_tuple().exponent
    places = max(minor, -exp if isinstance(exp, int) and exp < 0 else 0)
    text = f"{abs(v):,.{places}f}"
    return (MINUS + text) if v < 0 else text


def taken_off(v: Decimal | None, minor: int) -> str:
    """An amount taken off the subtotal (stored positive): shown with a minus unless zero."""
    if v is None or v == 0:
        return money(Decimal(0), minor)
    return MINUS + money(v, minor)


def quantity(v) -> str:
    if v is None:
        return ""
    if isinstance(v, Decimal):
        n = v.normalize()
        exp = n.as_tuple().exponent
        return f"{n:,.{-exp if isinstance(exp, int) and exp < 0 else 0}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def dims_of(d) -> dict[str, str]:
    if d is None:
        return {}
    if isinstance(d, dict):
        return d
    return {e["key"]: e["value"] for e in d}  # a map read as key/value entries


def day_text(d: dt.date) -> str:
    return f"{d.day} {d:%b %Y}"


def period_text(start: dt.datetime, end: dt.datetime, tz: str) -> str:
    a, b = local_days(start, end, tz)
    if a == b:
        return day_text(a)
    if a.year == b.year:
        return f"{a.day} {a:%b} – {day_text(b)}"
    return f"{day_text(a)} – {day_text(b)}"


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def invoice_filename(invoice_id: str) -> str:
    return f"invoice-{_safe(invoice_id)}.html"
