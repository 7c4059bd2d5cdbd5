"""What a batch of report pages reads, read once: the invoices, their lines and ledger draws, and
the daily usage of their charts (one usage query per meter, time zone and billing period)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from catalog import Lake, load_catalog
from catalog.config import STATEFUL_TYPES, Catalog
from catalog.schemas import TS
from flows.stages.common import UsageError
from flows.stages.report.format import dims_of
from transforms.metering import apply_cancellations, usage_query
from transforms.shared.windows import to_instant, zone

_KIND_ORDER = {"usage": 0, "minimum": 1, "fee": 2, "adjustment": 3, "discount": 4, "credit": 5}


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
            ls.sort(key=line_sort_key(self, rows[i]))
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
    by_meter = _chart_events(data, wanted, stateful)
    groups: dict[tuple, list[tuple]] = {}
    for w in wanted:
        i, c, m, start, end, as_of = w
        tz = data.tz(c)
        groups.setdefault((m, tz, _bound(start, tz), _bound(end, tz), as_of), []).append(w)
    found: dict[tuple[str, str], tuple] = {}  # (invoice_id, meter) -> chart data
    for key, ws in groups.items():
        ev = by_meter.get((key[0],))
        if ev is not None:
            found.update(_group_charts(data, key, ws, ev, key[0] in stateful))
    out: dict[str, list[tuple]] = {}
    for i in rows:
        charts = [found[(i, m)] for m in _meters(data, lines[i]) if (i, m) in found]
        if charts:
            out[i] = charts
    return out


def _chart_events(data: ReportData, wanted: list[tuple], stateful: set[str]) -> dict:
    """The counting events the charts of `wanted` read, in one pass, by meter."""
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
    return events.partition_by("meter_api_name", as_dict=True) if events.height else {}


def _group_charts(data: ReportData, key: tuple, ws: list[tuple], ev: pl.DataFrame,
                  stateful: bool) -> dict[tuple[str, str], tuple]:
    """(invoice_id, meter) -> chart data of the invoices of one (meter, zone, period) group."""
    m, tz, start_key, end_key, as_of = key
    bounds = pl.DataFrame([(c, start, end) for _, c, _, start, end, _ in ws],
                          schema={"customer_id": pl.String, "_start": TS, "_end": TS}, orient="row").unique()
    ev = ev.join(bounds, on="customer_id", how="inner")
    cut = pl.col("event_time") < pl.col("_end")
    if not stateful:
        cut = cut & (pl.col("event_time") >= pl.col("_start"))
    ev = ev.filter(cut).drop("_start", "_end")
    if ev.height == 0:
        return {}
    zones = {c: tz for c in bounds["customer_id"]}
    q = usage_query(ev, data.cat.meters[m], window="day", start=start_key, end=end_key,
                    group_by=["customer_id"], tz=tz, as_of=as_of)
    daily: dict[str, list] = {}
    for c, day, v, pct in _local_daily(q, zones).iter_rows():  # by customer, then day
        daily.setdefault(c, []).append((day, float(v), float(pct)))
    totals = dict(q.unique("customer_id", keep="first", maintain_order=True)
                  .select("customer_id", "group_total").iter_rows())
    per_customer = {c: (d, totals[c]) for c, d in daily.items() if any(v for _, v, _ in d)}
    return {(i, m): (m, *per_customer[c]) for i, c, *_ in ws if c in per_customer}


def line_sort_key(data: ReportData, r: dict):
    plan = data.cat.plans.get(r["plan_id"])
    order = {i.product_item_id: n for n, i in enumerate(plan.items)} if plan else {}

    def key(ln: dict):
        dims = dims_of(ln["dimensions"])
        return (_KIND_ORDER.get(ln["kind"], 9), order.get(ln["product_item_id"], 999),
                sorted(dims.items()), ln["line_id"])
    return key
