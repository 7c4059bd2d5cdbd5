"""The percentage change from a previous value (SPEC §4), the one rule for the usage query's
`percent_from_previous` and the alerts' percent conditions and messages (§6).

    (cur − prev) / prev × 100   100 when prev = 0 < cur, −100 when prev = 0 > cur, 0 when both are 0

The formula is taken as written for a negative previous value too: −10 → −5 is
(−5 − −10) / −10 × 100 = −50. The result is an exact Fraction; callers round it once for display
(the usage query to the nearest float, alert messages to 0.01) and compare it exactly.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction


def percent_change(prev: Decimal | int, cur: Decimal | int) -> Fraction:
    """(cur − prev) / prev × 100 exactly; 100 when prev = 0 < cur, −100 when prev = 0 > cur, 0 when both are 0."""
    if prev == 0:
        return Fraction(0 if cur == 0 else (100 if cur > 0 else -100))
    return (Fraction(cur) - Fraction(prev)) / Fraction(prev) * 100


def percent_change_float(prev: Decimal | int, cur: Decimal | int) -> float:
    """`percent_change` rounded once to the nearest float, from the values' integer ratios
    (int / int rounds once, as Fraction's float does, without building a Fraction)."""
    if prev == 0:
        return 0.0 if cur == 0 else (100.0 if cur > 0 else -100.0)
    pn, pd = prev.as_integer_ratio()
    cn, cd = cur.as_integer_ratio()
    return (cn * pd - pn * cd) * 100 / (cd * pn)
