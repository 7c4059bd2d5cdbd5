"""References between the catalogue's tables (SPEC §3), checked over every record, an invalid
record's readable references too.

A reference to a record that is present but invalid is not reported (the record's own problem
is); one into a file that could not be read is not judged. Subscriptions of a customer must not
overlap.
"""

from __future__ import annotations

from typing import Any

from catalog.config import ISO_MINOR_UNITS, Channel, PlanItem, Settings, to_utc


class _View:
    """What cross-checks see of one table: every record, valid (a model) or not (its raw mapping)."""

    def __init__(self, label: str, key: str):
        self.label = label
        self.key = key
        self.read = True                      # False: the file could not be read (references into it are not judged)
        self.present: set[str] = set()        # keys of every record, valid or not
        self.records: list[tuple[int, Any]] = []  # (record number, model or raw mapping) of a YAML table
        self.flat = None                      # catalog.flat.FlatResult of a flat table

    def where(self, number: int, ident: Any, label: str | None = None) -> str:
        shown = f" ({self.key}={ident})" if ident is not None else ""
        return f"{label or self.label}: record {number}{shown}"

    def unknown(self, value: Any) -> bool:
        """A reference to this table names nothing in it (only judged when the file was read)."""
        return self.read and isinstance(value, str) and value not in self.present


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)



def cross_check(v: dict[str, _View], settings: Settings | None, MISSING: Any) -> list[str]:
    """Every reference problem of the tables `v` (name -> what the checks see of it), in the
    order: items, plans, currencies, subscriptions, credits and promotions, rewards, alerts,
    settings."""
    return (_check_items_plans_currencies(v)
            + _check_subscriptions(v["subscriptions"], v["customers"], v["plans"], MISSING)
            + _check_credits_promotions(v, MISSING)
            + _check_rewards_alerts_settings(v, settings))


def _unknown_currency(currencies: _View, code: Any) -> bool:
    return isinstance(code, str) and code not in ISO_MINOR_UNITS and currencies.unknown(code)


def _check_items_plans_currencies(v: dict[str, _View]) -> list[str]:
    """Each item's meter; each plan's currency and items (known, listed once); each currency's base."""
    p: list[str] = []
    meters, items, plans, currencies = (v[t] for t in ("meters", "product_items", "plans", "currencies"))
    for i, m in items.records:
        ref = _get(m, "meter_api_name")
        if meters.unknown(ref):
            p.append(f"{items.where(i, _get(m, 'product_item_id'))}: meter_api_name: unknown meter {ref!r}")
    for i, pl_ in plans.records:
        where = plans.where(i, _get(pl_, "plan_id"))
        cur = _get(pl_, "currency")
        if _unknown_currency(currencies, cur):
            p.append(f"{where}: currency: unknown currency {cur!r} (not ISO 4217 and not in currencies)")
        seen = set()
        its = _get(pl_, "items", [])
        for j, it in enumerate(its if isinstance(its, list) else []):
            pid = _get(it, "product_item_id") if isinstance(it, (dict, PlanItem)) else None
            if not isinstance(pid, str):
                continue
            if items.unknown(pid):
                p.append(f"{where}: items[{j}].product_item_id: unknown product item {pid!r}")
            if pid in seen:
                p.append(f"{where}: items[{j}].product_item_id: listed twice")
            seen.add(pid)
    for i, c in currencies.records:
        base = _get(c, "base_currency")
        if isinstance(base, str) and base not in ISO_MINOR_UNITS:
            p.append(f"{currencies.where(i, _get(c, 'code'))}: base_currency: {base!r} is not an ISO 4217 currency")
    return p


def _check_credits_promotions(v: dict[str, _View], MISSING: Any) -> list[str]:
    """Each grant's and promotion's customer; each grant's currency and items; each promotion's target."""
    p: list[str] = []
    items, customers, currencies = v["product_items"], v["customers"], v["currencies"]
    credits = v["credits"]
    if credits.flat is not None:
        f = credits.flat.fields
        gid, cid = f["grant_id"], f["customer_id"]
        for r, c in enumerate(cid):
            if customers.unknown(c):
                p.append(f"{credits.where(r + 1, _ident(gid[r], MISSING), 'catalog/credits')}: customer_id: "
                         f"unknown customer {c!r}")
    promotions = v["promotions"]
    for i, r in promotions.records:
        c = _get(r, "customer_id")
        if customers.unknown(c):
            p.append(f"{promotions.where(i, _get(r, 'promotion_id'), 'catalog/promotions')}: customer_id: "
                     f"unknown customer {c!r}")
    if credits.flat is not None:
        f = credits.flat.fields
        for r, (g, cur, pids) in enumerate(zip(f["grant_id"], f["currency"], f["product_item_ids"])):
            where = credits.where(r + 1, _ident(g, MISSING), "catalog/credits")
            if _unknown_currency(currencies, cur):
                p.append(f"{where}: currency: unknown currency {cur!r}")
            for pid in pids if isinstance(pids, list) else []:
                if items.unknown(pid):
                    p.append(f"{where}: product_item_ids: unknown product item {pid!r}")
    for i, pr in promotions.records:
        to = _get(pr, "applies_to", "invoice")
        if isinstance(to, str) and to != "invoice" and items.read and to not in items.present:
            p.append(f"{promotions.where(i, _get(pr, 'promotion_id'))}: applies_to: "
                     f"must be 'invoice' or a product_item_id, got {to!r}")
    return p


def _check_rewards_alerts_settings(v: dict[str, _View], settings: Settings | None) -> list[str]:
    """Each reward's meter and customer; each alert's meter, item and email channels (smtp); the
    default plan."""
    p: list[str] = []
    meters, items, plans, customers = (v[t] for t in ("meters", "product_items", "plans", "customers"))
    rewards = v["rewards"]
    for i, r in rewards.records:
        where = rewards.where(i, _get(r, "reward_id"))
        m, c = _get(r, "meter_api_name"), _get(r, "customer_id", "*")
        if meters.unknown(m):
            p.append(f"{where}: meter_api_name: unknown meter {m!r}")
        if c != "*" and customers.unknown(c):
            p.append(f"{where}: customer_id: unknown customer {c!r}")
    alerts = v["alerts"]
    for i, a in alerts.records:
        where = alerts.where(i, _get(a, "alert_id"))
        m, it = _get(a, "meter_api_name"), _get(a, "product_item_id")
        if m and meters.unknown(m):
            p.append(f"{where}: meter_api_name: unknown meter {m!r}")
        if it and items.unknown(it):
            p.append(f"{where}: product_item_id: unknown product item {it!r}")
        chans = _get(a, "channels", [])
        if (settings is not None and settings.smtp is None and isinstance(chans, list)
                and any(_get(c, "type") == "email" for c in chans if isinstance(c, (dict, Channel)))):
            p.append(f"{where}: channels: an email channel needs smtp in settings.yaml")
    if settings is not None and settings.default_plan_id and plans.unknown(settings.default_plan_id):
        p.append(f"catalog/settings.yaml: default_plan_id: unknown plan {settings.default_plan_id!r}")
    return p


def _ident(value: Any, MISSING: Any) -> Any:
    return None if value is MISSING else value


def _check_subscriptions(subs: _View, customers: _View, plans: _View, MISSING: Any) -> list[str]:
    """Every subscription's customer and plan; `end` after `start`; a customer's subscriptions do not overlap."""
    p: list[str] = []
    if subs.flat is None:
        return p
    f = subs.flat.fields
    sid, cid, pid, start, end = (f[k] for k in ("subscription_id", "customer_id", "plan_id", "start", "end"))
    label = "catalog/subscriptions"
    tz_of: dict[str, str] = {}
    if customers.flat is not None:
        cf = customers.flat.fields
        tz_of = {c: z for c, z in zip(cf["customer_id"], cf["timezone"]) if z is not MISSING and z != "UTC"}
    skip = subs.flat.duplicates | subs.flat.bad["customer_id"] | subs.flat.bad["start"] | subs.flat.bad["end"]
    timed: dict[str, list[int]] = {}
    for r in range(len(sid)):
        c = cid[r]
        if customers.unknown(c):
            p.append(f"{subs.where(r + 1, _ident(sid[r], MISSING), label)}: customer_id: unknown customer {c!r}")
            continue
        if plans.unknown(pid[r]):
            p.append(f"{subs.where(r + 1, _ident(sid[r], MISSING), label)}: plan_id: unknown plan {pid[r]!r}")
        s, e = start[r], end[r]
        if r in skip or c is MISSING or s is MISSING:
            continue
        if e is not MISSING and e is not None:
            tz = tz_of.get(c, "UTC")
            if to_utc(e, tz) <= to_utc(s, tz):
                p.append(f"{subs.where(r + 1, _ident(sid[r], MISSING), label)}: end: must be after start")
        timed.setdefault(c, []).append(r)
    for c, rows in timed.items():
        if len(rows) < 2:
            continue
        tz = tz_of.get(c, "UTC")
        rows = sorted(rows, key=lambda r: to_utc(start[r], tz))
        for a, b in zip(rows, rows[1:]):
            ea = end[a]
            if ea is MISSING or ea is None or to_utc(ea, tz) > to_utc(start[b], tz):
                p.append(f"{label}: subscription_id={sid[b]}: start: overlaps subscription {sid[a]} of customer {c}")
    return p

