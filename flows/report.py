"""`meterbill report`: self-contained HTML invoices and period summary pages under `<lake>/reports/`.

Every page is one file with inline CSS and inline SVG charts: no scripts, no fonts, images or
style sheets from elsewhere, so it opens the same from a mail attachment, a file share or a
Prefect artifact link, and prints on A4/Letter.

- `render_invoice(lk, invoice_id)` → `invoice-<id>.html`: header (customer, billing period in the
  customer's time zone, plan, status), line items by section (usage with its tier breakdown and
  included units, minimums, fees, corrections, discounts, prepaid credits with the grant's balance
  after this invoice), the totals exactly as in the `invoices` row, and one small daily usage
  chart per meter billed on the invoice.
- `render_period(lk, period)` → `period-<period>.html` plus an invoice page for each final
  invoice of the period (drafts are listed, not rendered: they change until their period closes).

Pages are made on demand (`meterbill report`); `meterbill run` renders none (SPEC §8). A batch of
pages costs what its data costs: `ReportData.prepare` reads the invoices, lines, ledger draws and
events of up to BATCH invoices in one pass each, and computes their charts with one usage query
per meter and billing period (all the customers of that period at once), not one per invoice.

Decisions where the SPEC is silent:

- `--period 2026-10-01` selects the invoices whose billing period starts on that *local* date
  (each customer's time zone, the calendar the catalogue's subscription dates are written in);
  `--period 2026-10` selects every invoice whose period starts in that month: with periods
  anchored on each subscription's start day, a month is what a finance team closes. Without
  `--invoice`/`--period`: the latest month that has a final invoice.
- A billing period `[start, end)` is shown as its first and last local day (`1 Nov 2026 – 30 Nov
  2026`), the way Stripe, Lago and Orb print periods (`transforms.pricing.periods.local_days`, the
  rule of the terminal tables too).
- Amounts are shown with the currency's minor units (ISO 4217 or the custom currency's), never
  rounded further; tier amounts, which are unrounded by design (SPEC §5.1), keep their digits.
- The usage charts are computed with the usage query (`transforms.metering.usage_query`) over the
  customer's events, daily in the customer's time zone, so non-additive meters (unique users,
  high watermarks, ...) show true daily values; a draft's chart stops at the run's `as_of`.
  Charts are display only (floats are fine there); every number in a table is exact.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import polars as pl
from jinja2 import Environment
from markupsafe import Markup, escape

from catalog import Lake, load_catalog
from catalog.config import Catalog
from catalog.meter_types import STATEFUL_TYPES
from catalog.schemas import TS
from flows.common import UsageError
from transforms.metering import apply_cancellations, usage_query
from transforms.shared.windows import to_instant, zone
from transforms.pricing.periods import local_days, with_local_days
from transforms.pricing.rate import resolve_price

UTC = dt.timezone.utc
MINUS = "\u2212"
BATCH = 5_000  # invoices whose data one `ReportData.prepare` holds in memory
WRITES_PENDING = 256  # rendered pages waiting for their file to be written

CSS = Markup("""
*{box-sizing:border-box}
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
 margin:0;background:#f4f5f8;font-size:14px;line-height:1.45}
.page{background:#fff;max-width:900px;margin:2rem auto;padding:2.5rem 3rem;border-radius:10px;box-shadow:0 1px 4px rgba(20,30,60,.08)}
h1{font-size:1.7rem;margin:0;letter-spacing:-.01em}h2{font-size:1rem;margin:2rem 0 .6rem}
.muted{color:#6b7383}.small{font-size:.82rem}.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem}
.top{display:flex;justify-content:space-between;align-items:flex-start;gap:1rem}
.badge{display:inline-block;padding:.2rem .65rem;border-radius:1rem;font-size:.78rem;font-weight:600;text-transform:uppercase;letter-spacing:.05em}
.badge.final{background:#e6f4ea;color:#137333}.badge.draft{background:#fff4e5;color:#a35200}
.banner{margin-top:1rem;padding:.6rem .9rem;border-radius:6px;background:#fff4e5;color:#7a3d00;font-size:.88rem}
.meta{display:grid;grid-template-columns:repeat(3,1fr);gap:1.2rem;margin:1.6rem 0;padding:1.2rem 0;border-top:1px solid #e3e6ec;border-bottom:1px solid #e3e6ec}
.meta .label{font-size:.72rem;text-transform:uppercase;letter-spacing:.06em;color:#6b7383;margin-bottom:.25rem}
.due-box{display:flex;justify-content:space-between;align-items:baseline;background:#f1f5ff;border-radius:8px;padding:1rem 1.2rem}
.due-box .amount{font-size:1.9rem;font-weight:700;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%}
th,td{padding:.5rem .6rem;text-align:left;vertical-align:top}
thead th{font-size:.72rem;text-transform:uppercase;letter-spacing:.06em;color:#6b7383;border-bottom:2px solid #1d2330}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.line td{border-top:1px solid #e3e6ec}
tr.section td{padding-top:1.1rem;font-size:.72rem;font-weight:700;text-transform:uppercase;letter-spacing:.06em;color:#1a56db;border:none}
tr.sub td{font-size:.82rem;color:#6b7383;padding-top:.1rem;padding-bottom:.15rem}tr.sub td:first-child{padding-left:1.6rem}
.totals{margin:1.2rem 0 0 auto;width:360px}.totals td{padding:.3rem .6rem}
.totals tr.strong td{font-weight:600;border-top:1px solid #e3e6ec}
.totals tr.due td{font-weight:700;font-size:1.15rem;border-top:2px solid #1d2330;padding-top:.6rem}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:1rem 1.6rem}
.chart svg{width:100%;height:auto;display:block}.chart h3{font-size:.85rem;margin:0 0 .2rem}.chart .total{font-size:.78rem;color:#6b7383;margin-bottom:.3rem}
svg text{font-size:10px;fill:#6b7383;font-family:inherit}
.kpis{display:flex;gap:1rem;margin:1.4rem 0}.kpi{flex:1;background:#f1f5ff;border-radius:8px;padding:.8rem 1rem}
.kpi .v{font-size:1.35rem;font-weight:700;font-variant-numeric:tabular-nums}
.nowrap{white-space:nowrap}a{color:#1a56db;text-decoration:none}a:hover{text-decoration:underline}
footer{margin-top:2rem;padding-top:1rem;border-top:1px solid #e3e6ec;font-size:.8rem;color:#6b7383}
@media print{body{background:#fff}.page{box-shadow:none;margin:0;max-width:none;padding:0}}
""")

INVOICE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Invoice {{ inv.invoice_id }} · {{ customer.name }} · {{ period.text }}</title>
<style>{{ css }}</style></head><body><main class="page">
<div class="top">
 <div><h1>Invoice</h1><div class="muted mono" id="invoice-id">{{ inv.invoice_id }}</div></div>
 <div style="text-align:right"><span class="badge {{ inv.status }}" id="status">{{ inv.status }}</span>
  <div class="small muted" style="margin-top:.4rem">as of {{ as_of }}</div></div>
</div>
{% if inv.status != "final" %}<div class="banner" id="draft-note"><strong>Draft.</strong> A preview of a billing period that is still open:
 usage and amounts change until the period closes and the invoice is final.</div>{% endif %}
<section class="meta">
 <div><div class="label">Bill to</div><strong id="customer-name">{{ customer.name }}</strong>
  <div class="muted mono">{{ inv.customer_id }}</div>{% if customer.email %}<div class="muted">{{ customer.email }}</div>{% endif %}</div>
 <div><div class="label">Billing period</div><strong id="period">{{ period.text }}</strong>
  <div class="muted small">{{ period.zone }}{% if period.note %} · {{ period.note }}{% endif %}</div></div>
 <div><div class="label">Plan</div><strong>{{ plan_name }}</strong>
  <div class="muted small">{{ period.cadence }} · amounts in {{ inv.currency }}</div></div>
</section>
<div class="due-box"><div><div class="muted small">{{ "Amount due" if inv.status == "final" else "Amount due so far" }}</div>
 <div class="amount">{{ inv.currency }} {{ totals.total_due }}</div></div>
 {% if base %}<div class="muted">≈ {{ base.currency }} {{ base.amount }} at {{ base.rate }} {{ base.currency }}/{{ inv.currency }}</div>{% endif %}</div>

<h2>Line items</h2>
<table id="lines"><thead><tr><th>Description</th><th class="n">Quantity</th><th class="n">Unit price</th><th class="n">Amount ({{ inv.currency }})</th></tr></thead>
<tbody>
{% for s in sections %}<tr class="section"><td colspan="4">{{ s.title }}</td></tr>
{% for l in s.lines %}<tr class="line" data-line-id="{{ l.line_id }}" data-kind="{{ l.kind }}"><td>{{ l.label }}{% if l.note %}<div class="small muted">{{ l.note }}</div>{% endif %}</td>
<td class="n">{{ l.quantity }}</td><td class="n">{{ l.unit_price }}</td><td class="n amount">{{ l.amount }}</td></tr>
{% for t in l.subrows %}<tr class="sub"><td>{{ t.label }}</td><td class="n">{{ t.quantity }}</td><td class="n">{{ t.unit_price }}</td><td class="n">{{ t.amount }}</td></tr>
{% endfor %}{% endfor %}{% else %}<tr><td colspan="4" class="muted">No lines.</td></tr>{% endfor %}
</tbody></table>

<table class="totals" id="totals">
<tr><td>Usage</td><td class="n" id="usage">{{ totals.usage }}</td></tr>
{% if totals.show_minimums %}<tr><td>Minimum commitments</td><td class="n" id="minimums">{{ totals.minimums }}</td></tr>{% endif %}
<tr><td>Fees</td><td class="n" id="fees">{{ totals.fees }}</td></tr>
{% if totals.show_adjustments %}<tr><td>Corrections</td><td class="n" id="adjustments">{{ totals.adjustments }}</td></tr>{% endif %}
<tr class="strong"><td>Subtotal</td><td class="n" id="subtotal">{{ totals.subtotal }}</td></tr>
<tr><td>Discounts</td><td class="n" id="discount">{{ totals.discount }}</td></tr>
<tr><td>Prepaid credits</td><td class="n" id="credits">{{ totals.credits }}</td></tr>
<tr class="due"><td>Total due ({{ inv.currency }})</td><td class="n" id="total-due">{{ totals.total_due }}</td></tr>
{% if base %}<tr><td class="muted">in {{ base.currency }}</td><td class="n muted" id="total-due-base">{{ base.amount }}</td></tr>{% endif %}
</table>

<h2>Daily usage this period</h2>{% if not charts %}<p class="muted">No metered usage in this period.</p>{% endif %}
{% if charts %}
<div class="charts">{% for c in charts %}<div class="chart"><h3>{{ c.title }}</h3>
<div class="total">{{ c.total }}</div>{{ c.svg }}</div>{% endfor %}</div>{% endif %}
<footer>Invoice {{ inv.invoice_id }} for {{ customer.name }}, {{ period.text }}. Generated by meterbill from the warehouse as of {{ as_of }}.
Amounts are exact; each line is rounded once to the currency's minor units and every total is the sum of its lines.</footer>
</main></body></html>"""

SUMMARY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Billing summary · {{ title }}</title><style>{{ css }}</style></head><body><main class="page">
<div class="top"><div><h1>Billing summary</h1><div class="muted">{{ title }}</div></div>
<div class="small muted" style="text-align:right">as of {{ as_of }}</div></div>
<div class="kpis">
 <div class="kpi"><div class="muted small">Invoices</div><div class="v" id="invoice-count">{{ n }}</div>
  <div class="small muted">{{ n_final }} final · {{ n_draft }} draft</div></div>
 {% for t in currency_totals %}<div class="kpi"><div class="muted small">Total due in {{ t.currency }}</div>
  <div class="v">{{ t.total }}</div><div class="small muted">{{ t.final }} final · {{ t.draft }} draft</div></div>{% endfor %}
</div>
{% if chart %}<h2>Largest invoices</h2>{{ chart }}{% endif %}
<h2>Invoices</h2>
<table id="invoices"><thead><tr><th>Customer</th><th>Plan</th><th>Period</th><th>Status</th>
<th class="n">Subtotal</th><th class="n">Discounts</th><th class="n">Credits</th><th class="n">Total due</th></tr></thead><tbody>
{% for r in invoices %}<tr class="line" data-invoice-id="{{ r.invoice_id }}"><td>{% if r.href %}<a href="{{ r.href }}">{{ r.name }}</a>{% else %}{{ r.name }}{% endif %}
<div class="small muted mono">{{ r.customer_id }}</div></td><td>{{ r.plan }}</td><td class="nowrap">{{ r.period }}</td>
<td><span class="badge {{ r.status }}">{{ r.status }}</span></td><td class="n">{{ r.subtotal }}</td><td class="n">{{ r.discount }}</td>
<td class="n">{{ r.credits }}</td><td class="n"><strong>{{ r.currency }} {{ r.total_due }}</strong></td></tr>{% endfor %}
</tbody></table>
<footer>{{ n_final }} final invoice{{ "" if n_final == 1 else "s" }} link to their own page; drafts preview open periods and
are not rendered here (<code>meterbill report --invoice ID</code> renders one). Generated by meterbill.</footer>
</main></body></html>"""

_env = Environment(autoescape=True)
_templates: dict[str, object] = {}


def _template(source: str):
    """Compiled once per process (compiling costs more than rendering)."""
    if source not in _templates:
        _templates[source] = _env.from_string(source)
    return _templates[source]
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_KIND_ORDER = {"usage": 0, "minimum": 1, "fee": 2, "adjustment": 3, "discount": 4, "credit": 5}
_SECTIONS = {"usage": "Usage", "minimum": "Minimum commitments", "fee": "Fixed fees",
             "adjustment": "Corrections to earlier periods", "discount": "Discounts", "credit": "Prepaid credits"}


# ------------------------------------------------------------------ formatting


def money(v: Decimal | None, minor: int) -> str:
    """An exact amount with at least the currency's minor units (more only if it has them)."""
    if v is None:
        return ""
    v = Decimal(v)
    exp = v.normalize().as_tuple().exponent
    places = max(minor, -exp if isinstance(exp, int) and exp < 0 else 0)
    text = f"{abs(v):,.{places}f}"
    return (MINUS + text) if v < 0 else text


def taken_off(v: Decimal | None, minor: int) -> str:
    """An amount taken off the subtotal (stored positive): shown with a minus unless zero."""
    if v is None or v == 0:
        return money(Decimal(0), minor)
    return MINUS + money(v, minor)


def quantity(v) -> str:
    if v is None:
        return ""
    if isinstance(v, Decimal):
        n = v.normalize()
        exp = n.as_tuple().exponent
        return f"{n:,.{-exp if isinstance(exp, int) and exp < 0 else 0}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _dims(d) -> dict[str, str]:
    if d is None:
        return {}
    if isinstance(d, dict):
        return d
    return {e["key"]: e["value"] for e in d}  # a map read as key/value entries


def _day(d: dt.date) -> str:
    return f"{d.day} {d:%b %Y}"


def _period_text(start: dt.datetime, end: dt.datetime, tz: str) -> str:
    a, b = local_days(start, end, tz)
    if a == b:
        return _day(a)
    if a.year == b.year:
        return f"{a.day} {a:%b} – {_day(b)}"
    return f"{_day(a)} – {_day(b)}"


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def invoice_filename(invoice_id: str) -> str:
    return f"invoice-{_safe(invoice_id)}.html"


# ------------------------------------------------------------------ what every report reads


@dataclass
class ReportData:
    """The tables a batch of reports reads, read once; `prepare(ids)` indexes what the pages of
    those invoices need (their rows, sorted lines, ledger draws and charts)."""

    lk: Lake
    cat: Catalog
    invoices: pl.DataFrame
    lines: pl.DataFrame
    ledger: pl.DataFrame
    _rows: dict = field(default_factory=dict)    # invoice_id -> invoice row
    _lines: dict = field(default_factory=dict)   # invoice_id -> its lines, in page order
    _draws: dict = field(default_factory=dict)   # (invoice_id, grant_id) -> balance after the draw
    _charts: dict = field(default_factory=dict)  # invoice_id -> its charts' data

    @classmethod
    def load(cls, lk: Lake) -> "ReportData":
        return cls(lk=lk, cat=load_catalog(lk.catalog_dir), invoices=lk.read("invoices"),
                   lines=lk.read("line_items"), ledger=lk.read("credit_ledger"))

    def invoice(self, invoice_id: str) -> dict:
        if invoice_id not in self._rows:
            self.prepare([invoice_id])
        return self._rows[invoice_id]

    def tz(self, customer_id: str) -> str:
        return self.cat.timezone(customer_id)

    def minor(self, currency: str) -> int:
        try:
            return self.cat.minor_units(currency)
        except KeyError:
            return 2

    def prepare(self, invoice_ids: list[str]) -> None:
        """Index the data of these invoices' pages (replacing the previous batch): one filter of
        each table, one read of the events, one usage query per meter and period."""
        ids = pl.Series("invoice_id", list(invoice_ids), dtype=pl.String).implode()
        inv = self.invoices.filter(pl.col("invoice_id").is_in(ids))
        rows = {r["invoice_id"]: r for r in inv.iter_rows(named=True)}
        missing = [i for i in invoice_ids if i not in rows]
        if missing:
            raise UsageError(f"--invoice: no invoice {missing[0]!r} in {self.lk.root}")
        lines: dict[str, list[dict]] = {i: [] for i in rows}
        for ln in self.lines.filter(pl.col("invoice_id").is_in(ids)).iter_rows(named=True):
            lines[ln["invoice_id"]].append(ln)
        for i, ls in lines.items():
            ls.sort(key=_line_sort_key(self, rows[i]))
        draws = {}
        for i, g, bal in (self.ledger.filter(pl.col("invoice_id").is_in(ids) & (pl.col("entry") == "draw"))
                          .select("invoice_id", "grant_id", "balance_after").iter_rows()):
            draws[(i, g)] = bal  # the last draw of the grant on the invoice
        self._rows, self._lines, self._draws = rows, lines, draws
        self._charts = _chart_data(self, rows, lines)

    def lines_of(self, invoice_id: str) -> list[dict]:
        self.invoice(invoice_id)
        return self._lines[invoice_id]

    def balance_after(self, invoice_id: str, grant_id: str):
        return self._draws.get((invoice_id, grant_id))

    def charts_of(self, invoice_id: str) -> list[tuple]:
        self.invoice(invoice_id)
        return self._charts.get(invoice_id, [])


def _meters(data: ReportData, lines: list[dict]) -> list[str]:
    """The meters of an invoice's usage lines, in page order."""
    meters: list[str] = []
    for ln in lines:
        pi = data.cat.product_items.get(ln["product_item_id"]) if ln["product_item_id"] else None
        if ln["kind"] == "usage" and pi and pi.meter_api_name not in meters:
            meters.append(pi.meter_api_name)
    return meters


def _bound(t: dt.datetime, tz: str):
    """A window bound for the usage query: the local date when `t` is its local midnight (so
    periods that start on the same local day in different zones share one query), else `t`."""
    d = t.astimezone(zone(tz)).date()
    return d if to_instant(d, tz) == t else t


def _local_daily(q: pl.DataFrame, zones: dict[str, str]) -> pl.DataFrame:
    """A customer-grouped daily usage query's rows as (customer_id, local day, value, percent from
    previous), in its order; the day in each customer's zone (one pass per zone)."""
    tagged = q.with_row_index("_row").join(
        pl.DataFrame({"customer_id": list(zones), "_tz": list(zones.values())},
                     schema={"customer_id": pl.String, "_tz": pl.String}), on="customer_id", how="left"
    ).with_columns(pl.col("_tz").fill_null("UTC"))
    parts = [part.select("_row", pl.col("window_start").dt.convert_time_zone(tz).dt.date().alias("day"))
             for (tz,), part in tagged.partition_by("_tz", as_dict=True).items()]
    days = pl.concat(parts).sort("_row")["day"] if parts else pl.Series("day", [], dtype=pl.Date)
    return q.select("customer_id", days.alias("day"), "value", "percent_from_previous")


def _chart_data(data: ReportData, rows: dict[str, dict], lines: dict[str, list[dict]]) -> dict[str, list[tuple]]:
    """invoice_id -> [(meter, daily [(local day, value, percent from previous day)], period value)]
    for each meter billed on the invoice with usage in its period (up to as_of for a draft), in
    the customer's zone.

    The events of every customer of the batch are read once; the usage query runs once per meter,
    time zone and billing period (the customers sharing them grouped by customer_id),
    with the same events per customer as a query of that invoice alone would see: the stateless
    meters' events in [start, end), the stateful meters' whole history before end."""
    wanted = []  # (invoice_id, customer, meter, start, end, as_of)
    for i, r in rows.items():
        start, end, as_of = r["period_start"], r["period_end"], r["as_of"]
        if as_of is not None and as_of < end:
            end = max(as_of, start + dt.timedelta(seconds=1))
        for m in _meters(data, lines[i]):
            if m in data.cat.meters:
                wanted.append((i, r["customer_id"], m, start, end, as_of))
    if not wanted:
        return {}
    stateful = {m for _, _, m, *_ in wanted if data.cat.meters[m].type in STATEFUL_TYPES}
    first = min(w[3] for w in wanted if w[2] not in stateful) if any(w[2] not in stateful for w in wanted) else None
    last = max(w[4] for w in wanted)
    customers = pl.Series(sorted({w[1] for w in wanted}), dtype=pl.String).implode()
    meters = pl.Series(sorted({w[2] for w in wanted}), dtype=pl.String).implode()
    keep = pl.col("meter_api_name").is_in(pl.Series(sorted(stateful), dtype=pl.String).implode())
    if first is not None:  # partition pruning (event_date is the UTC date), then the exact bound
        keep = keep | ((pl.col("event_date") >= first.date() - dt.timedelta(days=1))
                       & (pl.col("event_time") >= pl.lit(first, dtype=TS)))
    events = apply_cancellations(
        data.lk.scan("events")
        .filter(pl.col("customer_id").is_in(customers) & pl.col("meter_api_name").is_in(meters)
                & (pl.col("event_date") <= last.date() + dt.timedelta(days=1))
                & (pl.col("event_time") < pl.lit(last, dtype=TS)) & keep)
        .collect())
    by_meter = events.partition_by("meter_api_name", as_dict=True) if events.height else {}

    groups: dict[tuple, list[tuple]] = {}
    for w in wanted:
        i, c, m, start, end, as_of = w
        tz = data.tz(c)
        groups.setdefault((m, tz, _bound(start, tz), _bound(end, tz), as_of), []).append(w)
    found: dict[tuple[str, str], tuple] = {}  # (invoice_id, meter) -> chart data
    for (m, tz, start_key, end_key, as_of), ws in groups.items():
        ev = by_meter.get((m,))
        if ev is None:
            continue
        bounds = pl.DataFrame([(c, start, end) for _, c, _, start, end, _ in ws],
                              schema={"customer_id": pl.String, "_start": TS, "_end": TS}, orient="row").unique()
        ev = ev.join(bounds, on="customer_id", how="inner")
        cut = pl.col("event_time") < pl.col("_end")
        if m not in stateful:
            cut = cut & (pl.col("event_time") >= pl.col("_start"))
        ev = ev.filter(cut).drop("_start", "_end")
        if ev.height == 0:
            continue
        zones = {c: tz for c in bounds["customer_id"]}
        q = usage_query(ev, data.cat.meters[m], window="day", start=start_key, end=end_key,
                        group_by=["customer_id"], tz=tz, as_of=as_of)
        daily: dict[str, list] = {}
        for c, day, v, pct in _local_daily(q, zones).iter_rows():  # by customer, then day
            daily.setdefault(c, []).append((day, float(v), float(pct)))
        totals = dict(q.unique("customer_id", keep="first", maintain_order=True)
                      .select("customer_id", "group_total").iter_rows())
        per_customer = {c: (d, totals[c]) for c, d in daily.items() if any(v for _, v, _ in d)}
        for i, c, *_ in ws:
            if c in per_customer:
                found[(i, m)] = (m, *per_customer[c])
    out: dict[str, list[tuple]] = {}
    for i in rows:
        charts = [found[(i, m)] for m in _meters(data, lines[i]) if (i, m) in found]
        if charts:
            out[i] = charts
    return out


# ------------------------------------------------------------------ charts


def usage_chart(daily: list[tuple[dt.date, float, float]], unit: str = "", width: int = 400, height: int = 150) -> str:
    """A small inline SVG bar chart of daily values: (day, value, percent from previous day)."""
    if not daily:
        return ""
    left, right, top_pad, bottom = 44, 6, 8, 20
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = max(v for _, v, _ in daily)
    top = top if top > 0 else 1.0
    bw = plot_w / len(daily)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="daily usage">']
    for frac in (0.0, 0.5, 1.0):  # grid lines with labels
        y = top_pad + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{"#1d2330" if frac == 0 else "#e3e6ec"}" stroke-width="1"/>')
        out.append(f'<text x="{left - 5}" y="{y + 3:.1f}" text-anchor="end">{escape(_short(top * frac))}</text>')
    for i, (d, v, pct) in enumerate(daily):
        h = plot_h * v / top
        x = left + i * bw
        tip = f"{d:%a %d %b}: {v:,.6g} {unit}".rstrip() + (f" ({pct:+.1f}% vs previous day)" if i else "")
        out.append(f'<rect x="{x + bw * 0.12:.1f}" y="{top_pad + plot_h - h:.1f}" width="{max(bw * 0.76, 1):.1f}" '
                   f'height="{h:.1f}" rx="1.5" fill="#1a56db"><title>{escape(tip)}</title></rect>')
    ticks = sorted({0, len(daily) // 2, len(daily) - 1})
    for i in ticks:
        x = left + (i + 0.5) * bw
        anchor = "start" if i == 0 and len(daily) > 1 else ("end" if i == len(daily) - 1 and len(daily) > 1 else "middle")
        x = left if anchor == "start" else (width - right if anchor == "end" else x)
        out.append(f'<text x="{x:.1f}" y="{height - 5}" text-anchor="{anchor}">{daily[i][0].day} {daily[i][0]:%b}</text>')
    out.append("</svg>")
    return "".join(out)


def _short(v: float) -> str:
    a = abs(v)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.3g}"


def _bar_list(rows: list[tuple[str, float, str]], width: int = 800) -> str:
    """Horizontal bars: (label, value, value text)."""
    if not rows:
        return ""
    top = max(v for _, v, _ in rows) or 1.0
    row_h, label_w, text_w = 22, 200, 130
    bar_w = width - label_w - text_w
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row_h * len(rows) + 4}" role="img" aria-label="largest invoices">']
    for i, (label, v, text) in enumerate(rows):
        y = 2 + i * row_h
        w = max(bar_w * v / top, 1)
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" style="fill:#1d2330;font-size:12px">{escape(label[:32])}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" rx="2" fill="#1a56db"/>')
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 14}" style="font-size:11px">{escape(text)}</text>')
    out.append("</svg>")
    return "".join(out)


# how a meter's value over the whole period reads (SPEC §4 meter types)
_WHAT = {"sum": "total", "count": "total", "event_duration": "total", "unique_count": "distinct",
         "max": "peak", "high_watermark": "peak", "min": "lowest", "avg": "average", "weighted_sum": "average",
         "latest": "latest", "running_total": "level"}


def _invoice_charts(data: ReportData, r: dict) -> list[dict]:
    """One chart per meter with usage: daily values over the period (up to as_of), in the customer's zone."""
    charts = []
    for name, daily, total in data.charts_of(r["invoice_id"]):
        meter = data.cat.meters[name]
        what = _WHAT.get(meter.type, "total")
        charts.append({
            "title": meter.label or name,
            "total": f"{what} {quantity(total)} {meter.unit or ''}".rstrip() + " in this period"
                     + (" so far" if r["status"] != "final" else ""),
            "svg": Markup(usage_chart(daily, meter.unit or "")),
        })
    return charts


# ------------------------------------------------------------------ one invoice


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
    dims = _dims(ln["dimensions"])
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
        view["note"] = (f"late or cancelled usage of the period starting {_day(when.astimezone(zone(tz)).date())}"
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


def _line_sort_key(data: ReportData, r: dict):
    plan = data.cat.plans.get(r["plan_id"])
    order = {i.product_item_id: n for n, i in enumerate(plan.items)} if plan else {}

    def key(ln: dict):
        dims = _dims(ln["dimensions"])
        return (_KIND_ORDER.get(ln["kind"], 9), order.get(ln["product_item_id"], 999),
                sorted(dims.items()), ln["line_id"])
    return key


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
    return _template(INVOICE).render(
        inv=r, css=CSS, sections=sections, totals=totals, base=base,
        customer={"name": cust.customer_name if cust and cust.customer_name else r["customer_id"],
                  "email": cust.email if cust else None},
        period={"text": _period_text(r["period_start"], r["period_end"], tz), "zone": tz, "cadence": cadence or "billing period",
                "note": f"{(b - a).days + 1} days"},
        plan_name=(f"{plan.name} ({plan.plan_id})" if plan and plan.name else r["plan_id"]),
        as_of=f"{r['as_of']:%Y-%m-%d %H:%M} UTC" if r["as_of"] else "",
        charts=_invoice_charts(data, r))


def render_invoice(lk: Lake, invoice_id: str, data: ReportData | None = None, out: Path | None = None) -> Path:
    """The invoice's page in `out` (default <lake>/reports/)."""
    data = data or ReportData.load(lk)
    page = invoice_page(data, invoice_id)
    out = out or lk.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / invoice_filename(invoice_id)
    _write(path, page)
    return path


def _write(path: Path, text: str) -> None:
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


# ------------------------------------------------------------------ a period


def with_local_start(inv: pl.DataFrame, cat: Catalog | None) -> pl.DataFrame:
    """Invoices with `local_start`: the local date their period starts on (customer's zone; UTC
    without a catalogue)."""
    zones = {c: cat.timezone(c) for c in inv["customer_id"].unique().to_list()} if cat is not None else {}
    return with_local_days(inv, zones).rename({"local_first": "local_start"}).drop("local_last")


def latest_final_month(inv: pl.DataFrame, cat: Catalog | None) -> str | None:
    """`2026-10`: the latest local month in which a final invoice's period starts (what
    `meterbill report` renders without arguments); None without final invoices."""
    final = inv.filter(pl.col("status") == "final")
    if final.height == 0:
        return None
    return f"{with_local_start(final, cat)['local_start'].max():%Y-%m}"


def _local_start(data: ReportData) -> pl.DataFrame:
    return with_local_start(data.invoices, data.cat)


def render_invoices(lk: Lake, invoice_ids: list[str], data: ReportData | None = None,
                    out: Path | None = None) -> list[Path]:
    """The page of each invoice in `out` (default <lake>/reports/), BATCH invoices at a time (one
    `prepare` each). Files are written on a few threads while the next pages render (creating a
    file waits on the disk, not the CPU); at most WRITES_PENDING pages wait in memory, and any
    write error is raised here."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    data = data or ReportData.load(lk)
    out = out or lk.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="report-write") as pool:
        for k in range(0, len(invoice_ids), BATCH):
            chunk = list(invoice_ids[k:k + BATCH])
            data.prepare(chunk)
            for i in chunk:
                path = out / invoice_filename(i)
                pending.append(pool.submit(_write, path, invoice_page(data, i)))
                paths.append(path)
                while len(pending) > WRITES_PENDING:
                    pending.popleft().result()
        while pending:
            pending.popleft().result()
    return paths


def _select_period(data: ReportData, period: str | dt.date) -> tuple[str, str, pl.DataFrame]:
    """(file label, title, invoices) of `2026-10-01` (a local start date) or `2026-10` (a month)."""
    inv = _local_start(data)
    if isinstance(period, dt.date):
        period = period.isoformat()
    text = str(period).strip()
    if _MONTH.match(text):
        try:
            first = dt.date.fromisoformat(text + "-01")
        except ValueError:
            raise UsageError(f"--period: {period!r} is not a month (e.g. 2026-10) or a date (e.g. 2026-10-01)") from None
        nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        sel = inv.filter((pl.col("local_start") >= first) & (pl.col("local_start") < nxt))
        return text, f"Billing periods starting in {first:%B %Y}", sel
    try:
        day = dt.date.fromisoformat(text[:10]) if len(text) >= 10 else None
    except ValueError:
        day = None
    if day is None:
        raise UsageError(f"--period: {period!r} is not a month (e.g. 2026-10) or a date (e.g. 2026-10-01)")
    sel = inv.filter(pl.col("local_start") == day)
    return day.isoformat(), f"Billing periods starting {_day(day)}", sel


def render_period(lk: Lake, period: str | dt.date, data: ReportData | None = None, out: Path | None = None) -> list[Path]:
    """The summary page of a period (a local start date or a month) and a page per final invoice,
    in `out` (default <lake>/reports/)."""
    data = data or ReportData.load(lk)
    label, title, inv = _select_period(data, period)
    if inv.height == 0:
        raise UsageError(f"--period: no invoice's billing period starts {'in' if _MONTH.match(label) else 'on'} {label}")
    inv = inv.sort("customer_id", "period_start")
    paths = render_invoices(lk, inv.filter(pl.col("status") == "final")["invoice_id"].to_list(), data, out)
    rows, by_cur = [], {}
    for r in inv.iter_rows(named=True):
        minor = data.minor(r["currency"])
        cust = data.cat.customers.get(r["customer_id"])
        plan = data.cat.plans.get(r["plan_id"])
        rows.append({
            "invoice_id": r["invoice_id"], "customer_id": r["customer_id"],
            "name": cust.customer_name if cust and cust.customer_name else r["customer_id"],
            "plan": plan.name if plan and plan.name else r["plan_id"],
            "period": _period_text(r["period_start"], r["period_end"], data.tz(r["customer_id"])),
            "status": r["status"], "currency": r["currency"], "subtotal": money(r["subtotal"], minor),
            "discount": taken_off(r["discount"], minor), "credits": taken_off(r["credits_applied"], minor),
            "total_due": money(r["total_due"], minor), "total_due_raw": r["total_due"],
            "href": invoice_filename(r["invoice_id"]) if r["status"] == "final" else None,
        })
        t = by_cur.setdefault(r["currency"], {"currency": r["currency"], "sum": Decimal(0), "final": 0, "draft": 0})
        t["sum"] += r["total_due"] or 0
        t["final" if r["status"] == "final" else "draft"] += 1
    currency_totals = [{**t, "total": money(t["sum"], data.minor(c))} for c, t in sorted(by_cur.items())]
    # the largest invoices, compared in their base currency where there is one
    ranked = sorted(((row["name"], float(r["total_due_base"] if r["total_due_base"] is not None else r["total_due"] or 0),
                      f"{row['currency']} {row['total_due']}")
                     for row, r in zip(rows, inv.iter_rows(named=True))), key=lambda x: -x[1])[:10]
    chart = Markup(_bar_list([x for x in ranked if x[1] > 0]))
    as_of = inv["as_of"].max()
    page = _template(SUMMARY).render(
        css=CSS, title=title, n=inv.height, n_final=sum(1 for x in rows if x["status"] == "final"),
        n_draft=sum(1 for x in rows if x["status"] != "final"), currency_totals=currency_totals,
        invoices=rows, chart=chart, as_of=f"{as_of:%Y-%m-%d %H:%M} UTC" if as_of else "")
    out = out or lk.reports_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"period-{label}.html"
    _write(path, page)
    return [path, *paths]


def report_command(lk: Lake, invoice: str | None, period: str | None, out: Path | None = None) -> list[Path]:
    """`meterbill report`: pages into `out` (default <lake>/reports/)."""
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file, not a folder")
    data = ReportData.load(lk)
    if invoice:
        return [render_invoice(lk, invoice, data, out)]
    if period:
        return render_period(lk, period, data, out)
    month = latest_final_month(data.invoices, data.cat)
    if month is None:
        raise UsageError("report: no final invoice yet (name one with --invoice, or run `meterbill bill`)")
    return render_period(lk, month, data, out)
