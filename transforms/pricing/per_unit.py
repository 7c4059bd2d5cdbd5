"""Per-unit price model (SPEC §5.1).

    amount = q × unit_price

One breakdown entry: tier 1 with all q units.
"""

from __future__ import annotations

from decimal import Decimal

from transforms.pricing.money import ZERO


def price_per_unit(q: Decimal, unit_price: Decimal) -> tuple[Decimal, Decimal, list[tuple]]:
    """(amount, unit_price, tiers) for `q` billable units at `unit_price` each."""
    amount = q * unit_price
    return amount, unit_price, [(1, q, unit_price, ZERO, amount)]
