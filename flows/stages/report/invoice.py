"""One invoice's page: its lines by section (with tiers, included units, minimums, fees,
corrections, discounts and credits), its totals exactly as in the `invoices` row, its charts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from catalog import Lake
from flows.stages.report.charts import invoice_charts
from flows.stages.report.data import ReportData
from flows.stages.report.format import day_text, dims_of, period_text, invoice_filename, money, quantity, taken_off
from flows.stages.report.templates import CSS, INVOICE, template
from transforms.shared.windows import zone
from transforms.pricing.periods import local_days
from transforms.pricing.rate import resolve_price

_SECTIONS = {"usage": "Usage", "minimum": "Minimum commitments", "fee": "Fixed fees",
             "adjustment": "Corrections to earlier periods", "discount": "Discounts", "credit": "Prepaid credits"}


def _tier_label(price, tier_no: int, model: str | None) -> str:
    """`tier 2 (10,000 – 100,000)`: the tier's range of units, from the catalogue's price."""
    if price is None or model not in ("graduated", "volume") or not 1 <= tier_no <= len(price.tiers):
        return f"tier {tier_no}"
    lo = Decimal(0) if tier_no == 1 else price.tiers[tier_no - 2].up_to
    up = price.tiers[tier_no - 1].up_to
    span = f"up to {quantity(up)}" if tier_no == 1 and up is not None else (
        f"over {quantity(lo)}" if up is None else f"{quantity(lo)} – {quantity(up)}")
    if tier_no == 1 and up is None:
        span = "all units"
    return f"{'volume ' if model == 'volume' else ''}tier {tier_no} ({span})"


def _line_view(data: ReportData, r: dict, ln: dict, minor: int) -> dict:
    kind = ln["kind"]
    dims = dims_of(ln["dimensions"])
    dim_text = ", ".join(f"{k}={v}" for k, v in sorted(dims.items()))
    pid = ln["product_item_id"]
    pi = data.cat.product_items.get(pid) if pid else None
    name = (pi.invoice_label or pi.name or pid) if pi else (pid or "")
    view = {"line_id": ln["line_id"], "kind": kind, "note": "", "subrows": [],
            "quantity": quantity(ln["quantity"]), "unit_price": money(ln["unit_price"], minor),
            "amount": money(ln["amount"], minor)}
    if kind in ("discount", "credit"):
        view["amount"] = taken_off(ln["amount"], minor)
    if kind == "usage":
        _usage_view(data, r, ln, minor, view, name, dim_text)
    elif kind == "minimum":
        view["label"] = f"{name}: minimum commitment" if pi else (ln["description"] or "Minimum commitment")
        plan = data.cat.plans.get(r["plan_id"])
        item = next((i for i in (plan.items if plan else []) if i.product_item_id == pid), None)
        minimum = item.price.minimum if item else None
        view["note"] = (f"tops this item up to its period minimum of {money(minimum, minor)}" if minimum is not None
                        else (ln["description"] or ""))
    elif kind == "adjustment":
        when = ln["corrects_period"]
        tz = data.tz(r["customer_id"])
        view["label"] = name + (f" ({dim_text})" if dim_text else "") + " — correction"
        view["note"] = (f"late or cancelled usage of the period starting {day_text(when.astimezone(zone(tz)).date())}"
                        if when else "late or cancelled usage of an earlier period")
    elif kind == "fee":
        view["label"] = ln["description"] or f"Fee {ln['fee_id']}"
        if ln["quantity"] is not None and ln["quantity"] != 1:
            view["note"] = "prorated for the part of the period covered"
    elif kind == "discount":
        d = ln["description"] or f"promotion {ln['promotion_id']}"
        view["label"] = d[:1].upper() + d[1:]
    elif kind == "credit":
        view["label"] = f"Prepaid credit {ln['grant_id']}" if ln["grant_id"] else (ln["description"] or "Prepaid credit")
        bal = data.balance_after(r["invoice_id"], ln["grant_id"])
        if bal is not None:
            view["note"] = f"balance after this invoice: {money(bal, minor)} {ln['currency'] or r['currency']}"
    else:
        view["label"] = ln["description"] or kind
    return view


def _usage_view(data: ReportData, r: dict, ln: dict, minor: int, view: dict, name: str, dim_text: str) -> None:
    """A usage line's label, note and sub-rows: included units, packages or tiers, a cap."""
    dims = dims_of(ln["dimensions"])
    pid = ln["product_item_id"]
    view["label"] = name + (f" ({dim_text})" if dim_text else "")
    plan = data.cat.plans.get(r["plan_id"])
    item = next((i for i in (plan.items if plan else []) if i.product_item_id == pid), None)
    price = resolve_price(item.price, dims) if item else None
    model = price.model if price else None
    tiers = ln["tiers"] or []
    if price is not None and price.included_units and ln["quantity"] is not None:
        inc = min(ln["quantity"], price.included_units)
        view["subrows"].append({"label": f"first {quantity(price.included_units)} included", "quantity": quantity(inc),
                                "unit_price": "", "amount": money(Decimal(0), minor)})
    if model == "package" and tiers:
        t = tiers[0]
        view["note"] = f"packages of {quantity(price.package_size)} at {quantity(price.package_price)}" \
                       + (" (pro rata)" if price.allow_partial else "")
        view["subrows"].append({"label": "packages", "quantity": quantity(t["quantity"]),
                                "unit_price": money(t["unit_price"], minor), "amount": money(t["amount"], minor)})
    elif model in ("graduated", "volume") or len(tiers) > 1 or any((t["flat_fee"] or 0) for t in tiers):
        view["note"] = {"graduated": "graduated pricing: each tier prices the units that fall in it",
                        "volume": "volume pricing: every unit at the rate of the tier the total falls in"}.get(model, "")
        if ln["unit_price"] is None:
            view["unit_price"] = "tiered"
        for t in tiers:
            up = money(t["unit_price"], minor) + (f" + {money(t['flat_fee'], minor)} flat" if t["flat_fee"] else "")
            view["subrows"].append({"label": _tier_label(price, t["tier"], model), "quantity": quantity(t["quantity"]),
                                    "unit_price": up, "amount": money(t["amount"], minor)})
    if price is not None and price.maximum is not None and ln["amount"] is not None and ln["amount"] >= price.maximum:
        view["note"] = (view["note"] + "; " if view["note"] else "") + f"capped at {money(price.maximum, minor)}"


def invoice_page(data: ReportData, invoice_id: str) -> str:
    """The HTML of one invoice."""
    r = data.invoice(invoice_id)
    cur = r["currency"]
    minor = data.minor(cur)
    lines = data.lines_of(invoice_id)
    sections = []
    for ln in lines:
        if not sections or sections[-1]["kind"] != ln["kind"]:
            sections.append({"kind": ln["kind"], "title": _SECTIONS.get(ln["kind"], ln["kind"].title()), "lines": []})
        sections[-1]["lines"].append(_line_view(data, r, ln, minor))

    tz = data.tz(r["customer_id"])
    cust = data.cat.customers.get(r["customer_id"])
    plan = data.cat.plans.get(r["plan_id"])
    cadence = ""
    if plan:
        bp = plan.billing_period
        cadence = ("every " + (f"{bp.count} {bp.interval}s" if bp.count > 1 else bp.interval)) if bp.count > 1 else {
            "day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}[bp.interval]
    base = None
    if r["base_currency"] and r["base_currency"] != cur and r["total_due_base"] is not None:
        rate = data.cat.currencies[cur].rate if cur in data.cat.currencies else None
        base = {"currency": r["base_currency"], "amount": money(r["total_due_base"], data.minor(r["base_currency"])),
                "rate": quantity(rate) if rate is not None else "?"}
    totals = {
        "usage": money(r["usage_amount"], minor), "minimums": money(r["minimums_amount"], minor),
        "fees": money(r["fees_amount"], minor), "adjustments": money(r["adjustments_amount"], minor),
        "subtotal": money(r["subtotal"], minor), "discount": taken_off(r["discount"], minor),
        "credits": taken_off(r["credits_applied"], minor), "total_due": money(r["total_due"], minor),
        "show_minimums": bool(r["minimums_amount"]), "show_adjustments": bool(r["adjustments_amount"]),
    }
    a, b = local_days(r["period_start"], r["period_end"], tz)
    return template(INVOICE).render(
        inv=r, css=CSS, sections=sections, totals=totals, base=base,
        customer={"name": cust.customer_name if cust and cust.customer_name else r["customer_id"],
                  "email": cust.email if cust else None},
        period={"text": period_text(r["period_start"], r["period_end"], tz), "zone": tz, "cadence": cadence or "billing period",
                "note": f"{(b - a).days + 1} days"},
        plan_name=(f"{plan.name} ({plan.plan_id})" if plan and plan.name else r["plan_id"]),
        as_of=f"{r['as_of']:%Y-%m-%d %H:%M} UTC" if r["as_of"] else "",
        charts=invoice_charts(data, r))


def render_invoice(lk: Lake, invoice_id: str, data: ReportData | None = None, out: Path | None = None) -> Path:
    """The invoice's page in `out` (default <lake>/reports/)."""
    data = data or ReportData.load(lk)
    page = invoice_page(data, invoice_id)
    out = out or lk.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / invoice_filename(invoice_id)
    write_page(path, page)
    return path


def write_page(path: Path, text: str) -> None:
    """Write-then-rename; a page whose file already holds the same text is left as it is (a final
    invoice's page never changes: rendering a month again rewrites nothing)."""
    try:
        if path.stat().st_size == len(text.encode("utf-8")) and path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
