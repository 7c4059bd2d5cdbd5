"""`meterbill bill`: usage -> line_items, invoices, credit_ledger, unbilled_usage, reconciliation.

Every period that has started gets an invoice: final once `as_of ≥ period_end + grace`, a draft
before. Final invoices are read back and never rewritten (pricing returns them unchanged); late
usage for them becomes adjustment lines on the customer's next invoice.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task

from catalog import Catalog, Lake, load_catalog
from catalog.lake import duck, sql_str
from catalog.schemas import SCHEMAS, empty
from flows.common import as_of_instant, not_a_warehouse_error, parse_instant, register_customers, register_meter_types
from transforms import billing
from transforms.billing import from_hourly as bill_inputs
from transforms.metering import apply_cancellations
from transforms.pricing import FrozenState, all_customer_periods, build_invoices

BILL_TABLES = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")


def first_event_times(lk: Lake, as_of: dt.datetime, customers: set[str] | None = None) -> dict:
    """customer_id -> time of the customer's first counting event before `as_of`: where a default
    plan starts (SPEC §5.2). One DuckDB pass over four columns of the events."""
    if not lk.exists("events"):
        return {}
    con = duck(lk)
    try:
        con.execute("SET TimeZone = 'UTC'")
        if customers is not None:
            register_customers(con, customers)
        src = f"read_parquet({sql_str(lk.table_glob('events'))}, hive_partitioning = false)"
        df = con.sql(bill_inputs.first_events_sql(src, as_of, shard=customers is not None)).pl()
    finally:
        con.close()
    return {c: t.astimezone(dt.timezone.utc) for c, t in df.iter_rows()}


def frozen_state(lk: Lake) -> FrozenState:
    inv = lk.read("invoices")
    final = inv.filter(pl.col("status") == "final")
    lines = lk.read("line_items").join(final.select("invoice_id"), on="invoice_id", how="semi")
    ledger = lk.read("credit_ledger").join(final.select("invoice_id"), on="invoice_id", how="semi")
    return FrozenState(invoices=final, line_items=lines, credit_ledger=ledger)


def _event_columns(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.select("customer_id", "meter_api_name", "meter_value", "event_time", "unique_id", "dimensions",
                     "is_cancel")


def hourly_counting(lk: Lake, cat: Catalog, as_of: dt.datetime, periods: list | pl.DataFrame,
                    customers: set[str] | None = None, cache: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(counting rows, cancel records) for billing, from usage_hourly plus the few events it cannot
    stand for (transforms/bill_inputs.py). usage_hourly must be up to date (`ensure_metered`)."""
    pf = billing.periods_frame(periods)
    frag = bill_inputs.fragment_hours(pf, as_of)
    mine = pl.col("customer_id").is_in(sorted(customers)) if customers is not None else pl.lit(True)
    before = pl.col("event_time") < as_of
    events = lk.scan("events")
    # real events: the meters that need them, and the additive meters' cut hours
    slow = bill_inputs.event_meters(cat)
    parts = [_event_columns(empty("events").lazy()).collect()]
    if slow:
        parts.append(_event_columns(events.filter(mine & before & pl.col("meter_api_name").is_in(slow))).collect())
    files = lk.partition_files("events", bill_inputs.real_event_dates(frag, as_of))
    if files:
        lf = pl.scan_parquet(files, schema={k: v for k, v in SCHEMAS["events"].items() if k != "event_date"},
                             extra_columns="ignore")
        parts.append(_event_columns(lf.filter(mine & bill_inputs.real_events_filter(frag, as_of, slow))).collect())
    real = apply_cancellations(pl.concat(parts))
    # the pre-aggregated buckets of every other hour
    pseudo = pseudo_events(lk, cat, pf, frag, as_of, customers, cache=cache)
    count_meters = {n for n, m in cat.meters.items() if m.type == "count"}
    counting = bill_inputs.counting_frame(pseudo, real, count_meters)
    # every cancel record (reconciliation counts them per item and period)
    cancels = _event_columns(events.filter(mine & before & pl.col("is_cancel").fill_null(False))).collect()
    return counting, cancels


BUCKETS_DIR = "bill_buckets"  # in warehouse/_state: the buckets of the last bill run, a file per UTC month
_BUCKET_DATES = "meterbill.bucket_dates"  # a file's Parquet key-value metadata: {date: key} of its dates


def hourly_files(lk: Lake) -> dict[dt.date, list[tuple[str, int, int]]] | None:
    """date -> [(file name, size, mtime_ns)] of usage_hourly; None when its layout is not one
    folder per date (the bucket cache is not used then)."""
    listing = lk.partition_listing("usage_hourly")
    if listing is None:
        return None
    try:
        return {dt.date.fromisoformat(d): files for d, files in listing.items()}
    except ValueError:
        return None


def _cached_bucket_dates(path) -> dict[str, str] | None:
    """The {date: key} a cached bucket file was made from; None when it is absent or unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
        keys = json.loads(meta[_BUCKET_DATES.encode()])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    return keys if isinstance(keys, dict) else None


def pseudo_events(lk: Lake, cat: Catalog, pf: pl.DataFrame, frag: pl.DataFrame, as_of: dt.datetime,
                  customers: set[str] | None = None, cache: bool = True) -> pl.DataFrame | None:
    """The pseudo-events of usage_hourly (transforms/bill_inputs.py); None when there is none.

    Without a shard, the buckets behind them are kept in `_state/bill_buckets/`, a file per UTC
    month (a bucket never straddles one) holding a key per date of the month
    (`bill_inputs.bucket_date_keys`). A month whose cached dates all kept their key is reused,
    and new dates' buckets are merged into it (a new day reads one partition, not the lake); a
    month with a changed or vanished date is made again from its own partitions. Deleting the
    folder is always safe. While one process holds the folder's lock, another bills without it
    (a merge must never read a month another run is replacing)."""
    if not lk.exists("usage_hourly"):
        return None
    cut = bill_inputs.floor_hour(as_of)
    lock = None
    if cache and customers is None:
        try:  # one process at a time reads and replaces the cached months; another bills without them
            lock = lk.lock(BUCKETS_DIR).acquire()
        except RuntimeError:
            lock = None
    con = None
    try:
        files = hourly_files(lk) if lock is not None else None
        con = duck(lk)
        con.execute("SET TimeZone = 'UTC'")
        register_meter_types(con, cat)
        con.register("periods", pf.select("customer_id", "start", "end").to_arrow())
        con.register("frag", frag.to_arrow())
        if files is None:  # a shard, no cache, or another run holds the cache
            if customers is not None:
                register_customers(con, customers)
            src = (f"read_parquet({sql_str(lk.table_glob('usage_hourly'))}, hive_partitioning = false, "
                   "union_by_name = true)")
            return con.sql(bill_inputs.pseudo_events_sql(src, cut_hour=cut, shard=customers is not None)).pl()
        keys = bill_inputs.bucket_date_keys(files, pf, frag, cut, {n: m.type for n, m in cat.meters.items()})
        months: dict[str, dict[str, str]] = {}
        for d, k in keys.items():
            months.setdefault(d[:7], {})[d] = k
        folder = lk.state_dir(BUCKETS_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".month=*.tmp"):  # a run that died writing (we hold the lock)
            stale.unlink()

        def hours(dates: list[str]) -> str:
            paths = [str(lk.partition_dir("usage_hourly", d) / name) for d in dates
                     for name, _, _ in files[dt.date.fromisoformat(d)]]
            return (f"read_parquet([{', '.join(sql_str(x) for x in paths)}], hive_partitioning = false, "
                    "union_by_name = true)")

        for month, current in sorted(months.items()):
            path = folder / f"month={month}.parquet"
            add = bill_inputs.reusable_buckets(_cached_bucket_dates(path), current)
            if add == []:
                continue
            if add is None:
                q = bill_inputs.buckets_sql(hours(sorted(current)), cut_hour=cut, shard=False)
            else:
                new = bill_inputs.buckets_sql(hours(add), cut_hour=cut, shard=False)
                q = bill_inputs.merge_buckets_sql(f"(SELECT * FROM read_parquet({sql_str(path)}) "
                                                  f"UNION ALL BY NAME ({new}))")
            tmp = folder / f".{path.name}.{os.getpid()}.tmp"
            q = f"SELECT * FROM ({q}) ORDER BY {', '.join(bill_inputs.BUCKET_KEYS)}"  # the same bytes every time
            con.execute(f"COPY ({q}) TO {sql_str(tmp)} (FORMAT parquet, "
                        f"KV_METADATA {{{sql_str(_BUCKET_DATES)}: {sql_str(json.dumps(current, sort_keys=True))}}})")
            os.replace(tmp, path)
        for old in folder.glob("month=*.parquet"):  # months without usage any more
            if old.name.removeprefix("month=").removesuffix(".parquet") not in months:
                old.unlink()
        src = f"read_parquet([{', '.join(sql_str(folder / f'month={m}.parquet') for m in sorted(months))}])"
        return con.sql(bill_inputs.pseudo_from_buckets_sql(src)).pl()
    finally:
        if con is not None:
            con.close()
        if lock is not None:
            lock.release()


def event_counting(lk: Lake, as_of: dt.datetime, customers: set[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(counting events, cancel records) straight from every event: the reference path."""
    lf = lk.scan("events").filter(pl.col("event_time") < as_of)
    if customers is not None:
        lf = lf.filter(pl.col("customer_id").is_in(sorted(customers)))
    events = lf.collect()
    return apply_cancellations(events), events.filter(pl.col("is_cancel").fill_null(False))


def bill_tables(lk: Lake, cat: Catalog, as_of: dt.datetime, customers: set[str] | None = None,
                source: str = "hourly", cache: bool = True) -> dict[str, pl.DataFrame]:
    """The five billing tables as of `as_of`; with `customers`, only theirs (a shard, see
    flows/executors.py: every billing rule is per customer, so a shard's rows are exact).

    source "hourly" (the default) reads usage from usage_hourly (which must be up to date, see
    `ensure_metered`) and only the events it cannot stand for; "events" reads every event (the
    reference the tests compare it with). `cache` False leaves the bucket cache of usage_hourly
    alone (`pseudo_events`)."""
    fz = frozen_state(lk)
    if customers is not None:
        mine = pl.col("customer_id").is_in(sorted(customers))
        fz = FrozenState(invoices=fz.invoices.filter(mine), line_items=fz.line_items.filter(mine),
                         credit_ledger=fz.credit_ledger.filter(mine))
    if source not in ("hourly", "events"):
        raise ValueError(f"source must be 'hourly' or 'events', got {source!r}")
    if source == "events":
        counting, cancels = event_counting(lk, as_of, customers)
        first = dict(counting.group_by("customer_id").agg(pl.col("event_time").min()).iter_rows())
    else:  # the first events only matter where a default plan starts at them
        first = first_event_times(lk, as_of, customers) if cat.settings.default_plan_id else {}
    periods = all_customer_periods(cat, as_of, first_event_times=first)
    if customers is not None:
        periods = [p for p in periods if p.customer_id in customers]
    pf = billing.periods_frame(periods)  # once, for the functions below (pricing takes the objects)
    pcat = cat
    if source == "hourly":
        counting, cancels = hourly_counting(lk, cat, as_of, pf, customers, cache=cache)
        pcat = bill_inputs.counting_catalog(cat)
    usage = billing.line_usage(pcat, counting, pf, as_of)
    rewards = billing.reward_usage(pcat, counting, pf, as_of) if cat.rewards else None
    result = build_invoices(cat, periods, usage, as_of, frozen=fz, reward_usage=rewards)
    unbilled = pl.concat([result.unbilled_usage, billing.unbilled_usage(pcat, counting, pf, as_of)],
                         how="vertical_relaxed")
    rec = billing.reconciliation(pcat, cancels, counting, pf, usage, result.line_items)
    tables = {
        "invoices": result.invoices, "line_items": result.line_items, "credit_ledger": result.credit_ledger,
        "unbilled_usage": unbilled, "reconciliation": rec,
    }
    if customers is not None:
        tables = {k: v.filter(pl.col("customer_id").is_in(sorted(customers))) for k, v in tables.items()}
    return tables


def ensure_metered(lk: Lake, cat: Catalog, as_of: dt.datetime, log=None) -> dict | None:
    """Bring usage_hourly up to date when events arrived since the last meter run (billing reads it)."""
    from flows.meter import meter_plan, run_meter

    _, dates, _ = meter_plan(lk, cat)
    if dates == []:
        return None
    return run_meter(lk, cat, as_of, log=log)


def bill_summary(tables: dict[str, pl.DataFrame]) -> dict:
    inv = tables["invoices"]
    return {
        "invoices": inv.height,
        "final": inv.filter(pl.col("status") == "final").height,
        "draft": inv.filter(pl.col("status") == "draft").height,
        "line_items": tables["line_items"].height,
        "unbilled_rows": tables["unbilled_usage"].height,
    }


def run_bill(lk: Lake, cat: Catalog, as_of: dt.datetime, log=None) -> dict:
    with lk.naming_damage():
        ensure_metered(lk, cat, as_of, log=log)
        tables = bill_tables(lk, cat, as_of)
    lk.write_tables(tables)
    summary = bill_summary(tables)
    if log:
        log(f"bill: {summary}")
    return summary


@task(name="price-and-write-invoices", retries=1, retry_delay_seconds=2, retry_condition_fn=not_a_warehouse_error)
def bill_task(lake: str, as_of: str) -> dict:
    lk = Lake(lake)
    return run_bill(lk, load_catalog(lk.catalog_dir), parse_instant(as_of), log=get_run_logger().info)


@flow(name="bill")
def bill_flow(lake: str | None = None, as_of: str | None = None, executor: str = "local",
              workers: int | None = None, dask_address: str | None = None, allow_future: bool = False) -> dict:
    """Price every started period into invoices (drafts for open periods, finals after grace).
    An `as_of` more than 5 minutes ahead of the clock is refused unless `allow_future`."""
    lk = Lake(lake)
    t = as_of_instant(as_of, allow_future, name="as_of", flag="allow_future=True")
    with lk.naming_damage():
        if executor == "dask":  # customer shards on a Dask cluster (flows/executors.py)
            from flows.executors import bill_sharded

            summary = bill_sharded(str(lk.root), t.isoformat(), workers, dask_address)
        else:
            summary = bill_task(str(lk.root), t.isoformat())
        from flows.artifacts import invoices_artifact

        invoices_artifact(lk)
    return summary
