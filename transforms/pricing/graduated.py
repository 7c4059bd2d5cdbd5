"""Graduated (tiered) price model (SPEC §5.1), Lago's `graduated` / Stripe's "graduated".

With tier i covering (up_to_{i−1}, up_to_i] (up_to_0 = 0, the last up_to = ∞):

    amount = Σ_i (min(q, up_to_i) − up_to_{i−1})⁺ × unit_price_i
           + Σ_{i : i = 1 or q > up_to_{i−1}} flat_fee_i

Each tier prices the units that fall in it, plus the flat fee of every tier that q enters; the
first tier's flat fee is charged even when q = 0. Stripe: tiers ≤5 at 7, ≤10 at 6.5, then 6 →
5 units 35, 6 units 41.5, 25 units 157.5.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from catalog.config import Tier
from transforms.pricing.money import ZERO


def price_graduated(q: Decimal, tiers: Sequence[Tier]) -> tuple[Decimal, None, list[tuple]]:
    """(amount, None, tiers) — the breakdown lists every tier q enters (tier 1 always)."""
    total = ZERO
    out: list[tuple] = []
    lower = ZERO
    for i, t in enumerate(tiers, start=1):
        if i > 1 and q <= lower:
            break
        upper = t.up_to
        units = (q if upper is None or q < upper else upper) - lower
        if units < 0:
            units = ZERO
        amount = units * t.unit_price + t.flat_fee
        total += amount
        out.append((i, units, t.unit_price, t.flat_fee, amount))
        if upper is None:
            break
        lower = upper
    return total, None, out
