"""Rating one line: a period quantity and a price → an unrounded amount and its explanation."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional

from catalog.config import Price
from transforms.pricing.graduated import price_graduated
from transforms.pricing.money import ZERO, billable_quantity, exact
from transforms.pricing.package import price_package
from transforms.pricing.per_unit import price_per_unit
from transforms.pricing.volume import price_volume

TIER_FIELDS = ("tier", "quantity", "unit_price", "flat_fee", "amount")


@dataclass(frozen=True, slots=True)
class Rated:
    """One rated line, unrounded.

    amount          the usage amount after the price's `maximum` cap (before any minimum)
    unit_price      the unit price when one applies to every unit (per_unit, volume), else None
    tiers           the breakdown: dicts tier, quantity, unit_price, flat_fee, amount
                    (uncapped; for package, quantity counts packages)
    minimum_amount  the `minimum` true-up, max(minimum − amount, 0)
    quantity        the billable quantity q (after included units)
    uncapped_amount the amount before `maximum`
    """

    amount: Decimal
    unit_price: Optional[Decimal]
    tiers: list[dict] = field(default_factory=list)
    minimum_amount: Decimal = ZERO
    quantity: Decimal = ZERO
    uncapped_amount: Decimal = ZERO

    @property
    def capped(self) -> bool:
        return self.amount != self.uncapped_amount


def price_amount(q: Decimal, price: Price) -> tuple[Decimal, Optional[Decimal], list[tuple]]:
    """The model's formula for `q` billable units: (amount, unit_price, tier tuples)."""
    m = price.model
    if m == "per_unit":
        return price_per_unit(q, price.unit_price)
    if m == "graduated":
        return price_graduated(q, price.tiers)
    if m == "volume":
        return price_volume(q, price.tiers)
    if m == "package":
        return price_package(q, price.package_size, price.package_price, price.allow_partial)
    raise ValueError(f"unknown price model {m!r}")


def rate_tuple(quantity: Decimal, price: Price) -> tuple[Decimal, Optional[Decimal], list[tuple], Decimal, Decimal, Decimal]:
    """`rate` without the dataclass: (amount, unit_price, tier tuples, minimum_amount, q, uncapped).

    Must run inside `exact()`. Used by the invoice loop, which caches the result per price and
    quantity.
    """
    if price.dimensions is not None:
        raise ValueError("a price with `dimensions` is rated per combination: rate the combination's price")
    q = billable_quantity(quantity, price.included_units)
    uncapped, unit_price, tiers = price_amount(q, price)
    amount = uncapped
    if price.maximum is not None and amount > price.maximum:
        amount = price.maximum
    minimum = ZERO
    if price.minimum is not None and price.minimum > amount:
        minimum = price.minimum - amount
    return amount, unit_price, tiers, minimum, q, uncapped


def rate(quantity: Decimal, price: Price) -> Rated:
    """Rate a period quantity with a (combination's) price, SPEC §5.1.

    q = max(quantity − included_units, 0) is priced by the model, capped at `maximum`; the
    `minimum` true-up is returned apart. Nothing is rounded here: round each line with
    `round_money` once.
    """
    with exact():
        amount, unit_price, tiers, minimum, q, uncapped = rate_tuple(Decimal(quantity), price)
    return Rated(
        amount=amount,
        unit_price=unit_price,
        tiers=[dict(zip(TIER_FIELDS, t)) for t in tiers],
        minimum_amount=minimum,
        quantity=q,
        uncapped_amount=uncapped,
    )


def resolve_price(price: Price, dimensions: dict[str, str] | None) -> Optional[Price]:
    """The price of one dimension combination: the first rate whose `match` equals the
    combination on the price's keys, else `default`, else None (unpriced usage).

    A price without `dimensions` is its own price for every combination.
    """
    dp = price.dimensions
    if dp is None:
        return price
    dims = dimensions or {}
    for r in dp.rates:
        if all(dims.get(k) == v for k, v in r.match.items()):
            return r.price
    return dp.default
