"""Synthetic landing zone for the benchmark (bench/run.py): N raw events as Parquet files.

Vectorised (numpy + Polars, no per-row Python): 100M rows generate in minutes.

Shape: `CUSTOMERS` customers with heavy-tailed (Pareto) sizes; four meters of the additive
family (sum with two dimensions, sum with one, count with one, max without); event times
spread over `days` days from `start`, increasing through the files (files land in arrival
order, each covering a slice of the period), with a daily cycle. Of the N rows written:
1% are exact re-sends of another row of the same file (duplicates) and 0.1% are bad rows,
a quarter each `missing_field`, `non_finite_value`, `bad_timestamp`, `bad_dimension`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl

CUSTOMERS = 2000
ROWS_PER_FILE = 2_500_000
ENDPOINTS = ["/v1/search", "/v1/items", "/v1/orders", "/v1/auth"]
REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]
MODELS = ["small", "large", "medium"]
METERS = ["api_calls", "llm_tokens", "requests", "peak_memory"]
METER_P = [0.60, 0.20, 0.15, 0.05]
HOUR_WEIGHTS = np.array([2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 6, 8, 9, 10, 10, 10, 10.5, 10, 9, 8, 7, 6, 5, 4, 3, 2.5])
BAD_KINDS = ["missing_field", "non_finite_value", "bad_timestamp", "bad_dimension"]

CATALOG = {
    "meters.yaml": """\
- {meter_api_name: api_calls, label: API calls, type: sum, unit: calls, dimensions: [endpoint, region]}
- {meter_api_name: llm_tokens, label: LLM tokens, type: sum, unit: tokens, dimensions: [model]}
- {meter_api_name: requests, label: Requests, type: count, unit: requests, dimensions: [region]}
- {meter_api_name: peak_memory, label: Peak memory, type: max, unit: GB}
""",
    "product_items.yaml": """\
- {product_item_id: api-calls, name: API calls, meter_api_name: api_calls}
- {product_item_id: tokens, name: LLM tokens, meter_api_name: llm_tokens}
- {product_item_id: requests, name: Requests, meter_api_name: requests}
- {product_item_id: memory, name: Peak memory, meter_api_name: peak_memory}
""",
    "plans.yaml": """\
- plan_id: standard
  name: Standard
  currency: USD
  billing_period: {interval: month, count: 1}
  fees:
    - {fee_id: platform, name: Platform fee, amount: "49.00", cadence: recurring, prorate: true}
  items:
    - product_item_id: api-calls
      price:
        model: graduated
        tiers:
          - {up_to: 10000, unit_price: "0", flat_fee: "0"}
          - {up_to: 1000000, unit_price: "0.0004"}
          - {up_to: null, unit_price: "0.0002"}
    - product_item_id: tokens
      price:
        model: per_unit
        dimensions:
          keys: [model]
          rates:
            - match: {model: small}
              price: {model: per_unit, unit_price: "0.000002"}
            - match: {model: large}
              price: {model: per_unit, unit_price: "0.00001"}
          default: {model: per_unit, unit_price: "0.000005"}
    - product_item_id: requests
      price: {model: package, package_size: 1000, package_price: "0.10"}
    - product_item_id: memory
      price: {model: per_unit, unit_price: "1.50"}
""",
    "settings.yaml": "grace_period_hours: 24\nmax_event_age_days: 120\n",
}


SUBSCRIPTION_START = dt.date(2026, 1, 1)  # fixed: landing a later day must not move the plans


def write_catalog(lake: Path, start: dt.date = SUBSCRIPTION_START) -> None:
    cat = lake / "catalog"
    cat.mkdir(parents=True, exist_ok=True)
    for name, text in CATALOG.items():
        (cat / name).write_text(text)
    ids = [f"cus_{i:05d}" for i in range(CUSTOMERS)]
    pl.DataFrame({"customer_id": ids, "customer_name": [f"Customer {i}" for i in range(CUSTOMERS)],
                  "timezone": ["UTC"] * CUSTOMERS}).write_csv(cat / "customers.csv")
    pl.DataFrame({"subscription_id": [f"sub_{i:05d}" for i in range(CUSTOMERS)], "customer_id": ids,
                  "plan_id": ["standard"] * CUSTOMERS, "start": [start.isoformat()] * CUSTOMERS,
                  "end": [None] * CUSTOMERS}, schema_overrides={"end": pl.String}).write_csv(cat / "subscriptions.csv")


def _pick(values: list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(values).gather(pl.Series(idx, dtype=pl.UInt32))


def _chunk(n_good: int, first_id: int, t0_ms: int, t1_ms: int, rng: np.random.Generator,
           sizes: np.ndarray, tag: str) -> tuple[pl.DataFrame, dict]:
    """n_good distinct good events in [t0, t1), plus 1% re-sends and 0.1% bad rows (of the total)."""
    n_dup = n_good // 99          # ≈ 1% of the rows written
    n_bad = n_good // 999         # ≈ 0.1%
    cust = rng.choice(CUSTOMERS, size=n_good, p=sizes)
    meter = rng.choice(len(METERS), size=n_good, p=METER_P)
    # times: days spread evenly over the file's slice, hours by the daily cycle
    span_days = max((t1_ms - t0_ms) // 86_400_000, 1)
    day = rng.integers(0, span_days, size=n_good)
    hour = rng.choice(24, size=n_good, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    ms = t0_ms + day * 86_400_000 + hour * 3_600_000 + rng.integers(0, 3_600_000, size=n_good)
    ms = np.minimum(ms, t1_ms - 1)
    order = np.argsort(ms, kind="stable")
    cust, meter, ms = cust[order], meter[order], ms[order]
    value = np.where(meter == 0, rng.integers(1, 60, size=n_good).astype(np.float64),
             np.where(meter == 1, np.round(rng.lognormal(6.5, 1.0, size=n_good)),
             np.where(meter == 2, 1.0, np.round(rng.lognormal(1.0, 0.8, size=n_good), 2))))
    endpoint = _pick(ENDPOINTS, rng.integers(0, len(ENDPOINTS), size=n_good))
    region = _pick(REGIONS, rng.choice(len(REGIONS), size=n_good, p=[0.5, 0.35, 0.15]))
    model = _pick(MODELS, rng.choice(len(MODELS), size=n_good, p=[0.6, 0.3, 0.1]))
    m = pl.Series(meter)
    df = pl.DataFrame({
        "customer_id": _pick([f"cus_{i:05d}" for i in range(CUSTOMERS)], cust),
        "meter_api_name": _pick(METERS, meter),
        "meter_value": value,
        "meter_time_in_millis": ms.astype(np.int64),
        "unique_id": pl.int_range(first_id, first_id + n_good, eager=True).cast(pl.String),
        "_m": m,
    }).with_columns(
        unique_id=pl.lit(f"{tag}-") + pl.col("unique_id"),
        dimensions=pl.when(pl.col("_m") == 0).then(
            pl.concat_list(pl.struct(key=pl.lit("endpoint"), value=pl.lit(endpoint)),
                           pl.struct(key=pl.lit("region"), value=pl.lit(region))))
        .when(pl.col("_m") == 1).then(pl.concat_list(pl.struct(key=pl.lit("model"), value=pl.lit(model))))
        .when(pl.col("_m") == 2).then(pl.concat_list(pl.struct(key=pl.lit("region"), value=pl.lit(region))))
        .otherwise(pl.lit([], dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.String}))))
        .cast(pl.Map(pl.String, pl.String)),
    ).drop("_m")
    # re-sends: exact copies of earlier rows of this file, spread through it
    dup_idx = np.sort(rng.choice(n_good, size=n_dup, replace=False))
    dups = df[dup_idx]
    # bad rows: copies of api_calls rows with a new unique_id and one defect each
    src = df.filter(pl.col("meter_api_name") == "api_calls").head(n_bad)
    k = src.height // len(BAD_KINDS)
    bad_parts, defects = [], {}
    for j, kind in enumerate(BAD_KINDS):
        part = src.slice(j * k, k if j < len(BAD_KINDS) - 1 else src.height - j * k)
        part = part.with_columns(unique_id=pl.col("unique_id") + f"-bad{j}")
        if kind == "missing_field":
            part = part.with_columns(customer_id=pl.lit(None, dtype=pl.String))
        elif kind == "non_finite_value":
            part = part.with_columns(meter_value=pl.lit(float("nan")))
        elif kind == "bad_timestamp":
            part = part.with_columns(meter_time_in_millis=pl.lit(-5, dtype=pl.Int64))
        else:
            part = part.with_columns(dimensions=pl.lit([{"key": "bad key!", "value": "x"}],
                                                      dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.String})))
                                     .cast(pl.Map(pl.String, pl.String)))
        bad_parts.append(part)
        defects[kind] = part.height
    out = pl.concat([df, dups, *bad_parts])
    # interleave: re-sends and bad rows land among the good rows (a stable random position)
    pos = np.concatenate([np.arange(n_good, dtype=np.float64), dup_idx + 0.5,
                          rng.uniform(0, n_good, size=out.height - n_good - n_dup)])
    out = out[np.argsort(pos, kind="stable")]
    return out, {"good": n_good, "duplicates": n_dup, **defects}


def generate(lake: Path, n_events: int, start: dt.date, days: int, seed: int = 8,
             rows_per_file: int = ROWS_PER_FILE, prefix: str = "events", progress=print) -> dict:
    """Write the catalogue and ≈ n_events raw rows under <lake>/raw/; return the expected counts."""
    write_catalog(lake)
    raw = lake / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = rng.pareto(1.2, size=CUSTOMERS) + 0.05
    sizes = sizes / sizes.sum()
    n_files = max(1, -(-n_events // rows_per_file))
    t_start = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    t_end = t_start + days * 86_400_000
    totals = {"rows": 0, "good": 0, "duplicates": 0, **{k: 0 for k in BAD_KINDS}, "files": n_files}
    first_id = 0
    for f in range(n_files):
        rows = n_events // n_files + (1 if f < n_events % n_files else 0)
        n_good = rows - rows // 100 - rows // 1000
        # each file covers its share of the days (files in arrival order)
        d0 = (f * days) // n_files
        d1 = max(((f + 1) * days) // n_files, d0 + 1)
        df, c = _chunk(n_good, first_id, t_start + d0 * 86_400_000, min(t_start + d1 * 86_400_000, t_end),
                       rng, sizes, f"{prefix}{seed}")
        first_id += n_good
        path = raw / f"{prefix}-{f:04d}.parquet"
        df.write_parquet(path, row_group_size=250_000)
        totals["rows"] += df.height
        for k, v in c.items():
            totals[k] += v
        if progress:
            progress(f"  generated {path.name}: {df.height:,} rows")
    totals["quarantined"] = sum(totals[k] for k in BAD_KINDS)
    (lake / "expected.json").write_text(json.dumps(totals, indent=1))
    return totals
