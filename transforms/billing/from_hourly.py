"""What billing counts, read from `usage_hourly` instead of from every event.

Billing needs, per customer, the counting events of each meter (cancellations applied) to put
them in periods, match them to plan items, and take each item's meter value per period. For the
mergeable meter types (`catalog.meter_types`: sum, count, min, max, and meters the catalogue does
not know, summed) the hourly table already holds everything that matters, as long as a period
boundary never cuts an hour: Σ of hourly sums, Σ of hourly counts, max of hourly maxima, min of
hourly minima. So billing reads *pre-aggregated pseudo-events* instead of events:

* one pseudo-event per customer × meter × dimension combination × (period, UTC month) bucket,
  at the bucket's first hour: `meter_value` is the bucket's sum / count / max / min, `_w` the
  number of events it stands for (reconciliation counts `_w`, not rows). Buckets never straddle
  a period boundary or a UTC month, so `in_periods` and the monthly unbilled buckets see them
  where the events were;
* hours that a boundary cuts (a period starting or ending off the hour — time zones with
  half-hour offsets, subscriptions starting at 10:30 — and the hour holding `as_of` when it is
  not on the hour) are read as real events instead, for that customer (for `as_of`: everyone);
* meters of the other types (unique_count, latest, avg, the stateful ones) are read as real
  events: their value is not a function of hourly aggregates;
* `count` meters become `sum` meters over `meter_value` = 1 per real event and the count per
  pseudo-event (`counting_catalog`): the same number.

The result equals billing from the events row for row (tests/billing/test_bill_inputs.py
compares both on lakes with every meter type, half-hour time zones, plan changes, cancellations
and an `as_of` inside an hour), while memory follows the number of buckets, not of events.

The buckets behind the pseudo-events are mergeable (sums, counts, minima, maxima, first hours),
so billing keeps them per UTC month between runs, with a key per date of everything they depend
on (`bucket_date_keys`), and a new day only adds its own buckets (`reusable_buckets`; flows/bill.py
`pseudo_events`, tests/billing/test_bill_cache.py).

SQL building and frame assembly only; flows/bill.py runs the queries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import polars as pl

from catalog.config import Catalog
from catalog.meter_types import MERGEABLE_TYPES, UNKNOWN_METER_TYPE, sql_list
from catalog.schemas import DEC, DIMS, TS
from transforms.metering.cancel import cancels_sql, not_cancelled_sql

# the columns billing reads from counting events (and the weight of each row)
COUNTING_COLUMNS = {
    "customer_id": pl.String, "meter_api_name": pl.String, "meter_value": DEC, "event_time": TS,
    "unique_id": pl.String, "dimensions": DIMS, "is_cancel": pl.Boolean, "_w": pl.Int64,
}
# what a bucket of hourly rows is grouped by (see buckets_sql)
BUCKET_KEYS = ("customer_id", "meter_api_name", "dims_key", "pstart", "month")


def event_meters(cat: Catalog) -> list[str]:
    """Catalogue meters whose value needs the events themselves."""
    return sorted(n for n, m in cat.meters.items() if m.type not in MERGEABLE_TYPES)


def floor_hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def fragment_hours(periods: pl.DataFrame, as_of: dt.datetime) -> pl.DataFrame:
    """customer_id, hour: the UTC hours a period boundary of the customer cuts (before `as_of`).

    periods: customer_id, start, end (UTC). The hour holding `as_of` is handled apart (it is cut
    for every customer when `as_of` is not on the hour)."""
    b = pl.concat([periods.select("customer_id", pl.col("start").alias("b")),
                   periods.select("customer_id", pl.col("end").alias("b"))])
    return (b.filter((pl.col("b") != pl.col("b").dt.truncate("1h")) & (pl.col("b") < as_of))
            .select("customer_id", pl.col("b").dt.truncate("1h").alias("hour"))
            .unique().sort("customer_id", "hour"))


def buckets_sql(hourly: str, *, cut_hour: dt.datetime, shard: bool) -> str:
    """SELECT of the buckets (BUCKET_KEYS, then dimensions, mtype, event_time, w, vsum, vmin, vmax)
    from the hourly relation `hourly`: one row per customer × meter × dimension combination ×
    period start (NULL: no period) × UTC month, before the meter type picks the value. Needs the
    relations `meter_types(meter_api_name, type)`, `periods(customer_id, start, end)`,
    `frag(customer_id, hour)` and, with `shard`, `shard_customers(customer_id)`. Hours from
    `cut_hour` on are left out (the caller reads them as events).

    Buckets are mergeable: the buckets of two sets of hours, grouped again by `merge_buckets_sql`,
    are the buckets of their union (sums, counts, minima, maxima and the first hour)."""
    only = "AND h.customer_id IN (SELECT customer_id FROM shard_customers)" if shard else ""
    return f"""
WITH h AS (
  SELECT h.customer_id, h.meter_api_name, h.dimensions, h.dims_key, h.hour, h.event_count,
         h.value_sum, h.value_min, h.value_max, coalesce(t.type, '{UNKNOWN_METER_TYPE}') AS mtype
  FROM {hourly} h LEFT JOIN meter_types t ON t.meter_api_name = h.meter_api_name
  WHERE coalesce(t.type, '{UNKNOWN_METER_TYPE}') IN {sql_list(MERGEABLE_TYPES)}
    AND h.hour < TIMESTAMPTZ '{cut_hour.isoformat()}' {only}
    AND NOT EXISTS (SELECT 1 FROM frag f WHERE f.customer_id = h.customer_id AND f.hour = h.hour)
), tagged AS (
  SELECT h.*, p.start AS pstart
  FROM h LEFT JOIN periods p ON p.customer_id = h.customer_id AND h.hour >= p.start AND h.hour < p."end"
)
SELECT customer_id, meter_api_name, dims_key, pstart, date_trunc('month', hour) AS month,
       any_value(dimensions) AS dimensions, any_value(mtype) AS mtype, min(hour) AS event_time,
       CAST(sum(event_count) AS BIGINT) AS w, sum(value_sum) AS vsum, min(value_min) AS vmin,
       max(value_max) AS vmax
FROM tagged GROUP BY customer_id, meter_api_name, dims_key, pstart, date_trunc('month', hour)"""


def merge_buckets_sql(buckets: str) -> str:
    """The buckets of the relation `buckets` (rows of `buckets_sql`, from several sets of hours)
    grouped again into one row per bucket key."""
    keys = ", ".join(BUCKET_KEYS)
    return f"""
SELECT {keys}, any_value(dimensions) AS dimensions, any_value(mtype) AS mtype, min(event_time) AS event_time,
       CAST(sum(w) AS BIGINT) AS w, sum(vsum) AS vsum, min(vmin) AS vmin, max(vmax) AS vmax
FROM {buckets} GROUP BY {keys}"""


def pseudo_from_buckets_sql(buckets: str) -> str:
    """SELECT of the pseudo-events (COUNTING_COLUMNS but `dims_key` for `unique_id`) from the
    relation `buckets`: each bucket's sum / count / max / min, as its meter type says."""
    dec = "DECIMAL(38, 9)"
    return f"""
SELECT customer_id, meter_api_name,
       CAST(CASE mtype WHEN 'count' THEN CAST(w AS {dec}) WHEN 'max' THEN vmax WHEN 'min' THEN vmin
                       ELSE vsum END AS {dec}) AS meter_value,
       event_time, dims_key, dimensions, CAST(w AS BIGINT) AS _w
FROM {buckets}"""


def pseudo_events_sql(hourly: str, *, cut_hour: dt.datetime, shard: bool) -> str:
    """SELECT of the pseudo-events from the hourly relation `hourly` in one query (the relations
    `buckets_sql` needs must exist)."""
    return pseudo_from_buckets_sql(f"({buckets_sql(hourly, cut_hour=cut_hour, shard=shard)})")


def bucket_date_keys(files: dict[dt.date, list[tuple[str, int, int]]], periods: pl.DataFrame,
                     frag: pl.DataFrame, cut_hour: dt.datetime, meter_types: dict[str, str]) -> dict[str, str]:
    """UTC date -> a key of everything the buckets of that date's hours depend on: the date's
    usage_hourly files (name, size, mtime_ns: files are replaced, never rewritten in place), the
    periods overlapping the date (customer, start, end), the cut hours of the date (`frag`), the
    `cut_hour` when it falls before the date's end, the meter types and the bucket query itself.
    Equal keys mean equal buckets for that date (see flows/bill.py `pseudo_events`)."""
    dates = sorted(files)
    if not dates:
        return {}
    static = _sha(buckets_sql("hourly", cut_hour=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), shard=False),
                  json.dumps(sorted(meter_types.items())))
    span = pl.DataFrame({"date": dates}, schema={"date": pl.Date})
    per = (periods.select(pl.date_ranges(pl.col("start").dt.date(),
                                         (pl.col("end") - pl.duration(microseconds=1)).dt.date()).alias("date"),
                          pl.concat_str(["customer_id", pl.col("start").dt.to_string("%+"),
                                         pl.col("end").dt.to_string("%+")], separator="|").alias("p"))
           .explode("date").join(span, on="date", how="semi")
           .group_by("date").agg(pl.col("p").sort().str.join(";")))
    cut = (frag.select(pl.col("hour").dt.date().alias("date"),
                       pl.concat_str(["customer_id", pl.col("hour").dt.to_string("%+")], separator="|").alias("f"))
           .group_by("date").agg(pl.col("f").sort().str.join(";")))
    ptext = dict(per.iter_rows())
    ftext = dict(cut.iter_rows())
    out = {}
    for d in dates:
        end = dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        out[d.isoformat()] = _sha(static, json.dumps(sorted(files[d])), ptext.get(d, ""), ftext.get(d, ""),
                                  cut_hour.isoformat() if cut_hour < end else "")
    return out


def reusable_buckets(cached: dict[str, str] | None, current: dict[str, str]) -> list[str] | None:
    """The dates whose buckets must be added to cached buckets made from the dates of `cached`
    (date -> key) to get those of `current`; None when the cached buckets can't be reused (a
    cached date is gone or its key changed: they are made again from every date)."""
    if cached is None or any(current.get(d) != k for d, k in cached.items()):
        return None
    return sorted(d for d in current if d not in cached)


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        b = part.encode()
        h.update(len(b).to_bytes(8, "big") + b)  # length-prefixed: no two part lists hash alike
    return h.hexdigest()


def first_events_sql(events: str, as_of: dt.datetime, *, shard: bool) -> str:
    """SELECT customer_id, t: each customer's first counting event before `as_of` (cancel records
    and the events they cancel left out, as `transforms.metering.cancel` says) from the events
    relation `events`; with `shard`, only the customers of `shard_customers(customer_id)`."""
    only = "AND customer_id IN (SELECT customer_id FROM shard_customers)" if shard else ""
    # a cancel record matches only events of its own customer and event time, so the cancels of
    # every customer and time match exactly what those of the shard before `as_of` would
    return f"""
WITH ev AS (SELECT customer_id, meter_api_name, unique_id, event_time, coalesce(is_cancel, false) AS c
            FROM {events} WHERE event_time < TIMESTAMPTZ '{as_of.isoformat()}' {only}),
     cancels AS ({cancels_sql(events)})
SELECT customer_id, min(event_time) AS t FROM ev
WHERE NOT c AND {not_cancelled_sql('ev')}
GROUP BY customer_id"""


def real_events_filter(frag: pl.DataFrame, as_of: dt.datetime, event_meter_names: list[str]) -> pl.Expr:
    """The events of the mergeable (and unknown) meters that billing reads as events: those in an
    hour a period boundary cuts for their customer (`frag`) and those of the hour holding `as_of`."""
    hour = pl.col("event_time").dt.truncate("1h")
    cut = floor_hour(as_of)
    in_cut = (hour == cut) if cut < as_of else pl.lit(False)
    in_frag = (pl.struct("customer_id", hour.alias("hour")).is_in(frag.select(pl.struct("customer_id", "hour"))
                                                                  .to_series().implode())
               if frag.height else pl.lit(False))
    return (pl.col("event_time") < as_of) & ~pl.col("meter_api_name").is_in(event_meter_names) & (in_cut | in_frag)


def real_event_dates(frag: pl.DataFrame, as_of: dt.datetime) -> list[dt.date]:
    """The UTC event dates holding those events (the partitions to read)."""
    cut = floor_hour(as_of)
    return sorted({h.date() for h in frag["hour"].to_list()} | ({cut.date()} if cut < as_of else set()))


def counting_frame(pseudo: pl.DataFrame | None, events: pl.DataFrame, count_meters: set[str]) -> pl.DataFrame:
    """Pseudo-events (None: no usage_hourly yet) and real counting events (cancellations applied)
    in one frame (COUNTING_COLUMNS); real events of count meters get `meter_value` 1, every real
    event `_w` 1."""
    e = events.select(
        "customer_id", "meter_api_name",
        pl.when(pl.col("meter_api_name").is_in(sorted(count_meters))).then(pl.lit(1, dtype=DEC))
        .otherwise(pl.col("meter_value").cast(DEC)).alias("meter_value"),
        pl.col("event_time").cast(TS), "unique_id", pl.col("dimensions").cast(DIMS),
        pl.lit(False).alias("is_cancel"), pl.lit(1, dtype=pl.Int64).alias("_w"),
    )
    if pseudo is None:
        return e.cast(COUNTING_COLUMNS)
    p = pseudo.select(
        pl.col("customer_id").cast(pl.String), pl.col("meter_api_name").cast(pl.String),
        pl.col("meter_value").cast(DEC), pl.col("event_time").cast(TS),
        pl.lit(None, dtype=pl.String).alias("unique_id"), pl.col("dimensions").cast(DIMS),
        pl.lit(False).alias("is_cancel"), pl.col("_w").cast(pl.Int64),
    )
    return pl.concat([p, e.cast(COUNTING_COLUMNS)])


def counting_catalog(cat: Catalog) -> Catalog:
    """The catalogue with every `count` meter read as a `sum` (see counting_frame)."""
    if not any(m.type == "count" for m in cat.meters.values()):
        return cat
    meters = {n: (m.model_copy(update={"type": "sum"}) if m.type == "count" else m) for n, m in cat.meters.items()}
    return cat.model_copy(update={"meters": meters})
