"""The product catalogue (SPEC §3): the declarative models every catalogue file is validated into.

Typed, frozen pydantic models, one per table, and the `Catalog` that holds them. Loading the
folder's files into them (collecting every problem): catalog/load.py; references between tables:
catalog/checks.py; meter types and their families: catalog/meter_types.py.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    PrivateAttr,
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from catalog.meter_types import STATEFUL_TYPES, VALUELESS_TYPES, MeterType  # noqa: F401  (also imported from here)

# ---------------------------------------------------------------- value types


def _to_decimal(v: Any) -> Any:
    """Money and quantities: exact decimals. A YAML float is read through its shortest repr."""
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be finite")
        return Decimal(repr(v))
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, str):
        try:
            d = Decimal(v.strip())
        except Exception:
            raise ValueError(f"not a decimal number: {v!r}") from None
        if not d.is_finite():
            raise ValueError("must be finite")
        return d
    return v


def _at_most_9_places(v: Decimal) -> Decimal:
    """Warehouse DECIMAL(38, 9) holds 9 fractional digits: more would be cut silently, so refuse."""
    if isinstance(v, Decimal) and v.as_tuple().exponent < -9 and v != v.quantize(Decimal("1e-9")):
        raise ValueError(f"{v} has more than 9 decimal places")
    return v


def _not_negative(v: Decimal) -> Decimal:
    """Prices, tier prices, flat fees and fee amounts: a discount is a promotion, never a negative price."""
    if v < 0:
        raise ValueError("must not be negative (a discount is a promotion)")
    return v


Money = Annotated[Decimal, BeforeValidator(_to_decimal), AfterValidator(_at_most_9_places)]
Charge = Annotated[Money, AfterValidator(_not_negative)]  # an amount charged: never below 0
Instant = dt.datetime | dt.date  # a date means midnight in the customer's time zone

ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,199}$")
DIM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
METER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,49}$")

# ISO 4217 minor units for the currencies people bill in (others: declare them in currencies.yaml).
ISO_MINOR_UNITS: dict[str, int] = {
    **{c: 2 for c in (
        "USD EUR GBP CHF CAD AUD NZD SEK NOK DKK PLN CZK HUF RON BGN TRY ILS INR CNY HKD SGD "
        "TWD THB MYR PHP IDR BRL MXN ARS COP PEN ZAR EGP NGN KES MAD AED SAR QAR RUB UAH"
    ).split()},
    **{c: 0 for c in "JPY KRW VND CLP ISK UGX XAF XOF PYG RWF".split()},
    **{c: 3 for c in "BHD KWD OMR JOD TND IQD LYD".split()},
}


def timezone_problem(name: str) -> str | None:
    """None for an IANA time zone name, else the problem."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown IANA time zone {name!r}"
    return None


def to_utc(value: Instant, tz: str = "UTC") -> dt.datetime:
    """A catalogue instant in UTC: a date is midnight in `tz`, a naive datetime is in `tz`."""
    zone = ZoneInfo(tz)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return value.astimezone(dt.timezone.utc)
    return dt.datetime(value.year, value.month, value.day, tzinfo=zone).astimezone(dt.timezone.utc)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- tables


class Customer(Model):
    customer_id: str = Field(min_length=1, max_length=200)
    customer_name: str
    email: Optional[str] = None
    timezone: str = "UTC"
    traits: dict[str, str] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        problem = timezone_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class Meter(Model):
    meter_api_name: str
    label: str = ""
    type: MeterType
    unit: str = ""
    dimensions: list[str] = Field(default_factory=list)
    unique_dimensions: list[str] = Field(default_factory=list)
    resource_dimensions: list[str] = Field(default_factory=list)
    duration_unit: Literal["hour", "minute", "second", "millisecond"] = "hour"
    timeout_minutes: Optional[int] = Field(default=None, gt=0)
    reducer: Literal["end", "max"] = "end"

    @field_validator("meter_api_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not METER_NAME_RE.match(v):
            raise ValueError("must match ^[A-Za-z_][A-Za-z0-9_.-]{0,49}$ (at most 50 characters)")
        return v

    @field_validator("dimensions", "unique_dimensions", "resource_dimensions")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if not DIM_KEY_RE.match(k):
                raise ValueError(f"dimension key {k!r} must match ^[A-Za-z_][A-Za-z0-9_.-]{{0,63}}$")
        return v

    @model_validator(mode="after")
    def _per_type(self) -> "Meter":
        if self.type == "unique_count" and not self.unique_dimensions:
            raise ValueError("unique_count meters need unique_dimensions")
        if self.type == "event_duration" and not self.resource_dimensions:
            raise ValueError("event_duration meters need resource_dimensions")
        return self


def _filter_keys(v: dict[str, list[str]]) -> dict[str, list[str]]:
    for k, vals in v.items():
        if not DIM_KEY_RE.match(k):
            raise ValueError(f"filter key {k!r} is not a valid dimension key")
        if not vals:
            raise ValueError(f"filter {k!r} needs at least one value")
    return v


class ProductItem(Model):
    product_item_id: str
    name: str = ""
    meter_api_name: str
    filter: dict[str, list[str]] = Field(default_factory=dict)
    invoice_label: Optional[str] = None

    @field_validator("filter")
    @classmethod
    def _filter(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return _filter_keys(v)


class Tier(Model):
    up_to: Optional[Money] = None
    unit_price: Charge = Decimal(0)
    flat_fee: Charge = Decimal(0)


class DimensionRate(Model):
    match: dict[str, str]
    price: "Price"

    @model_validator(mode="after")
    def _flat(self) -> "DimensionRate":
        if self.price.dimensions is not None:
            raise ValueError("a rate's price cannot have dimensions of its own")
        return self


class DimensionPricing(Model):
    keys: list[str]
    rates: list[DimensionRate] = Field(default_factory=list)
    default: Optional["Price"] = None

    @model_validator(mode="after")
    def _match_keys(self) -> "DimensionPricing":
        for i, r in enumerate(self.rates):
            if set(r.match) != set(self.keys):
                raise ValueError(f"rates[{i}].match must name exactly the keys {self.keys}")
        return self


class Price(Model):
    model: Literal["per_unit", "graduated", "volume", "package"]
    unit_price: Optional[Charge] = None
    included_units: Money = Decimal(0)
    tiers: list[Tier] = Field(default_factory=list)
    package_size: Optional[Money] = None
    package_price: Optional[Charge] = None
    allow_partial: bool = False
    minimum: Optional[Charge] = None
    maximum: Optional[Charge] = None
    dimensions: Optional[DimensionPricing] = None

    @model_validator(mode="after")
    def _per_model(self) -> "Price":
        if self.included_units < 0:
            raise ValueError("included_units must be ≥ 0")
        if self.dimensions is not None:
            return self  # each combination carries its own price; the outer model is not used
        if self.model == "per_unit" and self.unit_price is None:
            raise ValueError("per_unit needs unit_price")
        if self.model in ("graduated", "volume"):
            if not self.tiers:
                raise ValueError(f"{self.model} needs tiers")
            prev = Decimal(0)
            for i, t in enumerate(self.tiers):
                last = i == len(self.tiers) - 1
                if t.up_to is None and not last:
                    raise ValueError(f"tiers[{i}].up_to: only the last tier may have no limit")
                if t.up_to is not None:
                    if t.up_to <= prev and not (i == 0 and t.up_to > 0):
                        raise ValueError(f"tiers[{i}].up_to must be greater than the previous tier's")
                    prev = t.up_to
            if self.tiers[-1].up_to is not None:
                raise ValueError("the last tier must have up_to: null")
        if self.model == "package":
            if self.package_size is None or self.package_size <= 0:
                raise ValueError("package needs package_size > 0")
            if self.package_price is None:
                raise ValueError("package needs package_price")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum must not exceed maximum")
        return self


DimensionRate.model_rebuild()
DimensionPricing.model_rebuild()


class PlanItem(Model):
    product_item_id: str
    price: Price


class Fee(Model):
    fee_id: str
    name: str = ""
    amount: Charge
    cadence: Literal["recurring", "one_time"] = "recurring"
    prorate: bool = False
    prepayable: bool = True


class BillingPeriod(Model):
    interval: Literal["day", "week", "month", "year"]
    count: int = Field(default=1, ge=1)


class Plan(Model):
    plan_id: str
    name: str = ""
    currency: str
    billing_period: BillingPeriod
    fees: list[Fee] = Field(default_factory=list)
    items: list[PlanItem] = Field(default_factory=list)


class Subscription(Model):
    subscription_id: str
    customer_id: str
    plan_id: str
    start: Instant
    end: Optional[Instant] = None


class Credit(Model):
    grant_id: str
    customer_id: str
    amount: Money
    currency: str
    effective_at: Instant
    expires_at: Optional[Instant] = None
    priority: int = 10
    product_item_ids: Optional[list[str]] = None

    @field_validator("amount")
    @classmethod
    def _pos(cls, v: Decimal) -> Decimal:
        if v < 0:
            raise ValueError("must be ≥ 0")
        return v


class Promotion(Model):
    promotion_id: str
    customer_id: str
    type: Literal["percentage", "fixed"]
    value: Money
    applies_to: str = "invoice"
    start: Instant
    periods: Optional[int] = Field(default=None, ge=1)
    max_discount_per_period: Optional[Money] = None

    @model_validator(mode="after")
    def _value(self) -> "Promotion":
        if self.value < 0:
            raise ValueError("value must be ≥ 0")
        if self.type == "percentage" and self.value > 100:
            raise ValueError("a percentage promotion's value must be at most 100")
        if self.max_discount_per_period is not None and self.max_discount_per_period < 0:
            raise ValueError("max_discount_per_period must be ≥ 0")
        return self


class Reward(Model):
    reward_id: str
    customer_id: str = "*"
    meter_api_name: str
    per_units: Money
    credit: Money
    expires_after_days: Optional[int] = Field(default=None, ge=1)

    @field_validator("per_units")
    @classmethod
    def _pos(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("credit")
    @classmethod
    def _not_negative(cls, v: Decimal) -> Decimal:
        if v < 0:
            raise ValueError("must not be negative (a reward grants a credit)")
        return v


class Currency(Model):
    code: str
    name: str = ""
    minor_units: int = Field(ge=0, le=9)
    base_currency: str
    rate: Money

    @field_validator("rate")
    @classmethod
    def _pos(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be > 0 (the value of one unit in the base currency)")
        return v


class Channel(Model):
    type: Literal["email", "webhook", "slack"]
    to: list[str] = Field(default_factory=list)
    url: Optional[str] = None
    secret_env: Optional[str] = None
    payload: Optional[str] = None

    @model_validator(mode="after")
    def _target(self) -> "Channel":
        if self.type == "email" and not self.to:
            raise ValueError("an email channel needs `to`")
        if self.type in ("webhook", "slack"):
            if not self.url or not re.match(r"^https?://", self.url):
                raise ValueError("a webhook or slack channel needs an http(s) url")
        return self


class Alert(Model):
    alert_id: str
    name: str = ""
    metric: Literal["usage", "spend", "prepaid_balance", "undefined_customer", "undefined_meter"]
    meter_api_name: Optional[str] = None
    filter: dict[str, list[str]] = Field(default_factory=dict)
    product_item_id: Optional[str] = None
    scope: Literal["per_customer", "all_customers", "customer"] = "per_customer"
    customer_id: Optional[str] = None
    window: Literal["hour", "day", "week", "month", "billing_period"] = "day"
    condition: Literal[
        "greater_than", "less_than", "change_above", "change_below",
        "percent_change_above", "percent_change_below",
    ]
    threshold: Money
    channels: list[Channel] = Field(default_factory=list)

    @field_validator("filter")
    @classmethod
    def _filter(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return _filter_keys(v)

    @model_validator(mode="after")
    def _needs(self) -> "Alert":
        if self.metric == "usage" and not self.meter_api_name:
            raise ValueError("a usage alert needs meter_api_name")
        if self.scope == "customer" and not self.customer_id:
            raise ValueError("scope: customer needs customer_id")
        return self


class Smtp(Model):
    host: str
    port: int = 25
    sender: str
    starttls: bool = False
    username_env: Optional[str] = None
    password_env: Optional[str] = None


class Settings(Model):
    grace_period_hours: int = Field(default=24, ge=0)
    max_event_age_days: int = Field(default=60, ge=1)
    default_plan_id: Optional[str] = None
    smtp: Optional[Smtp] = None
    max_delivery_attempts: int = Field(default=5, ge=1)


# ---------------------------------------------------------------- the catalogue


class CatalogError(Exception):
    """A catalogue that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


TABLES: dict[str, tuple[type[Model], str, bool]] = {
    # name: (model, key field, may be csv/parquet)
    "customers": (Customer, "customer_id", True),
    "meters": (Meter, "meter_api_name", False),
    "product_items": (ProductItem, "product_item_id", False),
    "plans": (Plan, "plan_id", False),
    "subscriptions": (Subscription, "subscription_id", True),
    "credits": (Credit, "grant_id", True),
    "promotions": (Promotion, "promotion_id", False),
    "rewards": (Reward, "reward_id", False),
    "currencies": (Currency, "code", False),
    "alerts": (Alert, "alert_id", False),
}


class Catalog(BaseModel):
    """The validated catalogue. The large flat tables (customers, subscriptions, credits) are read-only
    mappings (a `catalog.flat.FlatTable` when loaded from files, whose models are built on first use)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    customers: Mapping[str, Customer] = Field(default_factory=dict)
    meters: dict[str, Meter] = Field(default_factory=dict)
    product_items: dict[str, ProductItem] = Field(default_factory=dict)
    plans: dict[str, Plan] = Field(default_factory=dict)
    subscriptions: Mapping[str, Subscription] = Field(default_factory=dict)
    credits: Mapping[str, Credit] = Field(default_factory=dict)
    promotions: dict[str, Promotion] = Field(default_factory=dict)
    rewards: dict[str, Reward] = Field(default_factory=dict)
    currencies: dict[str, Currency] = Field(default_factory=dict)
    alerts: dict[str, Alert] = Field(default_factory=dict)
    settings: Settings = Field(default_factory=Settings)
    ignored_files: tuple[str, ...] = ()  # hidden names in the folder (.DS_Store, swap files), not read
    _zones: tuple[Any, dict[str, str]] | None = PrivateAttr(default=None)

    def minor_units(self, code: str) -> int:
        """Decimal places of a currency: a custom currency's own, else ISO 4217."""
        if code in self.currencies:
            return self.currencies[code].minor_units
        return ISO_MINOR_UNITS[code]

    def timezones(self) -> dict[str, str]:
        """customer_id -> the customer's IANA time zone (UTC where none is given), made once."""
        if self._zones is None or self._zones[0] is not self.customers:  # (a copy may hold other customers)
            column = getattr(self.customers, "column", None)  # a FlatTable: no models built
            if column is not None:
                zones = [z if isinstance(z, str) and z else "UTC" for z in column("timezone")]
                self._zones = (self.customers, dict(zip(self.customers, zones)))
            else:
                self._zones = (self.customers, {cid: c.timezone for cid, c in self.customers.items()})
        return self._zones[1]

    def timezone(self, customer_id: str) -> str:
        """The customer's time zone; UTC for a customer the catalogue does not know."""
        return self.timezones().get(customer_id, "UTC")
