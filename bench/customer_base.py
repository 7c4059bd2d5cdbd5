"""A real customer base for the benchmark (bench/run.py `--base`): what users run it on.

    .venv/bin/python bench/customer_base.py DIR --customers 20000 --events 10000000

Shape, unlike bench/generate.py's 2,000 customers:
- `customers` customers (20,000 or 100,000) in seven time zones (a half-hour one included), the
  catalogue written as YAML (`customers.yaml`, `subscriptions.yaml`, one monthly subscription
  each, started 2025-12-01 local), plus a few hundred prepaid credits and promotions;
- high cardinality: each customer has its own projects and the dimensions take many values
  (api_calls: endpoint × region × project; llm_tokens: model × project; requests: region), so a
  customer × meter × dimension combination has few events an hour and `usage_hourly` holds about
  as many rows as there are events;
- five alerts (per customer by day, week and billing period, usage, spend and prepaid balance;
  one over all customers), so `alerts` evaluates every customer;
- one month of events (January 2026) as Parquet, 1% re-sends and 0.1% bad rows, as generate.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.generate import BAD_KINDS, CATALOG, HOUR_WEIGHTS  # noqa: E402

START = dt.date(2026, 1, 1)
DAYS = 31
AS_OF = "2026-02-02T00:00:00Z"
ROWS_PER_FILE = 2_500_000
TIMEZONES = ["UTC", "America/New_York", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata",
             "Asia/Tokyo", "Australia/Sydney"]
ENDPOINTS = [f"/v1/{r}/{a}" for r in ("search", "items", "orders", "auth", "users", "files", "jobs", "events")
             for a in ("list", "get", "create", "update", "delete")]  # 40
REGIONS = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1",
           "sa-east-1"]
MODELS = [f"model-{s}-{v}" for s in ("small", "medium", "large") for v in ("a", "b", "c", "d")]  # 12
PROJECTS = 20  # per customer: p00 .. p19
METERS = ["api_calls", "llm_tokens", "requests", "peak_memory"]
METER_P = [0.60, 0.20, 0.15, 0.05]
PAIRS = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


ALERTS = """\
- {alert_id: busy-day, name: Over 2000 API calls in a day, metric: usage, meter_api_name: api_calls,
   scope: per_customer, window: day, condition: greater_than, threshold: 2000}
- {alert_id: quiet-week, name: Fewer than 5 API calls in a week, metric: usage, meter_api_name: api_calls,
   scope: per_customer, window: week, condition: less_than, threshold: 5}
- {alert_id: big-spender, name: Spend over 100 a period, metric: spend, scope: per_customer,
   window: billing_period, condition: greater_than, threshold: 100}
- {alert_id: tokens-jump, name: Tokens up 50% day over day, metric: usage, meter_api_name: llm_tokens,
   scope: all_customers, window: day, condition: percent_change_above, threshold: 50}
- {alert_id: low-balance, name: Prepaid balance under 5, metric: prepaid_balance, scope: per_customer,
   window: day, condition: less_than, threshold: 5}
"""


def customer_ids(n: int) -> list[str]:
    return [f"cus_{i:06d}" for i in range(n)]


def write_catalog(lake: Path, customers: int, seed: int = 3) -> None:
    """The catalogue: bench/generate.py's meters, items and plan; N customers and subscriptions in YAML."""
    cat = lake / "catalog"
    cat.mkdir(parents=True, exist_ok=True)
    for p in cat.iterdir():
        p.unlink()
    for name, text in CATALOG.items():
        (cat / name).write_text(text)
    rng = np.random.default_rng(seed)
    ids = customer_ids(customers)
    tz = rng.choice(len(TIMEZONES), size=customers, p=[0.25, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05])
    with open(cat / "customers.yaml", "w") as f:
        for i, c in enumerate(ids):
            f.write(f"- {{customer_id: {c}, customer_name: Customer {i}, email: billing+{i}@example.com, "
                    f"timezone: {TIMEZONES[tz[i]]}}}\n")
    with open(cat / "subscriptions.yaml", "w") as f:
        for i, c in enumerate(ids):
            f.write(f"- {{subscription_id: sub_{i:06d}, customer_id: {c}, plan_id: standard, start: 2025-12-01}}\n")
    with open(cat / "credits.yaml", "w") as f:
        for i in range(0, customers, 50):
            f.write(f"- {{grant_id: g_{i:06d}, customer_id: {ids[i]}, amount: \"25.00\", currency: USD, "
                    f"effective_at: 2026-01-01, priority: 10}}\n")
    (cat / "alerts.yaml").write_text(ALERTS)
    with open(cat / "promotions.yaml", "w") as f:
        for i in range(7, customers, 100):
            f.write(f"- {{promotion_id: pr_{i:06d}, customer_id: {ids[i]}, type: percentage, value: 10, "
                    f"applies_to: invoice, start: 2026-01-01, periods: 3}}\n")


def _pick(values: list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(values).gather(pl.Series(idx, dtype=pl.UInt32))


def _pairs(*kv: tuple[str, pl.Series]) -> pl.Expr:
    return pl.concat_list(*(pl.struct(key=pl.lit(k), value=pl.lit(v)) for k, v in kv))


def _chunk(n_good: int, first_id: int, t0_ms: int, t1_ms: int, rng: np.random.Generator, sizes: np.ndarray,
           ids: list[str], tag: str) -> tuple[pl.DataFrame, dict]:
    n_dup = n_good // 99
    n_bad = n_good // 999
    cust = rng.choice(len(ids), size=n_good, p=sizes)
    meter = rng.choice(len(METERS), size=n_good, p=METER_P)
    span_days = max((t1_ms - t0_ms) // 86_400_000, 1)
    day = rng.integers(0, span_days, size=n_good)
    hour = rng.choice(24, size=n_good, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    ms = np.minimum(t0_ms + day * 86_400_000 + hour * 3_600_000 + rng.integers(0, 3_600_000, size=n_good), t1_ms - 1)
    order = np.argsort(ms, kind="stable")
    cust, meter, ms = cust[order], meter[order], ms[order]
    value = np.where(meter == 0, rng.integers(1, 60, size=n_good).astype(np.float64),
             np.where(meter == 1, np.round(rng.lognormal(6.5, 1.0, size=n_good)),
             np.where(meter == 2, 1.0, np.round(rng.lognormal(1.0, 0.8, size=n_good), 2))))
    endpoint = _pick(ENDPOINTS, rng.integers(0, len(ENDPOINTS), size=n_good))
    region = _pick(REGIONS, rng.integers(0, len(REGIONS), size=n_good))
    model = _pick(MODELS, rng.integers(0, len(MODELS), size=n_good))
    project = _pick([f"p{k:02d}" for k in range(PROJECTS)], rng.integers(0, PROJECTS, size=n_good))
    empty = pl.lit([], dtype=PAIRS)
    df = pl.DataFrame({
        "customer_id": _pick(ids, cust), "meter_api_name": _pick(METERS, meter), "meter_value": value,
        "meter_time_in_millis": ms.astype(np.int64),
        "unique_id": pl.int_range(first_id, first_id + n_good, eager=True).cast(pl.String), "_m": pl.Series(meter),
    }).with_columns(
        unique_id=pl.lit(f"{tag}-") + pl.col("unique_id"),
        dimensions=pl.when(pl.col("_m") == 0).then(_pairs(("endpoint", endpoint), ("project", project), ("region", region)))
        .when(pl.col("_m") == 1).then(_pairs(("model", model), ("project", project)))
        .when(pl.col("_m") == 2).then(_pairs(("region", region)))
        .otherwise(empty).cast(pl.Map(pl.String, pl.String)),
    ).drop("_m")
    dup_idx = np.sort(rng.choice(n_good, size=n_dup, replace=False))
    dups = df[dup_idx]
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
            part = part.with_columns(dimensions=pl.lit([{"key": "bad key!", "value": "x"}], dtype=PAIRS)
                                     .cast(pl.Map(pl.String, pl.String)))
        bad_parts.append(part)
        defects[kind] = part.height
    out = pl.concat([df, dups, *bad_parts])
    pos = np.concatenate([np.arange(n_good, dtype=np.float64), dup_idx + 0.5,
                          rng.uniform(0, n_good, size=out.height - n_good - n_dup)])
    return out[np.argsort(pos, kind="stable")], {"good": n_good, "duplicates": n_dup, **defects}


def generate(lake: Path, customers: int, n_events: int, seed: int = 21, rows_per_file: int = ROWS_PER_FILE,
             progress=print) -> dict:
    """The catalogue and ≈ n_events raw rows under <lake>/raw/; the expected counts in expected.json."""
    write_catalog(lake, customers)
    raw = lake / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = rng.pareto(1.5, size=customers) + 0.2
    sizes = sizes / sizes.sum()
    ids = customer_ids(customers)
    n_files = max(1, -(-n_events // rows_per_file))
    t_start = int(dt.datetime(START.year, START.month, START.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    t_end = t_start + DAYS * 86_400_000
    totals = {"rows": 0, "good": 0, "duplicates": 0, **{k: 0 for k in BAD_KINDS}, "files": n_files,
              "customers": customers}
    first_id = 0
    for f in range(n_files):
        rows = n_events // n_files + (1 if f < n_events % n_files else 0)
        n_good = rows - rows // 100 - rows // 1000
        d0 = (f * DAYS) // n_files
        d1 = max(((f + 1) * DAYS) // n_files, d0 + 1)
        df, c = _chunk(n_good, first_id, t_start + d0 * 86_400_000, min(t_start + d1 * 86_400_000, t_end),
                       rng, sizes, ids, f"b{seed}")
        first_id += n_good
        path = raw / f"events-{f:04d}.parquet"
        df.write_parquet(path, row_group_size=250_000)
        totals["rows"] += df.height
        for key, v in c.items():
            totals[key] += v
        if progress:
            progress(f"  generated {path.name}: {df.height:,} rows")
    totals["quarantined"] = sum(totals[k] for k in BAD_KINDS)
    (lake / "expected.json").write_text(json.dumps(totals, indent=1))
    return totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lake")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=21)
    a = ap.parse_args()
    print(json.dumps(generate(Path(a.lake), a.customers, a.events, a.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
