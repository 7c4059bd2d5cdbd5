"""The meter types of SPEC §4 and their families: the one table that every module reads.

Adding a meter type is one row here plus its evaluator (transforms/metering); every family set
below follows from the rows. Each family has one meaning:

- valueless      the value ignores meter_value (count, unique_count): events without one count too;
                 the others ignore events without a meter_value
- stateful       the value depends on every earlier event of the series (a level carried in, §4)
- additive       the value over a window is the sum of its parts' values (§4: sum, count; the
                 usage query's group total is the sum of its buckets)
- mergeable      the value over whole UTC hours follows from the hours' partial aggregates of
                 usage_hourly (Σ event_count, Σ value_sum, min value_min, max value_max): the
                 DuckDB hourly path and billing's buckets read these types from partials
- extrapolated   a draft invoice's usage line is projected to the period end as quantity × full
                 period / elapsed time (§10.2); the others keep their current quantity
- reads_as       how the value over a period reads in a report ("total 1,234 calls in this period")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MeterFamily:
    valueless: bool = False
    stateful: bool = False
    additive: bool = False
    mergeable: bool = False
    extrapolated: bool = False
    reads_as: str = "total"


METER_TYPES: dict[str, MeterFamily] = {
    "sum": MeterFamily(additive=True, mergeable=True, extrapolated=True),
    "count": MeterFamily(valueless=True, additive=True, mergeable=True, extrapolated=True),
    "max": MeterFamily(mergeable=True, reads_as="peak"),
    "min": MeterFamily(mergeable=True, reads_as="lowest"),
    "avg": MeterFamily(reads_as="average"),
    "latest": MeterFamily(reads_as="latest"),
    "unique_count": MeterFamily(valueless=True, reads_as="distinct"),
    "running_total": MeterFamily(stateful=True, reads_as="level"),
    "high_watermark": MeterFamily(stateful=True, reads_as="peak"),
    "event_duration": MeterFamily(stateful=True),
    "weighted_sum": MeterFamily(stateful=True, reads_as="average"),
}

MeterType = Literal[tuple(METER_TYPES)]  # the catalogue's `type` field (catalog/config.py Meter)


def _types(flag: str, value: bool = True) -> frozenset[str]:
    return frozenset(t for t, f in METER_TYPES.items() if getattr(f, flag) is value)


VALUELESS_TYPES = _types("valueless")
STATEFUL_TYPES = _types("stateful")
EVENT_SET_TYPES = _types("stateful", False)  # evaluated over the window's events alone
ADDITIVE_TYPES = _types("additive")
MERGEABLE_TYPES = _types("mergeable")
EXTRAPOLATED_TYPES = _types("extrapolated")

# how a meter the catalogue does not know is measured (hourly usage, billing's unbilled usage)
UNKNOWN_METER_TYPE = "sum"


def sql_list(types: frozenset[str]) -> str:
    """A set of types as a SQL list literal, in the table's order: ('sum', 'count')."""
    return "(" + ", ".join(f"'{t}'" for t in METER_TYPES if t in types) + ")"
