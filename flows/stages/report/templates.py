"""The pages' templates (Jinja, autoescaped): one style sheet, an invoice, a period summary."""

from __future__ import annotations

from jinja2 import Environment
from markupsafe import Markup

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


def template(source: str):
    """Compiled once per process (compiling costs more than rendering)."""
    if source not in _templates:
        _templates[source] = _env.from_string(source)
    return _templates[source]
