"""`meterbill generate`: realistic synthetic meter events for a catalogue, as Parquet under raw/.

Shape of the data: heavy-tailed customer sizes (Pareto), a daily cycle (busy afternoons UTC),
a weekly cycle (quiet weekends), dimensions per meter, and for the stateful meters the events
they really receive (instance start/stop, storage deltas, connection readings). With `messy`,
known numbers of bad rows and re-sent duplicates are added to a separate file, and their counts
are returned so a test can check that ingestion accounts for every one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from catalog import Catalog

HOUR_WEIGHTS = np.array([2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 6, 8, 9, 10, 10, 10, 10.5, 10, 9, 8, 7, 6, 5, 4, 3, 2.5])
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
ENDPOINTS = ["/v1/search", "/v1/items", "/v1/orders", "/v1/auth"]
REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]
MODELS = ["small", "large", "medium"]  # "medium" has no rate of its own: priced by the default
INSTANCE_TYPES = ["m5.large", "c6g.xlarge"]

# Share of the daily event budget per stateless meter type.
MIX = {"sum": 0.70, "unique_count": 0.2, "high_watermark": 0.1}


@dataclass
class Generated:
    files: list[Path] = field(default_factory=list)
    events: int = 0
    defects: dict[str, int] = field(default_factory=dict)  # reason code -> rows written
    duplicates: int = 0

    @property
    def rows(self) -> int:
        return self.events + sum(self.defects.values()) + self.duplicates


def _dims(**cols: pl.Expr) -> pl.Expr:
    entries = [pl.struct(key=pl.lit(k), value=v) for k, v in cols.items()]
    return (
        pl.concat_list(entries)
        .list.eval(pl.element().filter(pl.element().struct.field("value").is_not_null()))
        .cast(pl.Map(pl.String, pl.String))
    )


def _day_events(cat: Catalog, day: dt.date, n: int, rng: np.random.Generator, sizes: np.ndarray,
                customers: list[str], prefix: str) -> pl.DataFrame:
    weekend = day.weekday() >= 5
    n = int(n * (0.6 if weekend else 1.0) * rng.uniform(0.85, 1.15))  # day-to-day noise
    midnight = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    by_type: dict[str, list[str]] = {}
    for m in cat.meters.values():
        by_type.setdefault(m.type, []).append(m.meter_api_name)
    frames = _stateless_events(cat, by_type, n, midnight, rng, sizes, customers)
    frames += _instance_events(by_type, midnight, rng, sizes, customers)
    frames += _storage_events(by_type, midnight, rng, sizes, customers)
    out = pl.concat(frames, how="vertical_relaxed").sort("meter_time_in_millis", "customer_id")
    return out.with_columns(
        unique_id=pl.format("{}-{}-{}", pl.lit(prefix), pl.lit(day.isoformat()), pl.int_range(pl.len()))
    ).select("customer_id", "meter_api_name", "meter_value", "meter_time_in_millis", "unique_id", "dimensions")


def _stateless_events(cat: Catalog, by_type: dict[str, list[str]], n: int, midnight: int, rng: np.random.Generator,
                      sizes: np.ndarray, customers: list[str]) -> list[pl.DataFrame]:
    """The stateless meters: a share of the day's budget each, customers drawn by size."""
    frames = []
    for mtype, share in MIX.items():
        for name in by_type.get(mtype, []):
            k = max(int(n * share / len(by_type[mtype])), 1)
            cust = rng.choice(len(customers), size=k, p=sizes)
            hour = rng.choice(24, size=k, p=HOUR_WEIGHTS)
            ms = midnight + hour * 3_600_000 + rng.integers(0, 3_600_000, size=k)
            meter = cat.meters[name]
            if mtype == "sum" and "model" in meter.dimensions:
                value = np.round(rng.lognormal(6.5, 1.0, size=k)).astype(np.float64)
                dims = {"model": pl.Series(rng.choice(MODELS, size=k, p=[0.6, 0.3, 0.1]))}
            elif mtype == "sum":
                value = rng.integers(1, 60, size=k).astype(np.float64)
                dims = {"endpoint": pl.Series(rng.choice(ENDPOINTS, size=k)),
                        "region": pl.Series(rng.choice(REGIONS, size=k, p=[0.5, 0.35, 0.15]))}
            elif mtype == "unique_count":
                value = np.ones(k)
                pool = np.maximum((sizes[cust] * 4000).astype(np.int64), 3)
                dims = {"user_id": pl.Series([f"u{x}" for x in rng.integers(0, 1 << 30, size=k) % pool])}
            else:  # high_watermark readings
                value = np.round(sizes[cust] * 3000 * rng.uniform(0.3, 1.0, size=k))
                dims = {}
            frames.append(pl.DataFrame({
                "customer_id": pl.Series([customers[i] for i in cust], dtype=pl.String),
                "meter_api_name": name,
                "meter_value": value,
                "meter_time_in_millis": ms.astype(np.int64),
                **{f"__d_{k2}": v for k2, v in dims.items()},
            }).with_columns(dimensions=_dims(**{k2: pl.col(f"__d_{k2}") for k2 in dims}) if dims
                            else pl.lit(None, dtype=pl.Map(pl.String, pl.String)).alias("dimensions"))
               .select("customer_id", "meter_api_name", "meter_value", "meter_time_in_millis", "dimensions"))
    return frames


def _instance_events(by_type: dict[str, list[str]], midnight: int, rng: np.random.Generator, sizes: np.ndarray,
                     customers: list[str]) -> list[pl.DataFrame]:
    """event_duration: each customer runs a few instances a day, start and stop."""
    frames = []
    for name in by_type.get("event_duration", []):
        rows = []
        for i, c in enumerate(customers):
            for j in range(1 + int(sizes[i] * 40)):
                start = midnight + int(rng.integers(0, 12)) * 3_600_000 + int(rng.integers(0, 3_600_000))
                stop = start + int(rng.integers(1, 10)) * 3_600_000
                iid = f"i-{c[-3:]}-{j}"
                itype = INSTANCE_TYPES[j % 2]
                rows.append((c, name, 1.0, start, iid, itype))
                rows.append((c, name, -1.0, stop, iid, itype))
        frames.append(pl.DataFrame(rows, orient="row", schema=["customer_id", "meter_api_name", "meter_value",
                                                                "meter_time_in_millis", "iid", "itype"])
                      .with_columns(dimensions=_dims(instance_id=pl.col("iid"), instance_type=pl.col("itype")))
                      .drop("iid", "itype"))
    return frames


def _storage_events(by_type: dict[str, list[str]], midnight: int, rng: np.random.Generator, sizes: np.ndarray,
                    customers: list[str]) -> list[pl.DataFrame]:
    """weighted_sum: storage grows a little every day, with an occasional clean-up."""
    frames = []
    for name in by_type.get("weighted_sum", []):
        rows = []
        for i, c in enumerate(customers):
            for _ in range(2):
                t = midnight + int(rng.integers(0, 86_400_000))
                delta = round(float(rng.normal(sizes[i] * 50 + 1, sizes[i] * 20 + 0.5)), 3)
                rows.append((c, name, delta, t))
        frames.append(pl.DataFrame(rows, orient="row", schema=["customer_id", "meter_api_name", "meter_value",
                                                                "meter_time_in_millis"])
                      .with_columns(dimensions=pl.lit(None, dtype=pl.Map(pl.String, pl.String))))
    return frames


def generate(cat: Catalog, raw_dir: Path, start: dt.date, days: int, events_per_day: int = 2000,
             seed: int = 42, messy: bool = False, customers: list[str] | None = None,
             progress=None) -> Generated:
    """Write one Parquet file per day under raw/generated/, plus raw/generated/messy-<seed>.parquet."""
    rng = np.random.default_rng(seed)
    customers = customers or sorted(cat.customers)
    sizes = rng.pareto(1.2, size=len(customers)) + 0.05
    sizes = sizes / sizes.sum()
    out_dir = raw_dir / "generated"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Generated()
    sample: list[pl.DataFrame] = []
    for d in range(days):
        day = start + dt.timedelta(days=d)
        df = _day_events(cat, day, events_per_day, rng, sizes, customers, f"s{seed}")
        path = out_dir / f"events-s{seed}-{day.isoformat()}.parquet"
        df.write_parquet(path)
        result.files.append(path)
        result.events += df.height
        if messy:
            sample.append(df.sample(n=min(df.height, 20), seed=seed + d))
        if progress:
            progress(f"[{d + 1}/{days}] {path.name}: {df.height} events")
    if messy and sample:
        from catalog.meter_types import VALUELESS_TYPES

        valueless = frozenset(n for n, m in cat.meters.items() if m.type in VALUELESS_TYPES)
        result.files.append(_write_messy(pl.concat(sample), out_dir / f"messy-s{seed}.parquet", start, days,
                                         result, valueless))
    return result


def _write_messy(sample: pl.DataFrame, path: Path, start: dt.date, days: int, result: Generated,
                 valueless: frozenset[str] = frozenset()) -> Path:
    """Known defects, each a reason code of SPEC §2, plus re-sent duplicates of good events.

    A NaN value is a defect only for meters that read their value (count and unique_count meters
    ignore it), so those rows come from the other meters.
    """
    s = sample.with_columns(pl.col("meter_value").cast(pl.Float64))
    n = max(s.height // 8, 1)
    far_future = int(dt.datetime(start.year + 5, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    nan_rows = s.filter(~pl.col("meter_api_name").is_in(sorted(valueless))).head(n)
    rest = s.join(nan_rows.select("unique_id"), on="unique_id", how="anti")
    parts = {
        "non_finite_value": nan_rows.with_columns(meter_value=pl.lit(float("nan")),
                                                  unique_id=pl.col("unique_id") + "-n"),
        "missing_field": rest.slice(0, n).with_columns(customer_id=pl.lit(None, dtype=pl.String),
                                                       unique_id=pl.col("unique_id") + "-m"),
        "bad_timestamp": rest.slice(n, n).with_columns(meter_time_in_millis=pl.lit(-5, dtype=pl.Int64),
                                                        unique_id=pl.col("unique_id") + "-t"),
        "future_event": rest.slice(2 * n, n).with_columns(meter_time_in_millis=pl.lit(far_future, dtype=pl.Int64),
                                                           unique_id=pl.col("unique_id") + "-f"),
        "bad_dimension": rest.slice(3 * n, n).with_columns(
            dimensions=pl.lit([{"key": "bad key!", "value": "x"}],
                              dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.String})))
            .cast(pl.Map(pl.String, pl.String)),
            unique_id=pl.col("unique_id") + "-d"),
    }
    dupes = rest.slice(4 * n, n)  # exact re-sends of events that are in the daily files
    result.defects = {k: v.height for k, v in parts.items()}
    result.duplicates = dupes.height
    pl.concat([*parts.values(), dupes], how="vertical_relaxed").write_parquet(path)
    return path
