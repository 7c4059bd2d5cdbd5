"""The pages' inline SVG charts: daily usage bars of an invoice, the largest invoices of a period."""

from __future__ import annotations

import datetime as dt

from markupsafe import Markup, escape

from catalog.meter_types import METER_TYPES
from flows.stages.report.data import ReportData
from flows.stages.report.format import quantity


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


def bar_list(rows: list[tuple[str, float, str]], width: int = 800) -> str:
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


def invoice_charts(data: ReportData, r: dict) -> list[dict]:
    """One chart per meter with usage: daily values over the period (up to as_of), in the customer's zone."""
    charts = []
    for name, daily, total in data.charts_of(r["invoice_id"]):
        meter = data.cat.meters[name]
        what = METER_TYPES[meter.type].reads_as
        charts.append({
            "title": meter.label or name,
            "total": f"{what} {quantity(total)} {meter.unit or ''}".rstrip() + " in this period"
                     + (" so far" if r["status"] != "final" else ""),
            "svg": Markup(usage_chart(daily, meter.unit or "")),
        })
    return charts
