"""Volume price model (SPEC §5.1), Lago's `volume` / Stripe's "volume".

    k      = the first tier with q ≤ up_to_k (the last tier has no limit; q = 0 → tier 1)
    amount = q × unit_price_k + flat_fee_k

All units are priced at one tier, so the amount can fall when q crosses a boundary (a "volume
cliff": 15 units at 10 = 150, 16 units at 5 = 80).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from catalog.config import Tier


def price_volume(q: Decimal, tiers: Sequence[Tier]) -> tuple[Decimal, Decimal, list[tuple]]:
    """(amount, the chosen tier's unit price, [that tier])."""
    for i, t in enumerate(tiers, start=1):
        if t.up_to is None or q <= t.up_to:
            amount = q * t.unit_price + t.flat_fee
            return amount, t.unit_price, [(i, q, t.unit_price, t.flat_fee, amount)]
    raise ValueError("volume tiers must end with an unlimited tier (up_to: null)")
