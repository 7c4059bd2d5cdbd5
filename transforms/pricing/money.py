"""Exact money arithmetic: the decimal context of the pricing room and the one rounding rule.

Every amount is a Python `Decimal`. Intermediate results are kept unrounded (a context of 100
significant digits, so a product of two Decimal(38, 9) numbers never loses a digit), and each
line amount is rounded once, half-up, to the currency's minor units by `round_money`.
"""

from __future__ import annotations

from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

ZERO = Decimal(0)

#: The context every pricing computation runs in: wide enough to be exact for sums and
#: products of Decimal(38, 9) values; divisions (package pro rata, fee proration) are the only
#: inexact steps, at 100 significant digits, before the single rounding of the line.
CONTEXT = Context(prec=100, rounding=ROUND_HALF_UP, Emax=999999, Emin=-999999,
                  traps=[InvalidOperation, DivisionByZero, Overflow])

_QUANTA = {n: Decimal(1).scaleb(-n) for n in range(0, 10)}


def exact():
    """`with exact(): ...` runs a block in the pricing room's decimal context."""
    return localcontext(CONTEXT)


def round_money(amount: Decimal, minor_units: int) -> Decimal:
    """`amount` rounded half-up (ties away from zero) to `minor_units` decimal places.

    The only rounding function of the project: 2.675 → 2.68, -2.675 → -2.68, 0.5 JPY → 1.
    """
    q = _QUANTA.get(minor_units)
    if q is None:
        q = Decimal(1).scaleb(-minor_units)
    return amount.quantize(q, rounding=ROUND_HALF_UP, context=CONTEXT)


def billable_quantity(quantity: Decimal, included_units: Decimal) -> Decimal:
    """SPEC §5.1: q = max(quantity − included_units, 0); a negative quantity prices as 0."""
    if quantity <= included_units:
        return ZERO
    return quantity - included_units
