"""Billing periods (SPEC §5.2): anchored at the subscription start, cut in the customer's zone.

Period k of a subscription starting at S with billing period P is [S + k·P, S + (k+1)·P) in the
customer's local wall clock (so a monthly period is a calendar month of the customer, whatever
the DST offset). Month and year steps keep the anchor day and clamp to short months, always
counted from the anchor (Jan 31 → Feb 28 → Mar 31 → Apr 30), never from the previous clamped date.
A subscription `end` cuts its last period short; `nominal_end` keeps the full period's end
(fee proration compares the two).
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Optional
from zoneinfo import ZoneInfo

import polars as pl

from catalog.config import BillingPeriod, Catalog, Instant, Subscription, to_utc
from catalog.schemas import TS

UTC = dt.timezone.utc
DEFAULT_SUBSCRIPTION_PREFIX = "default:"


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.datetime        # UTC
    end: dt.datetime          # UTC, cut short by the subscription end
    nominal_end: dt.datetime  # UTC, the full period's end
    index: int                # 0 for the subscription's first period


@dataclass(frozen=True, slots=True)
class CustomerPeriod:
    customer_id: str
    subscription_id: str
    plan_id: str
    currency: str
    start: dt.datetime
    end: dt.datetime
    nominal_end: dt.datetime
    index: int


CUSTOMER_PERIOD_SCHEMA = {
    "customer_id": pl.String, "subscription_id": pl.String, "plan_id": pl.String,
    "currency": pl.String, "start": TS, "end": TS, "nominal_end": TS, "index": pl.Int32,
}


def _utc(value: Instant, tz: str) -> dt.datetime:
    """An aware datetime as UTC; a date or naive datetime is read in `tz` (catalogue rule)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return to_utc(value, tz)


def _add_months(wall: dt.datetime, months: int) -> dt.datetime:
    """`wall` moved by whole months, the day clamped to the target month's length."""
    m0 = wall.month - 1 + months
    year, month = wall.year + m0 // 12, m0 % 12 + 1
    day = min(wall.day, calendar.monthrange(year, month)[1])
    return wall.replace(year=year, month=month, day=day)


def _step(anchor: dt.datetime, bp: BillingPeriod, k: int) -> dt.datetime:
    """The local wall-clock start of period k (always computed from the anchor)."""
    n = k * bp.count
    if bp.interval == "day":
        return anchor + dt.timedelta(days=n)
    if bp.interval == "week":
        return anchor + dt.timedelta(days=7 * n)
    if bp.interval == "month":
        return _add_months(anchor, n)
    if bp.interval == "year":
        return _add_months(anchor, 12 * n)
    raise ValueError(f"unknown billing interval {bp.interval!r}")


def billing_periods(start: dt.datetime, end: Optional[dt.datetime], bp: BillingPeriod, tz: str,
                    until: dt.datetime) -> list[Period]:
    """Every period of a subscription [start, end) that starts before `until`.

    Instants are aware datetimes (returned in UTC); a date or a naive datetime is read in the
    customer's zone `tz`, like a catalogue value.
    """
    zone = ZoneInfo(tz)
    start = _utc(start, tz)
    end = _utc(end, tz) if end is not None else None
    until = _utc(until, tz)
    anchor = start.astimezone(zone).replace(tzinfo=None)
    out: list[Period] = []
    k = 0
    s = start
    while s < until and (end is None or s < end):
        nominal = _step(anchor, bp, k + 1).replace(tzinfo=zone).astimezone(UTC)
        out.append(Period(start=s, end=nominal if end is None or nominal < end else end,
                          nominal_end=nominal, index=k))
        k += 1
        s = nominal
    return out


# ------------------------------------------------------------------ per customer

_INDEX_CACHE: list[tuple[Catalog, dict[str, list[Subscription]]]] = []


def _subscriptions_of(catalog: Catalog, customer_id: str) -> list[Subscription]:
    """The customer's subscriptions (an index per catalogue, built once: O(1) per customer)."""
    for cat, index in _INDEX_CACHE:
        if cat is catalog:
            return index.get(customer_id, [])
    index: dict[str, list[Subscription]] = {}
    for s in catalog.subscriptions.values():
        index.setdefault(s.customer_id, []).append(s)
    _INDEX_CACHE.insert(0, (catalog, index))
    del _INDEX_CACHE[4:]
    return index.get(customer_id, [])


def default_subscription(catalog: Catalog, customer_id: str,
                         first_event_time: Optional[dt.datetime]) -> Optional[Subscription]:
    """SPEC §5.2's default plan as a synthetic subscription "default:<customer_id>", or None.

    Only when `settings.default_plan_id` is set, the customer is known, and no subscription is in
    force at its first event: it starts at the start of that event's day in the customer's zone
    (or where an earlier subscription ended, if later) and ends where the next subscription starts.
    """
    plan_id = catalog.settings.default_plan_id
    if not plan_id or first_event_time is None or customer_id not in catalog.customers:
        return None
    tz = catalog.timezone(customer_id)
    t = _utc(first_event_time, tz)
    starts_after: list[dt.datetime] = []
    ended_before: list[dt.datetime] = []
    for s in _subscriptions_of(catalog, customer_id):
        s0 = to_utc(s.start, tz)
        s1 = to_utc(s.end, tz) if s.end is not None else None
        if s0 <= t and (s1 is None or t < s1):
            return None  # a subscription is in force
        if s0 > t:
            starts_after.append(s0)
        elif s1 is not None:
            ended_before.append(s1)
    local = t.astimezone(ZoneInfo(tz))
    start = to_utc(local.date(), tz)
    if ended_before:
        start = max(start, max(ended_before))
    end = min(starts_after) if starts_after else None
    return Subscription(subscription_id=DEFAULT_SUBSCRIPTION_PREFIX + customer_id,
                        customer_id=customer_id, plan_id=plan_id, start=start, end=end)


def customer_periods(catalog: Catalog, customer_id: str, until: dt.datetime,
                     first_event_time: Optional[dt.datetime] = None) -> list[CustomerPeriod]:
    """All billing periods of one customer that start before `until`, in time order, over all
    of its subscriptions (and the default plan, see `default_subscription`).

    An unknown customer has none (SPEC §2: not billed until the catalogue defines it).
    """
    if customer_id not in catalog.customers:
        return []
    tz = catalog.timezone(customer_id)
    subs = list(_subscriptions_of(catalog, customer_id))
    d = default_subscription(catalog, customer_id, first_event_time)
    if d is not None:
        subs.append(d)
    out: list[CustomerPeriod] = []
    for s in subs:
        plan = catalog.plans[s.plan_id]
        for p in billing_periods(to_utc(s.start, tz), to_utc(s.end, tz) if s.end is not None else None,
                                 plan.billing_period, tz, until):
            out.append(CustomerPeriod(customer_id, s.subscription_id, s.plan_id, plan.currency,
                                      p.start, p.end, p.nominal_end, p.index))
    out.sort(key=lambda p: p.start)
    return out


def all_customer_periods(catalog: Catalog, until: dt.datetime,
                         first_event_times: Optional[dict[str, dt.datetime]] = None) -> list[CustomerPeriod]:
    """`customer_periods` of every catalogue customer (and the default plan for those in
    `first_event_times`), ordered by customer and start."""
    fet = first_event_times or {}
    out: list[CustomerPeriod] = []
    for cid in sorted(catalog.customers):
        out.extend(customer_periods(catalog, cid, until, fet.get(cid)))
    return out


def periods_frame(periods: Iterable[CustomerPeriod]) -> pl.DataFrame:
    """Customer periods as a frame (columns of CustomerPeriod; instants UTC)."""
    rows = list(periods)
    if not rows:
        return pl.DataFrame(schema=CUSTOMER_PERIOD_SCHEMA)
    cols = {name: [getattr(p, name) for p in rows] for name in CUSTOMER_PERIOD_SCHEMA}
    return pl.DataFrame(cols).cast(CUSTOMER_PERIOD_SCHEMA)


def periods_from_frame(df: pl.DataFrame) -> list[CustomerPeriod]:
    """The inverse of `periods_frame`."""
    missing = set(CUSTOMER_PERIOD_SCHEMA) - set(df.columns)
    if missing:
        raise ValueError(f"periods: missing columns {sorted(missing)}")
    df = df.select(list(CUSTOMER_PERIOD_SCHEMA)).cast(CUSTOMER_PERIOD_SCHEMA)
    return [CustomerPeriod(*row) for row in df.iter_rows()]


def local_days(start: dt.datetime, end: dt.datetime, tz: str) -> tuple[dt.date, dt.date]:
    """A period [start, end) as the customer sees it: its first and last local day in `tz` (the
    last is the day of the instant just before `end`). Every display of a period (terminal
    tables, HTML pages, artifacts) uses this rule."""
    z = ZoneInfo(tz)
    return start.astimezone(z).date(), (end - dt.timedelta(microseconds=1)).astimezone(z).date()


def with_local_days(df: pl.DataFrame, timezones: dict[str, str], start: str = "period_start",
                    end: str = "period_end", customer: str = "customer_id") -> pl.DataFrame:
    """`local_days` for every row of a frame, vectorised (one pass per time zone): adds the Date
    columns `local_first` and `local_last`. `timezones` maps customer ids to zones (others: UTC)."""
    if df.height == 0:
        return df.with_columns(pl.lit(None, dtype=pl.Date).alias("local_first"),
                               pl.lit(None, dtype=pl.Date).alias("local_last"))
    zones = pl.DataFrame({customer: list(timezones), "_tz": list(timezones.values())},
                         schema={customer: pl.String, "_tz": pl.String})
    tagged = (df.with_row_index("_row").join(zones, on=customer, how="left")
              .with_columns(pl.col("_tz").fill_null("UTC")))
    parts = []
    for (tz,), part in tagged.partition_by("_tz", as_dict=True).items():
        parts.append(part.select(
            "_row",
            pl.col(start).dt.convert_time_zone(tz).dt.date().alias("local_first"),
            (pl.col(end) - pl.duration(microseconds=1)).dt.convert_time_zone(tz).dt.date().alias("local_last")))
    days = pl.concat(parts).sort("_row")
    return df.with_columns(days["local_first"], days["local_last"])
