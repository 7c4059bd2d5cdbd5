"""Prepaid credits and rewards (SPEC §5.4 step 3, rewards paragraph).

A grant pays what it can of an invoice's remaining prepayable amount (a restricted grant only
of its items' lines). Grants are drawn in burn-down order: `priority` (lower first), then
`expires_at` (sooner first, none last), then `effective_at`, then `grant_id`
(OpenMeter's order). A grant is usable on an invoice when it is in effect at some instant of the
period: `effective_at < period_end` and (`expires_at` is none or `expires_at > period_start`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Iterable, Optional

from catalog.config import Credit, Reward, to_utc
from transforms.pricing.money import ZERO, round_money

_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Grant:
    """A credit grant with its instants in UTC (from the catalogue, or earned as a reward)."""

    grant_id: str
    customer_id: str
    currency: str
    amount: Decimal
    effective_at: dt.datetime
    expires_at: Optional[dt.datetime] = None
    priority: int = 10
    product_item_ids: Optional[frozenset[str]] = None

    def in_effect(self, start: dt.datetime, end: dt.datetime) -> bool:
        """In effect at some instant of [start, end)."""
        return self.effective_at < end and (self.expires_at is None or self.expires_at > start)

    def pays_item(self, product_item_id: Optional[str]) -> bool:
        return self.product_item_ids is None or product_item_id in self.product_item_ids


def grant_from_credit(credit: Credit, tz: str = "UTC", minor_units: Optional[int] = None) -> Grant:
    """A catalogue credit as a Grant (dates are midnight in the customer's zone `tz`).

    With `minor_units`, the amount is rounded half-up to the currency's minor units (once): a
    balance that no invoice line could ever use (0.004 USD) is not carried in the ledger.
    """
    return Grant(
        grant_id=credit.grant_id,
        customer_id=credit.customer_id,
        currency=credit.currency,
        amount=credit.amount if minor_units is None else round_money(credit.amount, minor_units),
        effective_at=to_utc(credit.effective_at, tz),
        expires_at=to_utc(credit.expires_at, tz) if credit.expires_at is not None else None,
        priority=credit.priority,
        product_item_ids=frozenset(credit.product_item_ids) if credit.product_item_ids is not None else None,
    )


def burn_down_key(g: Grant) -> tuple:
    return (g.priority, g.expires_at is None, g.expires_at or _FAR_FUTURE, g.effective_at, g.grant_id)


def burn_down_order(grants: Iterable[Grant]) -> list[Grant]:
    """Grants in the order they are drawn: priority, expires_at (none last), effective_at, grant_id."""
    return sorted(grants, key=burn_down_key)


def reward_earned(quantity: Decimal, reward: Reward, minor_units: int) -> Decimal:
    """floor(period quantity / per_units) × credit, rounded to the currency (Amberflo: every 5
    API calls earn $1 → 23 calls earn 4.00)."""
    if quantity <= 0:
        return round_money(ZERO, minor_units)
    n = (quantity / reward.per_units).to_integral_value(rounding=ROUND_FLOOR)
    return round_money(n * reward.credit, minor_units)


def reward_grant_id(reward_id: str, customer_id: str, period_start: dt.datetime) -> str:
    return f"reward:{reward_id}:{customer_id}:{period_start.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}"


def reward_grant(reward: Reward, customer_id: str, currency: str, minor_units: int,
                 period_start: dt.datetime, period_end: dt.datetime, quantity: Decimal) -> Optional[Grant]:
    """The credit a reward earns over one period: effective at the period end, expiring
    `expires_after_days` later if set; None when nothing is earned."""
    amount = reward_earned(quantity, reward, minor_units)
    if amount <= 0:
        return None
    expires = period_end + dt.timedelta(days=reward.expires_after_days) if reward.expires_after_days else None
    return Grant(grant_id=reward_grant_id(reward.reward_id, customer_id, period_start),
                 customer_id=customer_id, currency=currency, amount=amount,
                 effective_at=period_end, expires_at=expires)
