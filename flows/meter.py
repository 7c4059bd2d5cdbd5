"""`meterbill meter`: events -> usage_hourly, re-aggregating only the UTC dates that changed.

What changed is found from `events.ingested_at` against a watermark kept in the lake's state:
the event dates of new events (and, for stateful meters, every later date, since their level
carries forward). Those `hour_date` partitions are rebuilt whole and swapped in; a changed set of
meters in the catalogue rebuilds everything. The result equals a full rebuild, row for row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import polars as pl
from prefect import flow, get_run_logger, task

from catalog import Catalog, Lake, load_catalog
from catalog.config import STATEFUL_TYPES
from flows.common import parse_instant
from transforms.metering import apply_cancellations, hourly_usage


def _meters_signature(cat: Catalog) -> str:
    blob = json.dumps({k: m.model_dump(mode="json") for k, m in sorted(cat.meters.items())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def dates_to_rebuild(events: pl.LazyFrame, cat: Catalog, watermark: dt.datetime | None) -> list[dt.date] | None:
    """The event dates whose hourly usage must be recomputed; None means all of them."""
    if watermark is None:
        return None
    new = events.filter(pl.col("ingested_at") > watermark).select("event_date", "meter_api_name").unique().collect()
    if new.height == 0:
        return []
    dates = set(new["event_date"].to_list())
    stateful = {n for n, m in cat.meters.items() if m.type in STATEFUL_TYPES}
    st = new.filter(pl.col("meter_api_name").is_in(sorted(stateful)))
    if st.height:
        first = st["event_date"].min()
        later = events.filter(pl.col("event_date") >= first).select("event_date").unique().collect()
        dates |= set(later["event_date"].to_list())
    return sorted(dates)


def run_meter(lk: Lake, cat: Catalog, as_of: dt.datetime, log=None) -> dict:
    state = lk.read_state("meter")
    sig = _meters_signature(cat)
    watermark = None
    if state and state.get("meters") == sig and lk.exists("usage_hourly"):
        watermark = dt.datetime.fromisoformat(state["watermark"]) if state.get("watermark") else None
        if watermark is None:
            watermark = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    events = lk.scan("events")
    top = events.select(pl.col("ingested_at").max()).collect().item()
    dates = dates_to_rebuild(events, cat, watermark)
    if dates == []:
        summary = {"dates_rebuilt": 0, "rows": 0, "full": False}
    else:
        stateful = sorted(n for n, m in cat.meters.items() if m.type in STATEFUL_TYPES)
        if dates is None:
            ev = events.collect()
        else:
            # stateless meters: only the dates being rebuilt; stateful ones: their whole history
            ev = events.filter(pl.col("event_date").is_in(dates) | pl.col("meter_api_name").is_in(stateful)).collect()
        counting = apply_cancellations(ev)
        hours = None if dates is None else pl.DataFrame({"hour_date": dates}, schema={"hour_date": pl.Date})
        hourly = hourly_usage(counting, cat.meters, hours=hours)
        if dates is None:
            lk.write("usage_hourly", hourly)
        else:
            lk.replace_partitions("usage_hourly", hourly, values=dates)
        summary = {"dates_rebuilt": len(dates) if dates is not None else hourly["hour_date"].n_unique(),
                   "rows": hourly.height, "full": dates is None}
    lk.write_state("meter", {"meters": sig, "watermark": top.isoformat() if top else None})
    if log:
        log(f"meter: {summary}")
    return summary


@task(name="aggregate-usage-hourly", retries=1, retry_delay_seconds=2)
def meter_task(lake: str, as_of: str) -> dict:
    lk = Lake(lake)
    return run_meter(lk, load_catalog(lk.catalog_dir), parse_instant(as_of), log=get_run_logger().info)


@flow(name="meter")
def meter_flow(lake: str | None = None, as_of: str | None = None, executor: str = "local",
               workers: int | None = None, dask_address: str | None = None) -> dict:
    """Bring usage_hourly up to date with the events table."""
    return meter_task(str(Lake(lake).root), parse_instant(as_of).isoformat())
