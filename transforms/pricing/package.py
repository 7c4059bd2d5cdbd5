"""Package price model (SPEC §5.1), Lago's `package`.

    amount = ceil(q / package_size) × package_price      (whole packages)
    amount = q / package_size × package_price            (allow_partial: pro rata)

Lago: packages of 10 at 100, 121 units → 13 packages → 1300.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from transforms.pricing.money import ZERO


def price_package(q: Decimal, package_size: Decimal, package_price: Decimal,
                  allow_partial: bool = False) -> tuple[Decimal, None, list[tuple]]:
    """(amount, None, [(1, packages, package_price, 0, amount)]) — the breakdown counts packages."""
    packages = q / package_size
    if not allow_partial:
        packages = packages.to_integral_value(rounding=ROUND_CEILING)
    amount = packages * package_price
    return amount, None, [(1, packages, package_price, ZERO, amount)]
