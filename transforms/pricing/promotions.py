"""Promotions (SPEC §5.4 step 2).

A promotion applies to the `periods` billing periods of the customer that start on or after its
`start` (null = every such period). Item-scoped promotions discount their item's lines first,
invoice-scoped ones then discount what remains. A percentage discount is `base × value / 100`, a
fixed one `value`; either is at most its base and at most `max_discount_per_period`, rounded
half-up once.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Sequence

from catalog.config import Promotion, to_utc
from transforms.pricing.money import ZERO, round_money

HUNDRED = Decimal(100)


def promotion_start(promotion: Promotion, tz: str = "UTC") -> dt.datetime:
    return to_utc(promotion.start, tz)


def promotion_applies(promotion: Promotion, period_start: dt.datetime,
                      customer_period_starts: Sequence[dt.datetime], tz: str = "UTC") -> bool:
    """Whether the period starting at `period_start` is one of the promotion's periods.

    `customer_period_starts` lists the starts of all of the customer's billing periods (any
    subscription); the promotion's periods are the first `periods` of them that start on or after
    its `start`.
    """
    start = promotion_start(promotion, tz)
    if period_start < start:
        return False
    if promotion.periods is None:
        return True
    eligible = sorted(s for s in set(customer_period_starts) | {period_start} if s >= start)
    return eligible.index(period_start) < promotion.periods


def promotion_discount(promotion: Promotion, base: Decimal, minor_units: int) -> Decimal:
    """The discount on `base` (an exact sum of rounded lines), rounded half-up once."""
    if base <= 0:
        return round_money(ZERO, minor_units)
    if promotion.type == "percentage":
        raw = base * promotion.value / HUNDRED
    else:
        raw = promotion.value
    if raw > base:
        raw = base
    if promotion.max_discount_per_period is not None and raw > promotion.max_discount_per_period:
        raw = promotion.max_discount_per_period
    return round_money(raw, minor_units)
