"""Invoices (SPEC §5.4): usage, minimum, fee and adjustment lines → promotions → prepaid
credits → total due, for a set of customers and their billing periods.

`build_invoices` is one pure function: the catalogue, the customers' periods, the metered period
quantities and the run's `as_of` in; Polars frames conforming to `catalog/schemas.py` out.

Rules kept here (the SPEC's, and the decisions where it is silent — see docs in each helper):

* Every plan item has a usage line every period, even without usage (a tier-1 flat fee or a
  minimum is still owed). With `dimensions`, each combination is its own line priced by its
  matching rate (else `default`); usage that no price covers goes to `unbilled_usage`.
* Each line amount is rounded half-up to the currency's minor units once; every invoice amount is
  the exact sum of its rounded lines by kind.
* A period whose invoice is final in `frozen` is not recomputed: its rows are returned unchanged.
  If the usage re-priced for it differs from what it billed, the difference is billed as signed
  `adjustment` lines on the customer's next invoice that is not final yet.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional, Sequence

import polars as pl
import pyarrow as pa

from catalog.config import Catalog, Plan, Price, Promotion, Reward, to_utc
from catalog.schemas import DEC, DIMS, SCHEMAS, TIER, TS, conform, dims_key_expr, empty
from transforms.pricing.credits import Grant, burn_down_key, grant_from_credit, reward_grant
from transforms.pricing.money import ZERO, exact, round_money
from transforms.pricing.periods import CustomerPeriod, periods_from_frame
from transforms.pricing.promotions import promotion_applies, promotion_discount
from transforms.pricing.rate import rate_tuple, resolve_price

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_US = dt.timedelta(microseconds=1)

USAGE_COLUMNS = ("customer_id", "period_start", "product_item_id", "dimensions", "quantity")
REWARD_USAGE_COLUMNS = ("customer_id", "period_start", "meter_api_name", "quantity")

# unbilled_usage reasons
NO_SUBSCRIPTION = "no_subscription"
ITEM_NOT_IN_PLAN = "item_not_in_plan"
NO_PRICE_FOR_DIMENSIONS = "no_price_for_dimensions"
ADJUSTMENT_PENDING = "adjustment_pending"

LINE_KINDS = ("usage", "minimum", "fee", "adjustment", "discount", "credit")
_KIND_ORDER = {k: i for i, k in enumerate(LINE_KINDS)}


def _us(t: dt.datetime) -> int:
    return (t.astimezone(UTC) - EPOCH) // _US


def _from_us(n: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=n)


def _h(*parts: object) -> str:
    return hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()


def invoice_id(customer_id: str, plan_id: str, period_start: dt.datetime) -> str:
    """Deterministic invoice id from (customer, plan, period start): "inv_" + 16 hex of sha256."""
    return "inv_" + _h(customer_id, plan_id, period_start.astimezone(UTC).isoformat())[:16]


# ------------------------------------------------------------------ public containers


@dataclass(frozen=True)
class FrozenState:
    """What earlier runs made final: never recomputed, returned as is.

    invoices       rows of `invoices` (only status "final" ones are used)
    line_items     their `line_items` (adjustment lines here count as already billed)
    credit_ledger  their `credit_ledger` rows (balances continue from them)
    """

    invoices: pl.DataFrame
    line_items: pl.DataFrame
    credit_ledger: pl.DataFrame

    @classmethod
    def empty(cls) -> "FrozenState":
        return cls(empty("invoices"), empty("line_items"), empty("credit_ledger"))

    @classmethod
    def from_result(cls, result: "InvoiceResult", previous: Optional["FrozenState"] = None) -> "FrozenState":
        """The final invoices of a run (and of `previous`), with their lines and ledger rows."""
        inv = result.invoices.filter(pl.col("status") == "final")
        ids = inv["invoice_id"]
        state = cls(
            inv,
            result.line_items.filter(pl.col("invoice_id").is_in(ids.implode())),
            result.credit_ledger.filter(pl.col("invoice_id").is_in(ids.implode())),
        )
        if previous is None:
            return state
        old = previous.invoices.filter(~pl.col("invoice_id").is_in(ids.implode()))
        oid = old["invoice_id"].implode()
        return cls(
            pl.concat([conform("invoices", old), state.invoices]),
            pl.concat([conform("line_items", previous.line_items.filter(pl.col("invoice_id").is_in(oid))),
                       state.line_items]),
            pl.concat([conform("credit_ledger", previous.credit_ledger.filter(pl.col("invoice_id").is_in(oid))),
                       state.credit_ledger]),
        )


@dataclass(frozen=True)
class InvoiceResult:
    """Frames conforming to catalog/schemas.py: invoices, line_items, credit_ledger, unbilled_usage."""

    invoices: pl.DataFrame
    line_items: pl.DataFrame
    credit_ledger: pl.DataFrame
    unbilled_usage: pl.DataFrame


# ------------------------------------------------------------------ working objects


class _Line:
    """One invoice line being built (attributes not set keep the class defaults)."""

    kind = "usage"
    amount = ZERO
    pid: Optional[str] = None
    fee_id: Optional[str] = None
    promotion_id: Optional[str] = None
    grant_id: Optional[str] = None
    dims_ref: Optional[int] = None   # index into the pool of dimension maps (0 = empty map)
    dk = ""                          # canonical text of the dimension combination
    description: Optional[str] = None
    quantity: Optional[Decimal] = None
    unit_price: Optional[Decimal] = None
    tiers: Optional[list[tuple]] = None
    corrects: Optional[int] = None   # adjustment: the corrected period's start (µs)
    tag = ""
    prepayable = True

    def __init__(self, kind: str, amount: Decimal, **fields):
        self.kind = kind
        self.amount = amount
        if fields:
            self.__dict__.update(fields)


def _usage_line(amount: Decimal, pid: str, dims_ref: int, dk: str, quantity: Decimal,
                unit_price: Optional[Decimal], tiers: list[tuple], description: str) -> _Line:
    ln = _Line.__new__(_Line)
    ln.amount = amount
    ln.pid = pid
    ln.dims_ref = dims_ref
    ln.dk = dk
    ln.quantity = quantity
    ln.unit_price = unit_price
    ln.tiers = tiers
    ln.description = description
    return ln


class _Work:
    """An invoice being computed in this run."""

    __slots__ = ("p", "iid", "ps", "pe", "plan", "currency", "minor", "lines", "buckets")

    def __init__(self, p: CustomerPeriod, iid: str, plan: Plan, minor: int):
        self.p = p
        self.iid = iid
        self.ps = _us(p.start)
        self.pe = _us(p.end)
        self.plan = plan
        self.currency = plan.currency
        self.minor = minor
        self.lines: list[_Line] = []
        self.buckets: Optional[list[list]] = None

    def subtotal(self) -> Decimal:
        return sum((ln.amount for ln in self.lines if _KIND_ORDER[ln.kind] < 4), ZERO)


@dataclass
class _Adjustment:
    closed_ps: int
    currency: str
    pid: str
    dk: str
    dims_ref: Optional[int]
    amount: Decimal
    quantity: Decimal
    description: str
    tiers: Optional[list[tuple]]


# ------------------------------------------------------------------ the engine


class _Engine:
    def __init__(self, catalog: Catalog, periods: list[CustomerPeriod], usage: pl.DataFrame,
                 as_of: dt.datetime, frozen: Optional[FrozenState], reward_usage: Optional[pl.DataFrame]):
        self.cat = catalog
        self.as_of = as_of
        self.grace = dt.timedelta(hours=catalog.settings.grace_period_hours)
        self.periods = periods
        self.customers = sorted({p.customer_id for p in periods})
        self._pricers: dict = {}
        self._labels: dict = {}
        self._resolve_cache: dict = {}
        self._minor_cache: dict[str, int] = {}
        self.unbilled: list[tuple[int, str]] = []              # (usage row, reason)
        self.pending: list[tuple[str, _Adjustment]] = []       # adjustments with no invoice to go on
        # output accumulators
        self.out_lines: list[tuple[_Work, list[_Line]]] = []
        self.out_invoices: list[tuple] = []
        self.out_ledger: list[tuple] = []
        self._load_usage(usage)
        self._load_frozen(frozen)
        self._load_rewards(reward_usage)
        self._index_catalog()

    # ---------------------------------------------------------- inputs

    def _load_usage(self, usage: pl.DataFrame) -> None:
        missing = [c for c in USAGE_COLUMNS if c not in usage.columns and c != "dimensions"]
        if missing:
            raise ValueError(f"usage: missing columns {missing}")
        u = usage
        if "dimensions" not in u.columns:
            u = u.with_columns(pl.lit(None, dtype=DIMS).alias("dimensions"))
        u = u.select(
            pl.col("customer_id").cast(pl.String),
            pl.col("period_start").cast(TS),
            pl.col("product_item_id").cast(pl.String),
            pl.col("dimensions").cast(DIMS),
            pl.col("quantity").cast(DEC),
        )
        if u["quantity"].null_count():
            u = u.with_columns(pl.col("quantity").fill_null(pl.lit(0, dtype=DEC)))
        self.usage = u
        self.u_cust = u["customer_id"].to_list()
        self.u_ps = u["period_start"].dt.epoch("us").to_list()
        self.u_pid = u["product_item_id"].to_list()
        self.u_dk = u.select(dims_key_expr("dimensions"))["dimensions"].to_list()
        self.u_qty = u["quantity"].to_list()
        self.u_index: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, key in enumerate(zip(self.u_cust, self.u_ps)):
            self.u_index[key].append(i)
        self.u_used = bytearray(len(self.u_cust))
        self._dims_parts: list[pl.Series] = [pl.Series("dimensions", [{}], dtype=DIMS), u["dimensions"]]
        self._dims_next = 1 + len(self.u_cust)
        self._u_dims_cache: dict[int, dict] = {}

    def _usage_dims(self, i: int) -> dict:
        d = self._u_dims_cache.get(i)
        if d is None:
            d = self.usage["dimensions"][i] or {}
            self._u_dims_cache[i] = d
        return d

    def _add_dims(self, s: pl.Series) -> int:
        """Add dimension maps to the pool; returns the pool offset of s[0]."""
        off = self._dims_next
        self._dims_parts.append(s.cast(DIMS))
        self._dims_next += len(s)
        return off

    def _load_frozen(self, frozen: Optional[FrozenState]) -> None:
        fz = frozen or FrozenState.empty()
        custs = pl.Series(self.customers, dtype=pl.String).implode()
        inv = conform("invoices", fz.invoices).filter(
            (pl.col("status") == "final") & pl.col("customer_id").is_in(custs))
        self.frozen_invoices = inv
        ids = inv["invoice_id"].implode()
        self.frozen_lines = conform("line_items", fz.line_items).filter(pl.col("invoice_id").is_in(ids))
        self.frozen_ledger_df = conform("credit_ledger", fz.credit_ledger).filter(pl.col("invoice_id").is_in(ids))
        self.frozen_ids: set[str] = set(inv["invoice_id"].to_list())
        # per customer: (period_start_us, invoice_id) of every final invoice
        self.frozen_by_customer: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for cid, ps, iid in zip(inv["customer_id"].to_list(), inv["period_start"].dt.epoch("us").to_list(),
                                inv["invoice_id"].to_list()):
            self.frozen_by_customer[cid].append((ps, iid))
        # ledger rows per invoice, in their stored order
        self.frozen_ledger: dict[str, list[tuple]] = defaultdict(list)
        led = self.frozen_ledger_df
        for row in zip(led["invoice_id"].to_list(), led["grant_id"].to_list(), led["entry"].to_list(),
                       led["balance_after"].to_list()):
            self.frozen_ledger[row[0]].append(row[1:])
        self._find_dirty_closed_periods()

    def _find_dirty_closed_periods(self) -> None:
        """Closed (final) periods whose current usage quantities differ, for some item and
        dimension combination, from what was billed for them (usage lines + final adjustments).
        Only these are re-priced; a price edited in the catalogue never re-bills a closed period."""
        self.dirty: set[tuple[str, int]] = set()
        self.closed_lines: dict[str, list[tuple]] = defaultdict(list)   # invoice_id -> usage/minimum lines
        self.closed_adjusted: dict[tuple[str, int], list[tuple]] = defaultdict(list)  # (cust, ps) -> adj lines
        if not self.frozen_ids:
            return
        closed = [(p.customer_id, _us(p.start)) for p in self.periods
                  if invoice_id(p.customer_id, p.plan_id, p.start) in self.frozen_ids]
        if not closed:
            return
        closed_df = pl.DataFrame({"customer_id": [c for c, _ in closed], "ps": [s for _, s in closed]},
                                 schema={"customer_id": pl.String, "ps": pl.Int64})
        fl = self.frozen_lines.filter(pl.col("kind").is_in(["usage", "adjustment"])).select(
            "customer_id",
            pl.when(pl.col("kind") == "adjustment").then(pl.col("corrects_period"))
            .otherwise(pl.col("period_start")).dt.epoch("us").alias("ps"),
            pl.col("product_item_id").alias("pid"),
            dims_key_expr("dimensions").alias("dk"),
            pl.col("quantity").fill_null(pl.lit(0, dtype=DEC)),
        ).group_by("customer_id", "ps", "pid", "dk").agg(pl.col("quantity").sum().alias("billed"))
        cur = pl.DataFrame({
            "customer_id": self.u_cust, "ps": self.u_ps, "pid": self.u_pid, "dk": self.u_dk,
        }, schema={"customer_id": pl.String, "ps": pl.Int64, "pid": pl.String, "dk": pl.String}).with_columns(
            self.usage["quantity"].alias("current"))
        cur = cur.join(closed_df, on=["customer_id", "ps"], how="semi")
        fl = fl.join(closed_df, on=["customer_id", "ps"], how="semi")
        diff = cur.join(fl, on=["customer_id", "ps", "pid", "dk"], how="full", coalesce=True).filter(
            pl.col("current").fill_null(pl.lit(0, dtype=DEC)) != pl.col("billed").fill_null(pl.lit(0, dtype=DEC))
        ).select("customer_id", "ps").unique()
        self.dirty = set(zip(diff["customer_id"].to_list(), diff["ps"].to_list()))
        if not self.dirty:
            return
        dirty_df = pl.DataFrame({"customer_id": [c for c, _ in self.dirty], "ps": [s for _, s in self.dirty]},
                                schema={"customer_id": pl.String, "ps": pl.Int64})
        lines = self.frozen_lines.with_columns(
            pl.when(pl.col("kind") == "adjustment").then(pl.col("corrects_period"))
            .otherwise(pl.col("period_start")).dt.epoch("us").alias("_ps"),
        ).filter(pl.col("kind").is_in(["usage", "minimum", "adjustment"])).join(
            dirty_df.rename({"ps": "_ps"}), on=["customer_id", "_ps"], how="semi")
        off = self._add_dims(lines["dimensions"])
        dks = lines.select(dims_key_expr("dimensions"))["dimensions"].to_list()
        for j, (iid, kind, cid, ps, pid, qty, amt) in enumerate(zip(
                lines["invoice_id"].to_list(), lines["kind"].to_list(), lines["customer_id"].to_list(),
                lines["_ps"].to_list(), lines["product_item_id"].to_list(), lines["quantity"].to_list(),
                lines["amount"].to_list())):
            rec = (pid, dks[j], qty if qty is not None else ZERO, amt, off + j)
            if kind == "adjustment":
                self.closed_adjusted[(cid, ps)].append(rec)
            else:
                self.closed_lines[iid].append(rec)

    def _load_rewards(self, reward_usage: Optional[pl.DataFrame]) -> None:
        self.reward_qty: dict[tuple[str, int, str], Decimal] = {}
        if reward_usage is None or reward_usage.height == 0 or not self.cat.rewards:
            return
        missing = [c for c in REWARD_USAGE_COLUMNS if c not in reward_usage.columns]
        if missing:
            raise ValueError(f"reward_usage: missing columns {missing}")
        r = reward_usage.select(
            pl.col("customer_id").cast(pl.String), pl.col("period_start").cast(TS).dt.epoch("us"),
            pl.col("meter_api_name").cast(pl.String), pl.col("quantity").cast(DEC),
        ).group_by("customer_id", "period_start", "meter_api_name").agg(pl.col("quantity").sum())
        for c, ps, m, q in r.iter_rows():
            self.reward_qty[(c, ps, m)] = q if q is not None else ZERO

    def _index_catalog(self) -> None:
        self.credits_by_customer: dict[str, list] = defaultdict(list)
        for g in self.cat.credits.values():
            self.credits_by_customer[g.customer_id].append(g)
        self.promos_by_customer: dict[str, list[Promotion]] = defaultdict(list)
        for pr in self.cat.promotions.values():
            self.promos_by_customer[pr.customer_id].append(pr)
        self.rewards_all: list[Reward] = [r for r in self.cat.rewards.values() if r.customer_id == "*"]
        self.rewards_by_customer: dict[str, list[Reward]] = defaultdict(list)
        for r in self.cat.rewards.values():
            if r.customer_id != "*":
                self.rewards_by_customer[r.customer_id].append(r)

    def minor(self, code: str) -> int:
        m = self._minor_cache.get(code)
        if m is None:
            m = self._minor_cache[code] = self.cat.minor_units(code)
        return m

    # ---------------------------------------------------------- pricing one period

    def _pricer(self, price: Price, minor: int):
        """qty → (amount rounded, unit_price, tier tuples, minimum line amount or None, capped)."""
        key = (id(price), minor)
        f = self._pricers.get(key)
        if f is None:
            minimum = price.minimum

            def f(qty: Decimal, _rate=rate_tuple, _round=round_money):
                amount, unit_price, tiers, _m, _q, uncapped = _rate(qty, price)
                amount_r = _round(amount, minor)
                min_r = None
                if minimum is not None and minimum > amount_r:
                    # one rounding: minimum − (a rounded amount) has the minimum's own digits
                    min_r = _round(minimum - amount_r, minor)
                return amount_r, unit_price, tiers, min_r, amount != uncapped

            self._pricers[key] = f
        return f

    def _resolve(self, price: Price, dk: str, row: int) -> Optional[Price]:
        key = (id(price), dk)
        if key in self._resolve_cache:
            return self._resolve_cache[key]
        sub = resolve_price(price, self._usage_dims(row))
        if sub is not None and sub.dimensions is not None:
            raise ValueError("a dimension rate's price must not itself have `dimensions`")
        self._resolve_cache[key] = sub
        return sub

    def _label(self, pid: str) -> str:
        it = self.cat.product_items.get(pid)
        return (it.invoice_label or it.name or pid) if it else pid

    def _usage_lines(self, cust: str, ps: int, plan: Plan, minor: int, price_it: bool = True) -> list[_Line]:
        """Usage and minimum lines of one period (price_it=False: only classify the usage rows
        into billed / unbilled, for closed periods that need no re-pricing)."""
        rows = self.u_index.get((cust, ps), ())
        by_item: dict[str, list[int]] = {}
        for i in rows:
            self.u_used[i] = 1
            by_item.setdefault(self.u_pid[i], []).append(i)
        lines: list[_Line] = []
        for item in plan.items:
            pid = item.product_item_id
            price = item.price
            irows = by_item.pop(pid, None) or []
            if price.dimensions is None:
                if len(irows) > 1:
                    raise ValueError(f"usage: {len(irows)} rows for customer {cust!r}, item {pid!r}, period "
                                     f"{_from_us(ps).isoformat()}; an item without price dimensions needs one row")
                if not price_it:
                    continue
                qty = self.u_qty[irows[0]] if irows else ZERO
                self._emit_usage(lines, pid, price, qty, minor, dims_ref=0, dk="")
                continue
            # a price per dimension combination
            seen: set[str] = set()
            priced: list[tuple[str, int, Price]] = []
            for i in irows:
                dk = self.u_dk[i]
                if dk in seen:
                    raise ValueError(f"usage: two rows for customer {cust!r}, item {pid!r}, dimensions {dk!r}, "
                                     f"period {_from_us(ps).isoformat()}")
                seen.add(dk)
                sub = self._resolve(price, dk, i)
                if sub is None:
                    self.unbilled.append((i, NO_PRICE_FOR_DIMENSIONS))
                else:
                    priced.append((dk, i, sub))
            if not price_it:
                continue
            priced.sort(key=lambda t: t[0])
            start = len(lines)
            for dk, i, sub in priced:
                self._emit_usage(lines, pid, sub, self.u_qty[i], minor, dims_ref=1 + i, dk=dk)
            if not priced:
                lines.append(_Line("usage", round_money(ZERO, minor), pid=pid, dims_ref=0, dk="",
                                   quantity=ZERO, description=f"{self._label(pid)}: no priced usage", tiers=[]))
            item_lines = lines[start:]
            if price.maximum is not None:
                cap = round_money(price.maximum, minor)
                running = ZERO
                for ln in item_lines:
                    if ln.kind != "usage":
                        continue
                    if running + ln.amount > cap:
                        ln.amount = max(cap - running, ZERO) + round_money(ZERO, minor)
                        ln.description = f"{ln.description} (item maximum {cap} reached)"
                    running += ln.amount
            if price.minimum is not None:
                total = sum((ln.amount for ln in item_lines), ZERO)
                if price.minimum > total:
                    m = round_money(price.minimum - total, minor)
                    if m > 0:
                        lines.append(_Line("minimum", m, pid=pid, dims_ref=0, dk="", tag="item",
                                           description=f"{self._label(pid)}: minimum {price.minimum}"))
        for pid, irows in by_item.items():
            for i in irows:
                self.unbilled.append((i, ITEM_NOT_IN_PLAN))
        return lines

    def _emit_usage(self, lines: list[_Line], pid: str, price: Price, qty: Decimal, minor: int,
                    dims_ref: int, dk: str) -> None:
        amount, unit_price, tiers, min_r, capped = self._pricer(price, minor)(qty)
        label = self._labels.get((pid, dk))
        if label is None:
            label = self._label(pid)
            if dk:
                label = f"{label} ({dk.replace(chr(0x1e), '=').replace(chr(0x1f), ', ')})"
            self._labels[(pid, dk)] = label
        lines.append(_usage_line(amount, pid, dims_ref, dk, qty, unit_price, tiers,
                                 f"{label} (maximum {price.maximum})" if capped else label))
        if min_r is not None and min_r > 0:
            lines.append(_Line("minimum", min_r, pid=pid, dims_ref=dims_ref, dk=dk,
                               description=f"{label}: minimum {price.minimum}"))

    def _fee_lines(self, p: CustomerPeriod, plan: Plan, minor: int) -> list[_Line]:
        lines = []
        for fee in plan.fees:
            if fee.cadence == "one_time" and p.index != 0:
                continue
            qty = Decimal(1)
            amount = fee.amount
            desc = fee.name or fee.fee_id
            if fee.prorate and p.end < p.nominal_end:
                covered = Decimal(_us(p.end) - _us(p.start))
                full = Decimal(_us(p.nominal_end) - _us(p.start))
                qty = covered / full
                amount = fee.amount * covered / full
                desc = f"{desc} (prorated {p.end - p.start} of {p.nominal_end - p.start})"
            lines.append(_Line("fee", round_money(amount, minor), fee_id=fee.fee_id, quantity=qty,
                               unit_price=fee.amount, description=desc, prepayable=fee.prepayable))
        return lines

    # ---------------------------------------------------------- late data

    def _closed_adjustments(self, cust: str, p: CustomerPeriod, iid: str) -> list[_Adjustment]:
        """Re-price a closed period with the current usage; the differences from what was billed
        (its usage and minimum lines, plus adjustments already on final invoices)."""
        ps = _us(p.start)
        plan = self.cat.plans[p.plan_id]
        minor = self.minor(plan.currency)
        if (cust, ps) not in self.dirty:
            self._usage_lines(cust, ps, plan, minor, price_it=False)
            return []
        new = self._usage_lines(cust, ps, plan, minor)
        # key (pid, dk) -> [amount, quantity, dims_ref, tiers]
        cur: dict[tuple[str, str], list] = {}
        for ln in new:
            rec = cur.setdefault((ln.pid, ln.dk), [ZERO, ZERO, ln.dims_ref, None])
            rec[0] += ln.amount
            if ln.kind == "usage":
                rec[1] += ln.quantity
                rec[3] = ln.tiers
        billed: dict[tuple[str, str], list] = {}
        for pid, dk, qty, amt, ref in self.closed_lines.get(iid, ()) + self.closed_adjusted.get((cust, ps), []):
            rec = billed.setdefault((pid, dk), [ZERO, ZERO, ref])
            rec[0] += amt
            rec[1] += qty
        order = {it.product_item_id: n for n, it in enumerate(plan.items)}
        keys = sorted(set(cur) | set(billed), key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
        by_item: dict[str, list] = defaultdict(list)
        for k in keys:
            by_item[k[0]].append(k)
        out = []
        for pid, ks in by_item.items():
            if all(cur.get(k, (ZERO, ZERO))[1] == billed.get(k, (ZERO, ZERO))[1] for k in ks):
                continue  # quantities unchanged: nothing arrived late for this item
            for k in ks:
                c = cur.get(k)
                b = billed.get(k)
                amount = (c[0] if c else ZERO) - (b[0] if b else ZERO)
                qty = (c[1] if c else ZERO) - (b[1] if b else ZERO)
                if amount == 0 and qty == 0:
                    continue
                ref = c[2] if c else b[2]
                out.append(_Adjustment(ps, plan.currency, pid, k[1], ref, amount + round_money(ZERO, minor), qty,
                                       f"{self._label(pid)}: correction of {p.start.date().isoformat()}",
                                       c[3] if c else None))
        return out

    def _place_adjustments(self, adjs: list[_Adjustment], works: list[_Work], cust: str) -> None:
        """Put each adjustment on the customer's first open invoice after its closed period (same
        currency). A negative one takes at most what that invoice's subtotal can absorb; the rest
        goes on the next open invoice (or stays pending, and is billed by a later run). The
        quantity is recorded on the part that completes the amount."""
        adjs = sorted(adjs, key=lambda a: (a.amount < 0, a.closed_ps))
        for a in adjs:
            targets = [w for w in works if w.ps > a.closed_ps and w.currency == a.currency]
            remaining = a.amount
            for w in targets:
                if remaining >= 0:
                    take = remaining
                else:
                    room = w.subtotal()
                    if room <= 0:
                        continue
                    take = max(remaining, -room)
                remaining -= take
                done = remaining == 0
                w.lines.append(_Line("adjustment", take, pid=a.pid, dims_ref=a.dims_ref, dk=a.dk,
                                     corrects=a.closed_ps, quantity=a.quantity if done else ZERO,
                                     tiers=a.tiers, description=a.description))
                if done:
                    break
            if remaining != 0 or not targets:
                self.pending.append((cust, a))

    # ---------------------------------------------------------- one customer

    def customer(self, cust: str, cps: list[CustomerPeriod]) -> None:
        works: list[_Work] = []
        closed: list[tuple[CustomerPeriod, str]] = []
        for p in cps:
            plan = self.cat.plans[p.plan_id]
            iid = invoice_id(cust, p.plan_id, p.start)
            if iid in self.frozen_ids:
                closed.append((p, iid))
                continue
            minor = self.minor(plan.currency)
            w = _Work(p, iid, plan, minor)
            w.lines = self._usage_lines(cust, w.ps, plan, minor)
            w.lines.extend(self._fee_lines(p, plan, minor))
            works.append(w)
        adjs: list[_Adjustment] = []
        for p, iid in closed:
            adjs.extend(self._closed_adjustments(cust, p, iid))
        if adjs:
            self._place_adjustments(adjs, works, cust)

        promos = self.promos_by_customer.get(cust)
        if promos:
            starts = sorted({p.start for p in cps} | {_from_us(ps) for ps, _ in self.frozen_by_customer.get(cust, ())})
            tz = self.cat.timezone(cust)
            for w in works:
                self._apply_promotions(w, promos, starts, tz)

        grants = self._grants(cust, cps)
        frozen_here = self.frozen_by_customer.get(cust, ())
        if grants or frozen_here:
            self._apply_credits(cust, works, grants, frozen_here)
        for w in works:
            self._finish(cust, w)

    # ---------------------------------------------------------- promotions

    def _buckets(self, w: _Work) -> list[list]:
        """What remains to pay, per bucket: [key, product_item_id, prepayable, remaining] — one
        bucket per item (its usage and minimum lines), per item's adjustments, per fee."""
        if w.buckets is None:
            b: dict[tuple, list] = {}
            for ln in w.lines:
                if ln.kind in ("usage", "minimum"):
                    key = ("item", ln.pid)
                elif ln.kind == "adjustment":
                    key = ("adj", ln.pid)
                elif ln.kind == "fee":
                    key = ("fee", ln.fee_id)
                else:
                    continue
                rec = b.setdefault(key, [key, ln.pid, ln.prepayable, ZERO])
                rec[3] += ln.amount
            w.buckets = list(b.values())
        return w.buckets

    @staticmethod
    def _take(buckets: list[list], amount: Decimal) -> None:
        """Take `amount` off the buckets, in order, from the positive ones."""
        for b in buckets:
            if amount <= 0:
                break
            if b[3] > 0:
                t = min(b[3], amount)
                b[3] -= t
                amount -= t

    def _apply_promotions(self, w: _Work, promos: list[Promotion], starts: list[dt.datetime], tz: str) -> None:
        active = [pr for pr in promos if promotion_applies(pr, w.p.start, starts, tz)]
        if not active:
            return
        active.sort(key=lambda pr: (pr.applies_to == "invoice", to_utc(pr.start, tz), pr.promotion_id))
        buckets = self._buckets(w)
        for pr in active:
            if pr.applies_to == "invoice":
                scope = buckets
            else:
                scope = [b for b in buckets if b[0] == ("item", pr.applies_to)]
            base = sum((b[3] for b in scope), ZERO)
            d = promotion_discount(pr, base, w.minor)
            if d <= 0:
                continue
            self._take(scope, d)
            what = "invoice" if pr.applies_to == "invoice" else self._label(pr.applies_to)
            value = f"{pr.value}%" if pr.type == "percentage" else f"{pr.value} {w.currency}"
            w.lines.append(_Line("discount", d, promotion_id=pr.promotion_id,
                                 pid=None if pr.applies_to == "invoice" else pr.applies_to,
                                 description=f"promotion {pr.promotion_id}: {value} off {what}"))

    # ---------------------------------------------------------- credits

    def _grants(self, cust: str, cps: list[CustomerPeriod]) -> list[Grant]:
        tz = self.cat.timezone(cust)
        grants = [grant_from_credit(c, tz, self.minor(c.currency)) for c in self.credits_by_customer.get(cust, ())]
        rewards = self.rewards_all + self.rewards_by_customer.get(cust, [])
        if rewards and self.reward_qty:
            for p in cps:
                ps = _us(p.start)
                currency = self.cat.plans[p.plan_id].currency
                for r in rewards:
                    q = self.reward_qty.get((cust, ps, r.meter_api_name))
                    if q is None:
                        continue
                    g = reward_grant(r, cust, currency, self.minor(currency), p.start, p.end, q)
                    if g is not None:
                        grants.append(g)
        return grants

    def _apply_credits(self, cust: str, works: list[_Work], grants: list[Grant],
                       frozen_here: Sequence[tuple[int, str]]) -> None:
        """Walk the customer's invoices in period order: replay the frozen ledger of final
        invoices, draw grants on the others (burn-down order), record expiries."""
        balance: dict[str, Decimal] = {g.grant_id: g.amount for g in grants}
        expired: set[str] = set()
        timeline: list[tuple[int, int, object]] = [(ps, 0, iid) for ps, iid in frozen_here]
        timeline += [(w.ps, 1, w) for w in works]
        timeline.sort(key=lambda t: (t[0], t[1]))
        ordered = sorted(grants, key=burn_down_key)
        for _ps, is_work, obj in timeline:
            if not is_work:
                for gid, entry, after in self.frozen_ledger.get(obj, ()):
                    balance[gid] = after if after is not None else ZERO
                    if entry == "expire":
                        expired.add(gid)
                continue
            w: _Work = obj
            start, end = w.p.start, w.p.end
            usable = [g for g in ordered if g.currency == w.currency and g.grant_id not in expired
                      and g.in_effect(start, end) and balance[g.grant_id] > 0]
            if usable:
                buckets = self._buckets(w)
                remaining_total = sum((b[3] for b in buckets), ZERO)
                for g in usable:
                    before = balance[g.grant_id]
                    scope = [b for b in buckets if b[2] and g.pays_item(b[1] if b[0][0] != "fee" else None)]
                    eligible = sum((b[3] for b in scope if b[3] > 0), ZERO)
                    drawn = min(before, eligible, max(remaining_total, ZERO))
                    if drawn > 0:
                        self._take(scope, drawn)
                        remaining_total -= drawn
                        w.lines.append(_Line("credit", drawn, grant_id=g.grant_id,
                                             description=f"prepaid credit {g.grant_id}"))
                    balance[g.grant_id] = before - drawn
                    self.out_ledger.append((g.grant_id, cust, w.iid, "draw", g.currency, w.pe,
                                            before, drawn, ZERO, before - drawn))
            for g in grants:
                if (g.currency == w.currency and g.grant_id not in expired and g.expires_at is not None
                        and g.expires_at <= end):
                    expired.add(g.grant_id)
                    left = balance[g.grant_id]
                    if left > 0:
                        balance[g.grant_id] = ZERO
                        self.out_ledger.append((g.grant_id, cust, w.iid, "expire", g.currency,
                                                _us(g.expires_at), left, ZERO, left, ZERO))

    # ---------------------------------------------------------- totals

    def _finish(self, cust: str, w: _Work) -> None:
        sums = {"usage": ZERO, "minimum": ZERO, "fee": ZERO, "adjustment": ZERO, "discount": ZERO, "credit": ZERO}
        for ln in w.lines:
            sums[ln.kind] += ln.amount
        zero = round_money(ZERO, w.minor)
        subtotal = sums["usage"] + sums["fee"] + sums["minimum"] + sums["adjustment"]
        total = subtotal - sums["discount"] - sums["credit"]
        if total < 0:
            total = zero
        total = total + zero
        cur = self.cat.currencies.get(w.currency)
        if cur is not None:
            base = cur.base_currency
            total_base = round_money(total * cur.rate, self.minor(base))
        else:
            base, total_base = w.currency, total
        status = "draft" if self.as_of < w.p.end + self.grace else "final"
        self.out_invoices.append((
            w.iid, cust, w.p.plan_id, w.p.subscription_id, w.currency, w.ps, w.pe, status,
            sums["usage"] + zero, sums["fee"] + zero, sums["minimum"] + zero, sums["adjustment"] + zero,
            subtotal + zero, sums["discount"] + zero, sums["credit"] + zero, total, base, total_base,
        ))
        self.out_lines.append((w, w.lines))

    # ---------------------------------------------------------- output frames

    def result(self) -> InvoiceResult:
        for i, used in enumerate(self.u_used):
            if not used:
                self.unbilled.append((i, NO_SUBSCRIPTION))
        invoices = self._invoices_frame()
        lines = self._lines_frame()
        ledger = self._ledger_frame()
        unbilled = self._unbilled_frame()
        return InvoiceResult(invoices, lines, ledger, unbilled)

    def _dims(self, refs: list[Optional[int]]) -> pl.Series:
        pool = pl.concat(self._dims_parts) if len(self._dims_parts) > 1 else self._dims_parts[0]
        return pool.gather(pl.Series(refs, dtype=pl.UInt32)).alias("dimensions")

    def _invoices_frame(self) -> pl.DataFrame:
        cols = list(zip(*self.out_invoices)) if self.out_invoices else [[] for _ in range(18)]
        names = ["invoice_id", "customer_id", "plan_id", "subscription_id", "currency", "period_start",
                 "period_end", "status", "usage_amount", "fees_amount", "minimums_amount", "adjustments_amount",
                 "subtotal", "discount", "credits_applied", "total_due", "base_currency", "total_due_base"]
        data = {}
        for name, col in zip(names, cols):
            if name in ("period_start", "period_end"):
                data[name] = _ts(col)
            elif SCHEMAS["invoices"][name] == DEC:
                data[name] = _dec(col)
            else:
                data[name] = pl.Series(list(col), dtype=pl.String)
        df = pl.DataFrame(data).with_columns(pl.lit(self.as_of).cast(TS).alias("as_of"))
        new = conform("invoices", df)
        if self.frozen_invoices.height == 0:
            return new  # built in (customer_id, period_start) order
        out = pl.concat([new, self.frozen_invoices])
        return out.sort("customer_id", "period_start", "invoice_id", maintain_order=True)

    def _lines_frame(self) -> pl.DataFrame:
        flat = [(w, ln) for w, lines in self.out_lines for ln in lines]
        seq = [k for _, lines in self.out_lines for k in range(len(lines))]
        lns = [ln for _, ln in flat]
        iid = [w.iid for w, _ in flat]
        cust = [w.p.customer_id for w, _ in flat]
        curr = [w.currency for w, _ in flat]
        ps = [w.ps for w, _ in flat]
        pe = [w.pe for w, _ in flat]
        lid = [_line_id(ln) for ln in lns]
        kind = [ln.kind for ln in lns]
        corr = [ln.corrects for ln in lns]
        pid = [ln.pid for ln in lns]
        fee = [ln.fee_id for ln in lns]
        promo = [ln.promotion_id for ln in lns]
        grant = [ln.grant_id for ln in lns]
        dref = [ln.dims_ref for ln in lns]
        desc = [ln.description for ln in lns]
        qty = [ln.quantity for ln in lns]
        up = [ln.unit_price for ln in lns]
        amt = [ln.amount for ln in lns]
        has_tiers = [ln.tiers is not None for ln in lns]
        t_count = [len(ln.tiers) if ln.tiers else 0 for ln in lns]
        tl = [t for ln in lns if ln.tiers for t in ln.tiers]
        t_no = [t[0] for t in tl]
        t_q = [t[1] for t in tl]
        t_up = [t[2] for t in tl]
        t_ff = [t[3] for t in tl]
        t_amt = [t[4] for t in tl]
        df = pl.DataFrame({
            "invoice_id": pl.Series(iid, dtype=pl.String), "line_id": pl.Series(lid, dtype=pl.String),
            "kind": pl.Series(kind, dtype=pl.String), "corrects_period": _ts(corr),
            "customer_id": pl.Series(cust, dtype=pl.String), "product_item_id": pl.Series(pid, dtype=pl.String),
            "fee_id": pl.Series(fee, dtype=pl.String), "promotion_id": pl.Series(promo, dtype=pl.String),
            "grant_id": pl.Series(grant, dtype=pl.String), "dimensions": self._dims(dref),
            "description": pl.Series(desc, dtype=pl.String), "quantity": _dec(qty), "unit_price": _dec_shared(up),
            "amount": _dec(amt), "currency": pl.Series(curr, dtype=pl.String),
            "period_start": _ts(ps), "period_end": _ts(pe),
        }).with_row_index("_n")
        flat_tiers = pl.DataFrame({
            "tier": pl.Series(t_no, dtype=pl.Int32), "quantity": _dec(t_q), "unit_price": _dec_shared(t_up),
            "flat_fee": _dec_shared(t_ff), "amount": _dec(t_amt),
        }).to_struct("tiers").to_arrow()
        if isinstance(flat_tiers, pa.ChunkedArray):
            flat_tiers = flat_tiers.combine_chunks()
        offsets = [0]
        for n_tiers in t_count:
            offsets.append(offsets[-1] + n_tiers)
        tiers = pl.from_arrow(pa.ListArray.from_arrays(
            pa.array(offsets, type=pa.int32()), flat_tiers,
            mask=pa.array([not h for h in has_tiers], type=pa.bool_())))
        df = df.with_columns(pl.Series("tiers", tiers).cast(pl.List(TIER))).drop("_n")
        new = conform("line_items", df).with_columns(pl.lit(0, dtype=pl.Int64).alias("_src"),
                                                    pl.Series("_seq", seq, dtype=pl.Int64))
        if self.frozen_lines.height == 0:
            return new.drop("_src", "_seq")  # built in (customer_id, period_start, line) order
        old = self.frozen_lines.with_columns(pl.lit(1, dtype=pl.Int64).alias("_src"),
                                             pl.int_range(pl.len(), dtype=pl.Int64).alias("_seq"))
        out = pl.concat([new, old])
        return out.sort("customer_id", "period_start", "invoice_id", "_src", "_seq",
                        maintain_order=True).drop("_src", "_seq")

    def _ledger_frame(self) -> pl.DataFrame:
        rows = self.out_ledger
        cols = list(zip(*rows)) if rows else [[] for _ in range(10)]
        df = pl.DataFrame({
            "grant_id": pl.Series(list(cols[0]), dtype=pl.String),
            "customer_id": pl.Series(list(cols[1]), dtype=pl.String),
            "invoice_id": pl.Series(list(cols[2]), dtype=pl.String),
            "entry": pl.Series(list(cols[3]), dtype=pl.String),
            "currency": pl.Series(list(cols[4]), dtype=pl.String),
            "at": _ts(cols[5]),
            "balance_before": _dec(cols[6]), "drawn": _dec(cols[7]), "expired": _dec(cols[8]),
            "balance_after": _dec(cols[9]),
        })
        new = conform("credit_ledger", df).with_columns(pl.lit(1, dtype=pl.Int64).alias("_src"),
                                                         pl.int_range(pl.len(), dtype=pl.Int64).alias("_seq"))
        old = self.frozen_ledger_df.with_columns(pl.lit(0, dtype=pl.Int64).alias("_src"),
                                                 pl.int_range(pl.len(), dtype=pl.Int64).alias("_seq"))
        out = pl.concat([old, new])
        # period order of each row's invoice
        inv = pl.concat([
            pl.DataFrame({"invoice_id": [r[0] for r in self.out_invoices],
                          "_ps": [r[5] for r in self.out_invoices]},
                         schema={"invoice_id": pl.String, "_ps": pl.Int64}),
            self.frozen_invoices.select("invoice_id", pl.col("period_start").dt.epoch("us").alias("_ps")),
        ])
        out = out.join(inv, on="invoice_id", how="left")
        return out.sort("customer_id", "_ps", "_src", "_seq", maintain_order=True).drop("_src", "_seq", "_ps")

    def _unbilled_frame(self) -> pl.DataFrame:
        rows = sorted(self.unbilled)
        idx = pl.Series([i for i, _ in rows], dtype=pl.UInt32)
        u = self.usage.select(pl.all().gather(idx)).with_columns(pl.Series("reason", [r for _, r in rows], dtype=pl.String))
        parts = [u]
        if self.pending:
            parts.append(pl.DataFrame({
                "customer_id": pl.Series([c for c, _ in self.pending], dtype=pl.String),
                "period_start": _ts([a.closed_ps for _, a in self.pending]),
                "product_item_id": pl.Series([a.pid for _, a in self.pending], dtype=pl.String),
                "dimensions": self._dims([a.dims_ref for _, a in self.pending]),
                "quantity": _dec([a.quantity for _, a in self.pending]),
                "reason": pl.Series([ADJUSTMENT_PENDING] * len(self.pending), dtype=pl.String),
            }))
        df = pl.concat(parts, how="diagonal_relaxed")
        meters = {pid: it.meter_api_name for pid, it in self.cat.product_items.items()}
        df = df.with_columns(pl.col("product_item_id").replace_strict(meters, default=None, return_dtype=pl.String)
                             .alias("meter_api_name"))
        out = conform("unbilled_usage", df)
        return out.sort("customer_id", "period_start", "product_item_id", "reason", maintain_order=True)


_LINE_IDS: dict[tuple, str] = {}


def _line_id(ln: _Line) -> str:
    """Deterministic within an invoice: a hash of what the line is (kind, item, dimension
    combination, fee, promotion, grant, corrected period), never of its position."""
    key = (ln.kind, ln.pid, ln.dk, ln.fee_id, ln.promotion_id, ln.grant_id, ln.corrects, ln.tag)
    v = _LINE_IDS.get(key)
    if v is None:
        v = f"{ln.kind}-" + _h(*key)[:12]
        if len(_LINE_IDS) < 100_000:
            _LINE_IDS[key] = v
    return v


def _dec(values) -> pl.Series:
    """Decimals → Decimal(38, 9) through their exact text (much faster than from objects)."""
    values = list(values)
    try:
        text = list(map(str, values)) if None not in values else [None if v is None else str(v) for v in values]
    except TypeError:
        text = [None if v is None else str(v) for v in values]
    return pl.Series(text, dtype=pl.String).cast(DEC, strict=True)


def _dec_shared(values) -> pl.Series:
    """`_dec` for columns of few distinct Decimal objects (catalogue prices): one text per object."""
    memo: dict[int, Optional[str]] = {}
    text = []
    for v in values:
        k = id(v)
        t = memo.get(k)
        if t is None and v is not None:
            t = memo[k] = str(v)
        text.append(t)
    return pl.Series(text, dtype=pl.String).cast(DEC, strict=True)


def _ts(values) -> pl.Series:
    return pl.Series(list(values), dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


# ------------------------------------------------------------------ entry point


def build_invoices(catalog: Catalog, periods: Sequence[CustomerPeriod] | pl.DataFrame, usage: pl.DataFrame,
                   as_of: dt.datetime, *, frozen: Optional[FrozenState] = None,
                   reward_usage: Optional[pl.DataFrame] = None) -> InvoiceResult:
    """Price a set of customers' billing periods into invoices (SPEC §5).

    periods       every billing period of the customers to price (`customer_periods`), as
                  CustomerPeriod objects or a frame with their columns; include a customer's
                  earlier (final) periods too: promotions count periods and credit balances carry
                  over in period order
    usage         customer_id, period_start, product_item_id, dimensions (the price's dimension
                  keys → values; empty or null without price dimensions), quantity — one row per
                  line, metered by the caller with the item's filter
    as_of         the run's instant: an invoice is draft while as_of < period_end + grace period
    frozen        final invoices, lines and ledger of earlier runs (not recomputed; late usage
                  for them is billed as adjustment lines)
    reward_usage  customer_id, period_start, meter_api_name, quantity — for rewards
    """
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    as_of = as_of.astimezone(UTC)
    plist = periods_from_frame(periods) if isinstance(periods, pl.DataFrame) else list(periods)
    plist.sort(key=lambda p: (p.customer_id, p.start))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of small objects: a collection pass per batch costs more than the work
    try:
        return _build(catalog, plist, usage, as_of, frozen, reward_usage)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build(catalog, plist, usage, as_of, frozen, reward_usage) -> InvoiceResult:
    with exact():
        eng = _Engine(catalog, plist, usage, as_of, frozen, reward_usage)
        i = 0
        while i < len(plist):
            j = i
            cust = plist[i].customer_id
            while j < len(plist) and plist[j].customer_id == cust:
                j += 1
            eng.customer(cust, plist[i:j])
            i = j
        return eng.result()
