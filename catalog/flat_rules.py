"""The field rules of the flat tables (customers, subscriptions, credits), checked column by column.

Each field of catalog/flat.py's tables has a `Rule`: how a value is parsed, whether it may be
absent or null, and the checks it must pass, with the messages of the record models of
catalog/config.py. `check_column` applies a rule to a whole column, the distinct values once each.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import yaml

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


class _Bad(Exception):
    """A value a field does not take; `loc` is where inside the value (`.key`, `[0]`)."""

    def __init__(self, msg: str, loc: str = ""):
        super().__init__(msg)
        self.loc = loc


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad("Input should be a valid string")
    return v


def _instant(v: Any) -> dt.date | dt.datetime:
    """A date (midnight in the customer's time zone) or an instant (naive: in the customer's time zone)."""
    if isinstance(v, (dt.datetime, dt.date)):
        return v
    if isinstance(v, str):
        s = v.strip()
        try:
            if len(s) == 10:
                return dt.date.fromisoformat(s)
            return dt.datetime.fromisoformat(s)
        except ValueError:
            pass
    raise _Bad(f"not a date or an ISO-8601 instant: {v!r}")


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise _Bad("Input should be a valid integer")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v)
    raise _Bad("Input should be a valid integer")


def _str_map(v: Any) -> dict[str, str]:
    if isinstance(v, str):  # CSV: a JSON or YAML mapping
        try:
            v = json.loads(v)
        except ValueError:
            try:
                v = yaml.load(v, Loader=yaml.CSafeLoader)
            except yaml.YAMLError:
                raise _Bad(f"not a mapping: {v!r}") from None
    if isinstance(v, list) and all(isinstance(e, dict) and set(e) == {"key", "value"} for e in v):
        v = {e["key"]: e["value"] for e in v}  # a Parquet map read as key/value pairs
    if not isinstance(v, dict):
        raise _Bad("Input should be a valid dictionary")
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, str):
            raise _Bad("Input should be a valid string", f".{k}")
    return v


def _str_list(v: Any) -> list[str]:
    if isinstance(v, str):  # CSV: ids separated by '|'
        return [s for s in v.split("|") if s]
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list):
        raise _Bad("Input should be a valid list")
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise _Bad("Input should be a valid string", f"[{i}]")
    return v


def _money(v: Any) -> Decimal:
    from catalog.config import _at_most_9_places, _to_decimal

    try:
        d = _at_most_9_places(_to_decimal(v))
    except ValueError as e:
        raise _Bad(str(e)) from None
    if not isinstance(d, Decimal):
        raise _Bad("Decimal input should be an integer, float, string or Decimal object")
    return d


@dataclass(frozen=True)
class Rule:
    """One field: how a value is parsed, whether it may be absent, its default, and extra checks."""
    parse: Callable[[Any], Any]
    required: bool = True
    default: Any = MISSING          # an absent optional field: MISSING = the model's default
    nullable: bool = False          # an explicit null is allowed (and kept as None)
    checks: tuple[Callable[[Any], str | None], ...] = ()
    distinct: bool = True           # parse each distinct value once (hashable values)


def _length(lo: int, hi: int) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        if len(v) < lo:
            return f"String should have at least {lo} character{'s' if lo != 1 else ''}"
        if len(v) > hi:
            return f"String should have at most {hi} characters"
        return None
    return check


def _known_zone(v: str) -> str | None:
    from catalog.config import timezone_problem

    return timezone_problem(v)


def _not_negative(v: Decimal) -> str | None:
    return "must be ≥ 0" if v < 0 else None


TEXT = Rule(_text)
OPTIONAL_TEXT = Rule(_text, required=False, nullable=True)

RULES: dict[str, dict[str, Rule]] = {
    "customers": {
        "customer_id": Rule(_text, checks=(_length(1, 200),)),
        "customer_name": TEXT,
        "email": OPTIONAL_TEXT,
        "timezone": Rule(_text, required=False, checks=(_known_zone,)),
        "traits": Rule(_str_map, required=False, distinct=False),
    },
    "subscriptions": {
        "subscription_id": TEXT,
        "customer_id": TEXT,
        "plan_id": TEXT,
        "start": Rule(_instant),
        "end": Rule(_instant, required=False, nullable=True),
    },
    "credits": {
        "grant_id": TEXT,
        "customer_id": TEXT,
        "amount": Rule(_money, checks=(_not_negative,)),
        "currency": TEXT,
        "effective_at": Rule(_instant),
        "expires_at": Rule(_instant, required=False, nullable=True),
        "priority": Rule(_int, required=False),
        "product_item_ids": Rule(_str_list, required=False, nullable=True, distinct=False),
    },
}


_KEYABLE = (str, int, float, bool, Decimal, dt.date, dt.datetime)


def check_column(rule: Rule, values: list) -> tuple[list, dict[int, tuple[str, str]]]:
    """(parsed values, {record index: (location inside the value, message)}) for one field."""
    bad: dict[int, tuple[str, str]] = {}
    if rule.parse is _text and set(map(type, values)) == {str}:  # the common case: text in every record
        for c in rule.checks:
            for v, msg in {v: c(v) for v in set(values)}.items():
                if msg:
                    bad.update((i, ("", msg)) for i, x in enumerate(values) if x == v)
        return values, bad
    out: list = [MISSING] * len(values)
    cache: dict[Any, tuple[Any, tuple[str, str] | None]] = {}

    def one(v: Any) -> tuple[Any, tuple[str, str] | None]:
        try:
            p = rule.parse(v)
        except _Bad as e:
            return MISSING, (e.loc, str(e))
        for c in rule.checks:
            msg = c(p)
            if msg:
                return MISSING, ("", msg)
        return p, None

    for i, v in enumerate(values):
        if v is MISSING:
            if rule.required:
                bad[i] = ("", "Field required")
            continue
        if v is None and rule.nullable:
            out[i] = None
            continue
        if rule.distinct and type(v) in _KEYABLE:
            key = v if type(v) is str else (type(v), v)  # 1, 1.0 and True are equal keys
            r = cache.get(key)
            if r is None:
                r = cache[key] = one(v)
        else:
            r = one(v)
        if r[1] is None:
            out[i] = r[0]
        else:
            bad[i] = r[1]
    return out, bad
