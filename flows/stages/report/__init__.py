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
pages costs what its data costs: `ReportData.prepare` (data.py) reads the invoices, lines, ledger
draws and events of up to BATCH invoices in one pass each, and computes their charts with one
usage query per meter and billing period (all the customers of that period at once), not one per
invoice. The pages: invoice.py and period.py, from the templates of templates.py.

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

from flows.stages.report.data import ReportData
from flows.stages.report.format import invoice_filename, money
from flows.stages.report.invoice import invoice_page, render_invoice
from flows.stages.report.period import latest_final_month, render_invoices, render_period, report_command

__all__ = ["ReportData", "invoice_filename", "invoice_page", "latest_final_month", "money", "render_invoice",
           "render_invoices", "render_period", "report_command"]
