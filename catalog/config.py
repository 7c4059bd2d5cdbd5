"""The product catalogue (SPEC §3): YAML/CSV/Parquet files -> validated, typed models.

Every file is validated on load. Problems are collected, never raised one by one: a bad
catalogue stops the run with one line per problem naming file, record and field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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


Money = Annotated[Decimal, BeforeValidator(_to_decimal), AfterValidator(_at_most_9_places)]
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
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


MeterType = Literal[
    "sum", "count", "max", "min", "avg", "latest", "unique_count",
    "running_total", "high_watermark", "event_duration", "weighted_sum",
]
STATEFUL_TYPES = frozenset({"running_total", "high_watermark", "event_duration", "weighted_sum"})
VALUELESS_TYPES = frozenset({"count", "unique_count"})


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
    unit_price: Money = Decimal(0)
    flat_fee: Money = Decimal(0)


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
    unit_price: Optional[Money] = None
    included_units: Money = Decimal(0)
    tiers: list[Tier] = Field(default_factory=list)
    package_size: Optional[Money] = None
    package_price: Optional[Money] = None
    allow_partial: bool = False
    minimum: Optional[Money] = None
    maximum: Optional[Money] = None
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
    amount: Money
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


class Currency(Model):
    code: str
    name: str = ""
    minor_units: int = Field(ge=0, le=9)
    base_currency: str
    rate: Money


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
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    customers: dict[str, Customer] = Field(default_factory=dict)
    meters: dict[str, Meter] = Field(default_factory=dict)
    product_items: dict[str, ProductItem] = Field(default_factory=dict)
    plans: dict[str, Plan] = Field(default_factory=dict)
    subscriptions: dict[str, Subscription] = Field(default_factory=dict)
    credits: dict[str, Credit] = Field(default_factory=dict)
    promotions: dict[str, Promotion] = Field(default_factory=dict)
    rewards: dict[str, Reward] = Field(default_factory=dict)
    currencies: dict[str, Currency] = Field(default_factory=dict)
    alerts: dict[str, Alert] = Field(default_factory=dict)
    settings: Settings = Field(default_factory=Settings)

    def minor_units(self, code: str) -> int:
        """Decimal places of a currency: a custom currency's own, else ISO 4217."""
        if code in self.currencies:
            return self.currencies[code].minor_units
        return ISO_MINOR_UNITS[code]

    def timezone(self, customer_id: str) -> str:
        c = self.customers.get(customer_id)
        return c.timezone if c else "UTC"


def _read_records(path: Path) -> list[Any]:
    if path.suffix in (".yaml", ".yml"):
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
        return [] if data is None else data
    import polars as pl

    if path.suffix == ".csv":
        df = pl.read_csv(path, infer_schema=False)  # every column as text; pydantic parses
    else:
        df = pl.read_parquet(path)
    rows = df.to_dicts()
    for row in rows:
        for k in [k for k, v in row.items() if v is None or v == ""]:
            del row[k]  # an empty cell is an absent optional field
        for k in ("traits",):
            if isinstance(row.get(k), str):
                row[k] = yaml.safe_load(row[k])
        if isinstance(row.get("product_item_ids"), str):
            row["product_item_ids"] = [s for s in row["product_item_ids"].split("|") if s]
    return rows


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(record)"


def _find(catalog_dir: Path, name: str, tabular: bool) -> Path | None:
    exts = [".yaml", ".yml"] + ([".csv", ".parquet"] if tabular else [])
    found = [catalog_dir / f"{name}{e}" for e in exts if (catalog_dir / f"{name}{e}").exists()]
    return found[0] if found else None


_LOADED: dict[str, Catalog] = {}  # content digest of a catalogue folder -> its Catalog (the last few)


def _digest(catalog_dir: Path) -> str:
    """sha256 over the names and bytes of the folder's files: equal digests, equal catalogues."""
    h = hashlib.sha256()
    for f in sorted(catalog_dir.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def load_catalog(catalog_dir: Path | str) -> Catalog:
    """Read and validate every catalogue file; raise CatalogError listing every problem.

    A run loads the catalogue in every flow and task; a folder whose files did not change since
    an earlier load in this process (same names and bytes) gives the same validated Catalog
    (frozen models) without parsing it again."""
    catalog_dir = Path(catalog_dir)
    if not catalog_dir.is_dir():
        raise CatalogError([f"{catalog_dir}: catalogue folder not found"])
    key = _digest(catalog_dir)
    if key not in _LOADED:
        cat = _load(catalog_dir)
        while len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = cat
    return _LOADED[key]


def _load(catalog_dir: Path) -> Catalog:
    problems: list[str] = []
    tables: dict[str, dict[str, Any]] = {}
    for name, (model, key, tabular) in TABLES.items():
        tables[name] = {}
        path = _find(catalog_dir, name, tabular)
        if path is None:
            continue
        label = f"catalog/{path.name}"
        try:
            records = _read_records(path)
        except Exception as e:  # unreadable YAML/CSV: one line, the parser's own words
            problems.append(f"{label}: cannot be read: {' '.join(str(e).split())}")
            continue
        if not isinstance(records, list):
            problems.append(f"{label}: must be a list of records")
            continue
        for i, rec in enumerate(records, start=1):
            ident = rec.get(key) if isinstance(rec, dict) else None
            where = f"{label}: record {i}" + (f" ({key}={ident})" if ident is not None else "")
            if not isinstance(rec, dict):
                problems.append(f"{where}: must be a mapping of field: value")
                continue
            try:
                obj = model.model_validate(rec)
            except ValidationError as e:
                for err in e.errors():
                    msg = err["msg"].removeprefix("Value error, ")
                    problems.append(f"{where}: {_loc(err['loc'])}: {msg}")
                continue
            k = getattr(obj, key)
            if k in tables[name]:
                problems.append(f"{where}: {key}: duplicate {key} {k!r}")
                continue
            tables[name][k] = obj
    settings = Settings()
    spath = _find(catalog_dir, "settings", False)
    if spath is not None:
        try:
            raw = yaml.safe_load(spath.read_text(encoding="utf-8")) or {}
            settings = Settings.model_validate(raw)
        except ValidationError as e:
            for err in e.errors():
                problems.append(f"catalog/{spath.name}: {_loc(err['loc'])}: {err['msg'].removeprefix('Value error, ')}")
        except Exception as e:
            problems.append(f"catalog/{spath.name}: cannot be read: {' '.join(str(e).split())}")
    if problems:
        raise CatalogError(problems)
    cat = Catalog(settings=settings, **tables)
    problems = cross_check(cat)
    if problems:
        raise CatalogError(problems)
    return cat


def cross_check(cat: Catalog) -> list[str]:
    """References between tables, currencies, and non-overlapping subscriptions."""
    p: list[str] = []

    def known_currency(code: str) -> bool:
        return code in cat.currencies or code in ISO_MINOR_UNITS

    for i, m in enumerate(cat.product_items.values(), 1):
        if m.meter_api_name not in cat.meters:
            p.append(f"catalog/product_items.yaml: record {i} (product_item_id={m.product_item_id}): "
                     f"meter_api_name: unknown meter {m.meter_api_name!r}")
    for i, pl_ in enumerate(cat.plans.values(), 1):
        where = f"catalog/plans.yaml: record {i} (plan_id={pl_.plan_id})"
        if not known_currency(pl_.currency):
            p.append(f"{where}: currency: unknown currency {pl_.currency!r} (not ISO 4217 and not in currencies)")
        seen = set()
        for j, it in enumerate(pl_.items):
            if it.product_item_id not in cat.product_items:
                p.append(f"{where}: items[{j}].product_item_id: unknown product item {it.product_item_id!r}")
            if it.product_item_id in seen:
                p.append(f"{where}: items[{j}].product_item_id: listed twice")
            seen.add(it.product_item_id)
    for i, c in enumerate(cat.currencies.values(), 1):
        if c.base_currency not in ISO_MINOR_UNITS:
            p.append(f"catalog/currencies.yaml: record {i} (code={c.code}): base_currency: "
                     f"{c.base_currency!r} is not an ISO 4217 currency")
    by_customer: dict[str, list[Subscription]] = {}
    for i, s in enumerate(cat.subscriptions.values(), 1):
        where = f"catalog/subscriptions: record {i} (subscription_id={s.subscription_id})"
        if s.customer_id not in cat.customers:
            p.append(f"{where}: customer_id: unknown customer {s.customer_id!r}")
            continue
        if s.plan_id not in cat.plans:
            p.append(f"{where}: plan_id: unknown plan {s.plan_id!r}")
        tz = cat.timezone(s.customer_id)
        if s.end is not None and to_utc(s.end, tz) <= to_utc(s.start, tz):
            p.append(f"{where}: end: must be after start")
        by_customer.setdefault(s.customer_id, []).append(s)
    for cid, subs in by_customer.items():
        tz = cat.timezone(cid)
        subs = sorted(subs, key=lambda s: to_utc(s.start, tz))
        for a, b in zip(subs, subs[1:]):
            if a.end is None or to_utc(a.end, tz) > to_utc(b.start, tz):
                p.append(f"catalog/subscriptions: subscription_id={b.subscription_id}: start: overlaps "
                         f"subscription {a.subscription_id} of customer {cid}")
    for table, items in (("credits", cat.credits), ("promotions", cat.promotions)):
        for i, r in enumerate(items.values(), 1):
            if r.customer_id not in cat.customers:
                key = "grant_id" if table == "credits" else "promotion_id"
                p.append(f"catalog/{table}: record {i} ({key}={getattr(r, key)}): customer_id: "
                         f"unknown customer {r.customer_id!r}")
    for i, g in enumerate(cat.credits.values(), 1):
        if not known_currency(g.currency):
            p.append(f"catalog/credits: record {i} (grant_id={g.grant_id}): currency: unknown currency {g.currency!r}")
        for pid in g.product_item_ids or []:
            if pid not in cat.product_items:
                p.append(f"catalog/credits: record {i} (grant_id={g.grant_id}): product_item_ids: unknown product item {pid!r}")
    for i, pr in enumerate(cat.promotions.values(), 1):
        if pr.applies_to != "invoice" and pr.applies_to not in cat.product_items:
            p.append(f"catalog/promotions.yaml: record {i} (promotion_id={pr.promotion_id}): applies_to: "
                     f"must be 'invoice' or a product_item_id, got {pr.applies_to!r}")
    for i, r in enumerate(cat.rewards.values(), 1):
        if r.meter_api_name not in cat.meters:
            p.append(f"catalog/rewards.yaml: record {i} (reward_id={r.reward_id}): meter_api_name: unknown meter {r.meter_api_name!r}")
        if r.customer_id != "*" and r.customer_id not in cat.customers:
            p.append(f"catalog/rewards.yaml: record {i} (reward_id={r.reward_id}): customer_id: unknown customer {r.customer_id!r}")
    for i, a in enumerate(cat.alerts.values(), 1):
        where = f"catalog/alerts.yaml: record {i} (alert_id={a.alert_id})"
        if a.meter_api_name and a.meter_api_name not in cat.meters:
            p.append(f"{where}: meter_api_name: unknown meter {a.meter_api_name!r}")
        if a.product_item_id and a.product_item_id not in cat.product_items:
            p.append(f"{where}: product_item_id: unknown product item {a.product_item_id!r}")
        if any(c.type == "email" for c in a.channels) and cat.settings.smtp is None:
            p.append(f"{where}: channels: an email channel needs smtp in settings.yaml")
    if cat.settings.default_plan_id and cat.settings.default_plan_id not in cat.plans:
        p.append(f"catalog/settings.yaml: default_plan_id: unknown plan {cat.settings.default_plan_id!r}")
    return p
