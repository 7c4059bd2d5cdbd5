"""A synthetic catalogue at scale: N customers, one subscription each, some prepaid credits.

    write_catalog(dir, customers=100_000, fmt="yaml" | "csv" | "parquet", seed=8)
    python bench/catalog_gen.py DIR --customers 100000 --format csv
    python bench/catalog_gen.py DIR --customers 100000 --time     # also time load_catalog

`dir` is the catalogue folder (`<lake>/catalog`). The small tables (meters, product items,
plans, settings) are bench/generate.py's, so raw events generated for its customer ids
(`cus_00000` …) bill against this catalogue. The large flat tables (customers, subscriptions,
credits) are written in `fmt`; YAML is written one flow-style record a line, as a person or a
script exporting from a CRM would.

Shape (deterministic for a seed): customers spread over nine time zones (UTC, whole-hour and
half-hour offsets, both hemispheres), a `segment` trait each; one subscription per customer on
one of two monthly plans starting 2026-01-01 (a tenth start at an instant instead of a date);
every fifth customer has a credit grant (USD, priority 5 or 10, half of them expiring, a quarter
restricted to product items).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import CATALOG as SMALL_TABLES  # noqa: E402  (meters, product items, plans)

TIMEZONES = ["UTC", "America/New_York", "America/Los_Angeles", "Europe/Berlin", "Europe/London",
             "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo"]
SEGMENTS = ["smb", "mid-market", "enterprise"]
SECOND_PLAN = """\
- plan_id: starter
  name: Starter
  currency: USD
  billing_period: {interval: month, count: 1}
  items:
    - product_item_id: api-calls
      price: {model: per_unit, unit_price: "0.0005"}
"""
FORMATS = ("yaml", "csv", "parquet")


def customer_id(i: int) -> str:
    return f"cus_{i:05d}"


def frames(customers: int, seed: int = 8) -> dict[str, pl.DataFrame]:
    """The three large tables as typed frames (dates as Date, instants as UTC Datetime, money Decimal)."""
    rng = np.random.default_rng(seed)
    n = customers
    ids = pl.Series([customer_id(i) for i in range(n)])
    tz = pl.Series(TIMEZONES).gather(pl.Series(rng.integers(0, len(TIMEZONES), n), dtype=pl.UInt32))
    seg = pl.Series(SEGMENTS).gather(pl.Series(rng.choice(3, n, p=[0.7, 0.25, 0.05]), dtype=pl.UInt32))
    cust = pl.DataFrame({"customer_id": ids,
                         "customer_name": pl.Series([f"Customer {i}" for i in range(n)]),
                         "email": pl.Series([f"billing@c{i}.example" for i in range(n)]),
                         "timezone": tz, "segment": seg})
    at_instant = rng.random(n) < 0.1
    subs = pl.DataFrame({
        "subscription_id": pl.Series([f"sub_{i:05d}" for i in range(n)]),
        "customer_id": ids,
        "plan_id": pl.Series(["standard", "starter"]).gather(
            pl.Series((rng.random(n) < 0.3).astype(np.uint32))),
        "start_date": pl.repeat(dt.date(2026, 1, 1), n, eager=True),
        "at_instant": pl.Series(at_instant),
    })
    g = np.arange(0, n, 5)
    m = len(g)
    credits = pl.DataFrame({
        "grant_id": pl.Series([f"grant_{i:05d}" for i in g]),
        "customer_id": ids.gather(pl.Series(g, dtype=pl.UInt32)),
        "amount": pl.Series([Decimal(int(c)) / 100 for c in rng.integers(1_000, 100_000, m)],
                            dtype=pl.Decimal(38, 2)),
        "currency": pl.repeat("USD", m, eager=True),
        "effective_at": pl.repeat(dt.date(2026, 1, 1), m, eager=True),
        "expires": pl.Series(rng.random(m) < 0.5),
        "priority": pl.Series(np.where(rng.random(m) < 0.3, 5, 10).astype(np.int64)),
        "restricted": pl.Series(rng.random(m) < 0.25),
    })
    return {"customers": cust, "subscriptions": subs, "credits": credits}


def write_catalog(dir: Path | str, customers: int = 100_000, fmt: str = "yaml", seed: int = 8) -> Path:
    """Write a valid catalogue of `customers` customers into the folder `dir`; return the folder."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():  # one file per table: drop another format's files of an earlier call
        if f.stem in ("customers", "subscriptions", "credits") and f.is_file():
            f.unlink()
    for name, text in SMALL_TABLES.items():
        (out / name).write_text(text + SECOND_PLAN if name == "plans.yaml" else text)
    t = frames(customers, seed)
    c, s, g = t["customers"], t["subscriptions"], t["credits"]
    if fmt == "yaml":
        _write_yaml(out, c, s, g)
        return out
    start = (pl.when(pl.col("at_instant")).then(pl.col("start_date").cast(pl.String) + "T08:30:00Z")
             .otherwise(pl.col("start_date").cast(pl.String)))
    sub_cols = ["subscription_id", "customer_id", "plan_id"]
    grant_cols = ["grant_id", "customer_id", "amount", "currency", "effective_at", "priority"]
    expires = pl.when(pl.col("expires")).then(pl.col("effective_at").dt.offset_by("1y"))
    restricted = pl.when(pl.col("restricted"))
    if fmt == "csv":
        c.select("customer_id", "customer_name", "email", "timezone",
                 traits=pl.format('{{"segment": "{}"}}', pl.col("segment"))).write_csv(out / "customers.csv")
        s.select(*sub_cols,
                 start=start, end=pl.lit(None, pl.String)).write_csv(out / "subscriptions.csv")
        g.select(*grant_cols, expires_at=expires.cast(pl.String),
                 product_item_ids=restricted.then(pl.lit("api-calls|tokens"))).write_csv(out / "credits.csv")
    else:
        traits = pl.concat_list(pl.struct(key=pl.lit("segment"), value=pl.col("segment"))).cast(
            pl.Map(pl.String, pl.String))
        c.select("customer_id", "customer_name", "email", "timezone", traits=traits).write_parquet(
            out / "customers.parquet")
        # a column holds one type: ISO text, since some starts are dates and some instants
        s.select(*sub_cols, start=start, end=pl.lit(None, pl.String)).write_parquet(out / "subscriptions.parquet")
        g.select(*grant_cols, expires_at=expires,
                 product_item_ids=restricted.then(pl.lit(["api-calls", "tokens"]))).write_parquet(
            out / "credits.parquet")
    return out


def _write_yaml(out: Path, c: pl.DataFrame, s: pl.DataFrame, g: pl.DataFrame) -> None:
    def q(v: str) -> str:
        return json.dumps(v)  # a JSON string is a YAML flow scalar

    with (out / "customers.yaml").open("w") as f:
        for r in c.iter_rows(named=True):
            f.write(f"- {{customer_id: {r['customer_id']}, customer_name: {q(r['customer_name'])}, "
                    f"email: {r['email']}, timezone: {r['timezone']}, traits: {{segment: {r['segment']}}}}}\n")
    with (out / "subscriptions.yaml").open("w") as f:
        for r in s.iter_rows(named=True):
            start = (f"{r['start_date'].isoformat()}T08:30:00Z" if r["at_instant"] else r["start_date"].isoformat())
            f.write(f"- {{subscription_id: {r['subscription_id']}, customer_id: {r['customer_id']}, "
                    f"plan_id: {r['plan_id']}, start: {start}}}\n")
    with (out / "credits.yaml").open("w") as f:
        for r in g.iter_rows(named=True):
            d = r["effective_at"]
            extra = (f", expires_at: {d.replace(year=d.year + 1).isoformat()}" if r["expires"] else "") + (
                ", product_item_ids: [api-calls, tokens]" if r["restricted"] else "")
            f.write(f"- {{grant_id: {r['grant_id']}, customer_id: {r['customer_id']}, amount: \"{r['amount']:f}\", "
                    f"currency: {r['currency']}, effective_at: {d.isoformat()}, priority: {r['priority']}{extra}}}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="the catalogue folder to write (e.g. LAKE/catalog)")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--format", choices=FORMATS, default="yaml")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--time", action="store_true", help="then time load_catalog on it (a fresh process cache)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    write_catalog(a.dir, a.customers, a.format, a.seed)
    print(f"wrote {a.customers:,} customers ({a.format}) to {a.dir} in {time.perf_counter() - t0:.1f} s")
    if a.time:
        from catalog import load_catalog

        t0 = time.perf_counter()
        cat = load_catalog(a.dir)
        print(f"load_catalog: {time.perf_counter() - t0:.2f} s ({len(cat.customers):,} customers, "
              f"{len(cat.subscriptions):,} subscriptions, {len(cat.credits):,} credits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
