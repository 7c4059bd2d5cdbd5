"""The performance benchmark (issue 8): meterbill against the bare-engine limit and against pandas.

    .venv/bin/python bench/run.py --events 1000000 10000000 [100000000] [--reuse]
                                  [--memory-limit 2GB] [--dir bench/out/run] [--no-pandas]
                                  [--pandas-max 20000000] [--incremental 30000] [--pricing 100000]
                                  [--results bench/results.md]

For each N, on the same generated files (bench/generate.py: N rows of Parquet, 1% re-sends,
0.1% bad rows, one month), each system runs in its own child process; the parent reads the
child's peak resident memory (ru_maxrss from wait4) and wall time:

* meterbill: the real Prefect flows, ingest -> meter -> bill for one month, on a fresh
  warehouse, with `METERBILL_MEMORY_LIMIT` (DuckDB's memory_limit). Prefect's first-flow start
  (the ephemeral API server) is timed apart from the data work and reported on its own.
* baseline: one hand-written DuckDB SQL script, the irreducible work: read the raw Parquet, drop
  invalid rows, drop duplicates by key, aggregate per customer x meter x dimensions x hour, write
  Parquet (same memory_limit).
* pandas, two jobs, as a data team would write them first, skipped above `--pandas-max` rows
  (each needs the whole month in memory):
  - pandas (the baseline's job): read_parquet, boolean masks, drop_duplicates, groupby,
    to_parquet; float values, no reasons, no events table;
  - pandas (meterbill's job): ingest and meter as SPEC §2/§4/§7 ask (reasons, exact decimals,
    content keys, cancellations, the events, quarantine, ingest_files and usage_hourly tables),
    checked against meterbill's usage_hourly (rows and exact sums per meter) when both ran.

`--incremental D` builds a lake of 90 days x D events/day, runs meterbill on it (full), adds one
more day and runs again: the incremental cost. `--pricing N` runs tests/pricing/timing.py
(build_invoices for N customers x 5 items, issue 5). Results go to bench/results.md (a table per
run, the machine, the load average, the command) and bench/out/run/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = dt.date(2026, 1, 1)
DAYS = 31
AS_OF = "2026-02-02T00:00:00Z"  # January is final (grace 24 h), February's first day a draft
PY = sys.executable


# ---------------------------------------------------------------- child processes


def _run_child(args: list[str], env: dict | None = None, log: Path | None = None, python: bool = True) -> dict:
    """Run `python bench/run.py _worker ...` (or any argv; `python=False`: a command); return its
    JSON, wall time and peak RSS."""
    t0 = time.perf_counter()
    out = open(log, "w") if log else subprocess.DEVNULL
    p = subprocess.Popen([PY, *args] if python else args, cwd=ROOT, env={**os.environ, **(env or {})},
                         stdout=subprocess.PIPE, stderr=out, text=True)
    stdout = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if log:
        out.close()
    res: dict = {"stdout_lines": [x for x in stdout.strip().splitlines() if not x.startswith("{")]}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            res.update(json.loads(line))
            break
    res.update(process_wall_s=round(wall, 2), peak_rss_mb=round(ru.ru_maxrss / 1024), exit=p.returncode,
               cpu_s=round(ru.ru_utime + ru.ru_stime, 1))
    if p.returncode != 0:
        res["error"] = (log.read_text()[-2000:] if log else stdout[-2000:])
    return res


def _vm_hwm_mb() -> int:
    """This process's peak resident memory so far (MB), from /proc/self/status."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def worker_meterbill(lake: str, as_of: str, profile: str | None) -> dict:
    t0 = time.perf_counter()
    import flows  # noqa: F401  (Prefect settings)
    from prefect import flow

    from flows.bill import bill_flow
    from flows.engine import local_engine
    from flows.ingest import ingest_flow
    from flows.meter import meter_flow

    t_import = time.perf_counter() - t0
    with local_engine():  # as `meterbill` runs flows on the local API (flows/common.py)
        return _meterbill_stages(flow, ingest_flow, meter_flow, bill_flow, lake, as_of, profile, t_import)


def _meterbill_stages(flow, ingest_flow, meter_flow, bill_flow, lake: str, as_of: str, profile: str | None,
                      t_import: float) -> dict:

    @flow(name="bench-warm-up")
    def warm() -> int:
        return 1

    t = time.perf_counter()
    warm()
    t_prefect = time.perf_counter() - t
    stages: dict[str, float] = {}
    hwm: dict[str, int] = {"start": _vm_hwm_mb()}
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    res = {}
    for name, fn in (("ingest", ingest_flow), ("meter", meter_flow), ("bill", bill_flow)):
        t = time.perf_counter()
        res[name] = fn(lake=lake, as_of=as_of)
        stages[name] = round(time.perf_counter() - t, 2)
        hwm[name] = _vm_hwm_mb()
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    ing = res["ingest"]
    return {"system": "meterbill", "import_s": round(t_import, 2), "prefect_start_s": round(t_prefect, 2),
            "stages": stages, "wall_s": round(sum(stages.values()), 2), "peak_rss_mb_after": hwm,
            "accepted": ing.get("accepted"), "duplicates": ing.get("duplicates"),
            "quarantined": ing.get("quarantined"), "rows_read": ing.get("rows_read"),
            "usage_rows": res["meter"].get("rows"), "invoices": res["bill"].get("invoices")}


def worker_prefect_start() -> dict:
    """The one-time cost `meterbill run` pays before its first flow: imports and the local API's start."""
    t0 = time.perf_counter()
    import flows  # noqa: F401
    from prefect import flow

    from flows.engine import local_engine

    @flow(name="bench-warm-up")
    def warm() -> int:
        return 1

    t_import = time.perf_counter() - t0
    with local_engine():
        t = time.perf_counter()
        warm()
        t_start = time.perf_counter() - t
    return {"system": "prefect_start", "import_s": round(t_import, 2), "prefect_start_s": round(t_start, 2),
            "wall_s": round(time.perf_counter() - t0, 2)}


STAGE_LINE = re.compile(r"^(ingest|meter|bill|alerts)\s.*?\s(\d+(?:\.\d+)?)s$")


def run_command(lake: Path, as_of: str, log: Path, profile: Path | None = None) -> dict:
    """`meterbill run` as a user types it, in its own process: wall time, CPU, peak RSS, stage times."""
    cmd = [str(Path(PY).parent / "meterbill"), "run", "--lake", str(lake), "--as-of", as_of, "--no-deliver"]
    if profile:  # the same command under cProfile (slower: not the timed row)
        cmd = [PY, "-c", "import cProfile, sys; from flows.cli import main; "
               f"cProfile.run('main({cmd[1:]!r})', {str(profile)!r})"]
    res = _run_child(cmd, log=log, python=False)
    out = res.pop("stdout_lines", [])
    res["stages"] = {m.group(1): float(m.group(2)) for m in map(STAGE_LINE.match, out) if m}
    res["output_lines"] = len(out)
    res["summary"] = out[:12]
    return res


DIM_KEY_RE = "^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


def baseline_sql(raw_glob: str, out_dir: str) -> str:
    """The bare-engine job in one statement (DuckDB)."""
    return f"""
COPY (
  WITH valid AS (
    SELECT customer_id, meter_api_name, unique_id, meter_value, meter_time_in_millis, dimensions
    FROM read_parquet('{raw_glob}')
    WHERE customer_id IS NOT NULL AND meter_api_name IS NOT NULL
      AND meter_time_in_millis > 0 AND isfinite(meter_value)
      AND len(list_filter(map_keys(dimensions), lambda k: NOT regexp_full_match(k, '{DIM_KEY_RE}'))) = 0
  ), dedup AS (
    SELECT customer_id, meter_api_name, unique_id,
           any_value(meter_value) AS meter_value, any_value(meter_time_in_millis) AS ms,
           any_value(dimensions) AS dimensions
    FROM valid GROUP BY customer_id, meter_api_name, unique_id
  )
  SELECT customer_id, meter_api_name, dimensions,
         time_bucket(INTERVAL 1 HOUR, make_timestamp(ms * 1000)) AS hour,
         sum(CAST(meter_value AS DECIMAL(38, 9))) AS value_sum, count(*) AS event_count,
         min(CAST(meter_value AS DECIMAL(38, 9))) AS value_min, max(CAST(meter_value AS DECIMAL(38, 9))) AS value_max,
         CAST(make_timestamp(ms * 1000) AS DATE) AS hour_date
  FROM dedup GROUP BY ALL
) TO '{out_dir}' (FORMAT parquet, PARTITION_BY (hour_date), OVERWRITE_OR_IGNORE)
"""


def worker_baseline(lake: str, memory_limit: str) -> dict:
    import duckdb

    out = Path(lake) / "bench-baseline"
    shutil.rmtree(out, ignore_errors=True)
    tmp = Path(lake) / "bench-tmp"
    tmp.mkdir(exist_ok=True)
    t = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{tmp}'")
    con.execute(baseline_sql(f"{lake}/raw/*.parquet", str(out)))
    wall = time.perf_counter() - t
    n = con.sql(f"SELECT sum(event_count), count(*) FROM read_parquet('{out}/**/*.parquet')").fetchall()[0]
    return {"system": "baseline", "wall_s": round(wall, 2), "accepted": int(n[0]), "usage_rows": int(n[1])}


def worker_pandas(lake: str) -> dict:
    import re

    import numpy as np
    import pandas as pd

    out = Path(lake) / "bench-pandas.parquet"
    t = time.perf_counter()
    files = sorted((Path(lake) / "raw").glob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    key_re = re.compile(DIM_KEY_RE)
    good_dims = df["dimensions"].map(lambda d: d is None or all(key_re.match(k) for k, _ in d))
    df = df[df["customer_id"].notna() & df["meter_api_name"].notna() & (df["meter_time_in_millis"] > 0)
            & np.isfinite(df["meter_value"]) & good_dims]
    df = df.drop_duplicates(["customer_id", "meter_api_name", "unique_id"])
    df["hour"] = pd.to_datetime(df["meter_time_in_millis"], unit="ms", utc=True).dt.floor("h")
    df["dims_key"] = df["dimensions"].map(lambda d: "," .join(f"{k}={v}" for k, v in sorted(d)) if d is not None else "")
    agg = (df.groupby(["customer_id", "meter_api_name", "dims_key", "hour"])["meter_value"]
           .agg(value_sum="sum", event_count="count", value_min="min", value_max="max").reset_index())
    agg.to_parquet(out)
    wall = time.perf_counter() - t
    return {"system": "pandas", "wall_s": round(wall, 2), "accepted": int(agg["event_count"].sum()),
            "usage_rows": len(agg)}


def worker_pandas_full(lake: str, as_of: str) -> dict:
    """meterbill's ingest and meter job (SPEC §2, §4, §7) as a data team would first write it in
    pandas: the whole month in one frame, vectorised masks wherever pandas has them, Python only
    per dimension map (pandas has no map type), exact values as pandas' Arrow decimal type.

    It does what the minimal pandas job leaves out: the sha256 of each file, a reason and a detail
    for every rejected record (written to a quarantine table), every SPEC §2 rule (lengths,
    future and too old events, dimension values), the content key of events without unique_id,
    cancellations, the events table (every column, one folder per event date), per-file counts
    (ingest_files), and usage_hourly with exact values by meter type. Not billing: its wall time
    is compared with meterbill's whole run, bill included."""
    import hashlib
    import re

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    out = Path(lake) / "bench-pandas-full"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t = time.perf_counter()
    cat = Path(lake) / "catalog"
    settings = yaml.safe_load((cat / "settings.yaml").read_text()) or {}
    types = {m["meter_api_name"]: m["type"] for m in yaml.safe_load((cat / "meters.yaml").read_text())}
    now = pd.Timestamp(as_of)
    oldest = now - pd.Timedelta(days=settings.get("max_event_age_days", 60))
    ingested_at = pd.Timestamp.now(tz="UTC")
    dec = pd.ArrowDtype(pa.decimal128(38, 9))
    dims_type = pa.map_(pa.string(), pa.string())

    frames, files = [], []
    for f in sorted((Path(lake) / "raw").glob("*.parquet")):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        tbl = pq.read_table(f)
        df = tbl.to_pandas()
        df["value_null"] = tbl["meter_value"].is_null().to_numpy(zero_copy_only=False)
        df["source_file"] = f.name
        df["row_number"] = np.arange(1, len(df) + 1)
        frames.append(df)
        files.append({"source_file": f.name, "sha256": sha, "rows_read": len(df)})
    df = pd.concat(frames, ignore_index=True)
    del frames

    # validation: the first rule a record breaks is its reason
    reason = pd.Series(None, index=df.index, dtype=object)
    detail = pd.Series(None, index=df.index, dtype=object)

    def flag(mask, code: str, field: str) -> None:
        new = np.asarray(mask, dtype=bool) & reason.isna().to_numpy()
        reason[new] = code
        detail[new] = field

    key_re = re.compile(DIM_KEY_RE)

    def bad_dims(d) -> bool:
        return d is not None and any(not key_re.match(k) or v is None or not 1 <= len(v) <= 200 for k, v in d)

    cust_len = df["customer_id"].str.len()
    needs_value = ~df["meter_api_name"].map(types).isin(["count", "unique_count"])
    ms = df["meter_time_in_millis"]
    event_time = pd.to_datetime(ms, unit="ms", utc=True)
    flag(df["customer_id"].isna(), "missing_field", "customer_id")
    flag(df["meter_api_name"].isna(), "missing_field", "meter_api_name")
    flag(needs_value & df["value_null"], "missing_field", "meter_value")
    flag(ms.isna(), "missing_field", "meter_time_in_millis")
    flag((cust_len < 1) | (cust_len > 200), "bad_type", "customer_id")
    flag(needs_value & ~np.isfinite(df["meter_value"]), "non_finite_value", "meter_value")
    flag(ms <= 0, "bad_timestamp", "meter_time_in_millis")
    flag(event_time > now + pd.Timedelta(minutes=5), "future_event", "meter_time_in_millis")
    flag(event_time < oldest, "too_old", "meter_time_in_millis")
    flag(df["dimensions"].map(bad_dims), "bad_dimension", "dimensions")

    bad = reason.notna()
    quarantine = df[bad].drop(columns="value_null").assign(reason=reason[bad], detail=detail[bad],
                                                           ingested_at=ingested_at)
    ev = df[~bad].drop(columns="value_null")
    del df
    ev["event_time"] = event_time[~bad]
    ev["meter_value"] = ev["meter_value"].where(needs_value[~bad], 0).round(9).astype(dec)
    ev["dims_key"] = ev["dimensions"].map(lambda d: "\x1f".join(f"{k}={v}" for k, v in sorted(d)) if d else "")
    ev["is_cancel"] = ev["dimensions"].map(lambda d: bool(d) and ("meterbill_cancel", "true") in d)
    ev["event_date"] = ev["event_time"].dt.date
    ev["key"] = ev["unique_id"]
    no_id = ev["unique_id"].isna()  # the content key, only where it is needed
    ev.loc[no_id, "key"] = ("c:" + ev.loc[no_id, "event_time"].astype(str) + "|"
                            + ev.loc[no_id, "meter_value"].astype(str) + "|" + ev.loc[no_id, "dims_key"])
    dup = ev.duplicated(["customer_id", "meter_api_name", "key", "is_cancel", "event_date"])
    duplicates = ev[dup]
    ev = ev[~dup].drop(columns="key")
    ev["ingested_at"] = ingested_at

    # the tables of ingest
    ev_schema = pa.schema([("customer_id", pa.string()), ("meter_api_name", pa.string()),
                           ("meter_value", pa.decimal128(38, 9)), ("event_time", pa.timestamp("us", "UTC")),
                           ("unique_id", pa.string()), ("dimensions", dims_type), ("is_cancel", pa.bool_()),
                           ("source_file", pa.string()), ("row_number", pa.int64()),
                           ("ingested_at", pa.timestamp("us", "UTC")), ("event_date", pa.date32())])
    ev[ev_schema.names].to_parquet(out / "events", partition_cols=["event_date"], schema=ev_schema, index=False)
    q_schema = pa.schema([("customer_id", pa.string()), ("meter_api_name", pa.string()), ("meter_value", pa.float64()),
                          ("meter_time_in_millis", pa.int64()), ("unique_id", pa.string()), ("dimensions", dims_type),
                          ("reason", pa.string()), ("detail", pa.string()), ("source_file", pa.string()),
                          ("row_number", pa.int64()), ("ingested_at", pa.timestamp("us", "UTC"))])
    quarantine[q_schema.names].to_parquet(out / "quarantine.parquet", schema=q_schema, index=False)
    counts = pd.DataFrame(files).set_index("source_file")
    counts["accepted"] = ev.groupby("source_file").size()
    counts["duplicates"] = duplicates.groupby("source_file").size()
    counts["quarantined"] = quarantine.groupby("source_file").size()
    counts = counts.fillna(0).astype({"accepted": "int64", "duplicates": "int64", "quarantined": "int64"})
    assert (counts["rows_read"] == counts["accepted"] + counts["duplicates"] + counts["quarantined"]).all()
    counts.assign(status="ingested", ingested_at=ingested_at).reset_index().to_parquet(out / "ingest_files.parquet",
                                                                                       index=False)

    # meter: cancellations, then per customer x meter x dimensions x hour, the value by meter type
    keys = ["customer_id", "meter_api_name", "unique_id", "event_time"]
    cancels = ev.loc[ev["is_cancel"], keys].drop_duplicates().assign(cancelled=True)
    live = ev[~ev["is_cancel"]]
    if len(cancels):
        live = live.merge(cancels, on=keys, how="left")
        live = live[live["cancelled"].isna()]
    live = live.assign(hour=live["event_time"].dt.floor("h"))
    usage = (live.groupby(["customer_id", "meter_api_name", "dims_key", "hour"], sort=False)
             .agg(dimensions=("dimensions", "first"), event_count=("meter_value", "size"),
                  value_sum=("meter_value", "sum"), value_min=("meter_value", "min"),
                  value_max=("meter_value", "max"))
             .reset_index())
    kind = usage["meter_api_name"].map(types)
    usage["value"] = usage["value_sum"]
    for typ, col in (("max", "value_max"), ("min", "value_min")):
        usage.loc[kind == typ, "value"] = usage.loc[kind == typ, col]
    usage.loc[kind == "count", "value"] = usage.loc[kind == "count", "event_count"].astype(dec)
    usage["hour_date"] = usage["hour"].dt.date
    u_schema = pa.schema([("customer_id", pa.string()), ("meter_api_name", pa.string()), ("dimensions", dims_type),
                          ("dims_key", pa.string()), ("hour", pa.timestamp("us", "UTC")),
                          ("value", pa.decimal128(38, 9)), ("event_count", pa.int64()),
                          ("value_sum", pa.decimal128(38, 9)), ("value_min", pa.decimal128(38, 9)),
                          ("value_max", pa.decimal128(38, 9)), ("hour_date", pa.date32())])
    usage[u_schema.names].to_parquet(out / "usage_hourly", partition_cols=["hour_date"], schema=u_schema, index=False)
    wall = time.perf_counter() - t
    return {"system": "pandas_full", "wall_s": round(wall, 2), "accepted": len(ev),
            "duplicates": len(duplicates), "quarantined": len(quarantine), "usage_rows": len(usage)}


def usage_totals(path: str) -> dict[str, list]:
    """meter -> [hourly rows, Σ value] of a usage_hourly folder (exact decimals, as text)."""
    import duckdb

    q = (f"SELECT meter_api_name, count(*), CAST(sum(value) AS VARCHAR) FROM read_parquet('{path}/**/*.parquet', "
         "hive_partitioning = false) GROUP BY 1 ORDER BY 1")
    return {m: [n, s] for m, n, s in duckdb.sql(q).fetchall()}


# ---------------------------------------------------------------- the parent


def uptime() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    return {"cores": os.cpu_count(), "memory_gb": mem, "python": platform.python_version()}


def _generate(lake: Path, n: int, start: dt.date, days: int, rows_per_file: int | None = None,
              seed: int = 8, prefix: str = "events") -> None:
    """Generate in a child process: the parent stays small, so the systems' children (whose
    ru_maxrss starts from the parent's high-water mark at fork on Linux) measure only themselves."""
    code = ("import sys, datetime as dt; sys.path.insert(0, '.'); from pathlib import Path; "
            "from bench.generate import generate, ROWS_PER_FILE; "
            f"generate(Path({str(lake)!r}), {n}, dt.date.fromisoformat({start.isoformat()!r}), {days}, seed={seed}, "
            f"prefix={prefix!r}, rows_per_file={rows_per_file or 'ROWS_PER_FILE'}, progress=lambda s: print(s, flush=True))")
    subprocess.run([PY, "-c", code], cwd=ROOT, check=True)


def prepare(base: Path, n: int, reuse: bool) -> Path:
    lake = base / f"n{n}"
    if reuse and (lake / "expected.json").exists():
        print(f"reusing {lake}", flush=True)
    else:
        shutil.rmtree(lake, ignore_errors=True)
        t = time.perf_counter()
        print(f"generating {n:,} events in {lake} …", flush=True)
        _generate(lake, n, START, DAYS)
        print(f"  generated in {time.perf_counter() - t:.0f} s", flush=True)
    return lake


def fresh_warehouse(lake: Path) -> None:
    shutil.rmtree(lake / "warehouse", ignore_errors=True)
    shutil.rmtree(lake / "reports", ignore_errors=True)


def bench_one(base: Path, n: int, args) -> dict:
    lake = prepare(base, n, args.reuse)
    expected = json.loads((lake / "expected.json").read_text())
    env = {"METERBILL_MEMORY_LIMIT": args.memory_limit}
    row: dict = {"events": n, "rows": expected["rows"], "expected": expected}
    systems = [x for x in SYSTEMS if not (args.no_pandas and x.startswith("pandas"))]
    earlier = {r["events"]: r for r in args.earlier_rows}.get(n, {})
    for system in systems:
        if system not in args.systems:
            if system in earlier:  # measured by an earlier run (its load and time stay with it)
                row[system] = {**earlier[system], "earlier_run": args.earlier_started}
            continue
        if system.startswith("pandas") and n > args.pandas_max:
            row[system] = {"skipped": f"above --pandas-max {args.pandas_max:,} rows: the straightforward pandas job "
                                      f"holds the month in memory (≈ 0.45 and 0.75 GB per 1M rows measured at 10M)"}
            continue
        if system == "meterbill":
            fresh_warehouse(lake)
        load = uptime()
        print(f"[{n:,}] {system} … (load {load})", flush=True)
        wargs = ["bench/run.py", "_worker", system, str(lake)]
        if system in ("meterbill", "pandas_full"):
            wargs += ["--as-of", AS_OF]
            if args.profile:
                wargs += ["--profile", str(base / f"profile-{n}.prof")]
        if system == "baseline":
            wargs += ["--memory-limit", args.memory_limit]
        res = _run_child(wargs, env=env, log=base / f"{system}-{n}.log")
        res.pop("stdout_lines", None)
        res["load_before"] = load
        res["load_after"] = uptime()
        if system == "pandas_full" and not res.get("exit") and (lake / "warehouse" / "usage_hourly").is_dir():
            # the same job: its usage_hourly holds meterbill's rows and exact sums, meter by meter
            res["usage_matches_meterbill"] = (usage_totals(str(lake / "bench-pandas-full" / "usage_hourly"))
                                              == usage_totals(str(lake / "warehouse" / "usage_hourly")))
        row[system] = res
        print(f"  {json.dumps(res)[:600]}", flush=True)
    return row


def bench_incremental(base: Path, per_day: int, args) -> dict:
    lake = base / f"inc{per_day}"
    days = 90
    start = dt.date(2026, 1, 1)
    if not (args.reuse and (lake / "expected.json").exists()):
        shutil.rmtree(lake, ignore_errors=True)
        print(f"generating {days} days x {per_day:,} events in {lake} …", flush=True)
        _generate(lake, days * per_day, start, days, rows_per_file=min(per_day * 10, 2_500_000))
    for p in (lake / "raw").glob("newday-*.parquet"):
        p.unlink()
    # the catalogue as this version writes it, also on a reused lake (in a child: see _generate)
    subprocess.run([PY, "-c", "import sys; sys.path.insert(0, '.'); from pathlib import Path; "
                    f"from bench.generate import write_catalog; write_catalog(Path({str(lake)!r}))"],
                   cwd=ROOT, check=True)
    fresh_warehouse(lake)
    env = {"METERBILL_MEMORY_LIMIT": args.memory_limit}
    as_of1 = (dt.datetime.combine(start + dt.timedelta(days=days), dt.time(), dt.timezone.utc)).isoformat()
    as_of2 = (dt.datetime.combine(start + dt.timedelta(days=days + 1), dt.time(), dt.timezone.utc)).isoformat()
    load = uptime()
    print(f"[incremental] full run over {days} days (load {load}) …", flush=True)
    full = _run_child(["bench/run.py", "_worker", "meterbill", str(lake), "--as-of", as_of1], env=env,
                      log=base / "incremental-full.log")
    full["load_before"] = load
    _generate(lake, per_day, start + dt.timedelta(days=days), 1, seed=91, prefix="newday")
    load = uptime()
    print(f"[incremental] one more day (load {load}) …", flush=True)
    inc = _run_child(["bench/run.py", "_worker", "meterbill", str(lake), "--as-of", as_of2], env=env,
                     log=base / "incremental-day.log")
    inc["load_before"] = load
    out = {"days": days, "per_day": per_day, "full": full, "one_day": inc}
    print(f"  {json.dumps(out)[:800]}", flush=True)
    return out


def _profile_summary(path: Path, top: int = 12) -> dict:
    """Where a profiled `meterbill run` spent its time: the stages' cumulative seconds and the
    functions with the most own time (main thread; Prefect runs these flows' tasks in it)."""
    import pstats

    st = pstats.Stats(str(path))
    stages, own = {}, []
    names = {"ingest_flow": "ingest", "meter_flow": "meter", "bill_flow": "bill", "alerts_flow": "alerts",
             "load_catalog": "load_catalog", "publish_run_report": "run report"}
    for (file, line, fn), (cc, nc, tt, ct, callers) in st.stats.items():
        if fn in names and ("flows" in file or "catalog" in file):
            stages[names[fn]] = max(stages.get(names[fn], 0.0), round(ct, 2))
        own.append((tt, f"{Path(file).name}:{line} {fn}", nc))
    own.sort(reverse=True)
    return {"stages_cumulative_s": stages,
            "own_time": [{"s": round(t, 2), "function": f, "calls": n} for t, f, n in own[:top]]}


def bench_base(base: Path, customers: int, events: int, args) -> dict:
    """A real customer base (bench/customer_base.py): `meterbill run` as a user types it, the
    Prefect start measured apart, the bare DuckDB baseline on the same files."""
    from bench import customer_base as cb

    lake = base / f"base-{customers}-{events}"
    if not (args.reuse and (lake / "expected.json").exists()):
        shutil.rmtree(lake, ignore_errors=True)
        print(f"generating {events:,} events of {customers:,} customers in {lake} …", flush=True)
        subprocess.run([PY, "bench/customer_base.py", str(lake), "--customers", str(customers), "--events", str(events)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    env = {"METERBILL_MEMORY_LIMIT": args.memory_limit}
    row: dict = {"customers": customers, "events": events, "expected": json.loads((lake / "expected.json").read_text())}
    load = uptime()
    print(f"[base {customers:,} / {events:,}] baseline … (load {load})", flush=True)
    row["baseline"] = _run_child(["bench/run.py", "_worker", "baseline", str(lake), "--memory-limit", args.memory_limit],
                                 env=env, log=base / f"base-baseline-{customers}.log")
    row["baseline"]["load_before"] = load
    row["prefect_start"] = _run_child(["bench/run.py", "_worker", "prefect_start", str(lake)],
                                      log=base / f"base-prefect-{customers}.log")
    fresh_warehouse(lake)
    load = uptime()
    print(f"[base {customers:,} / {events:,}] meterbill run … (load {load})", flush=True)
    os.environ["METERBILL_MEMORY_LIMIT"] = args.memory_limit
    row["run"] = run_command(lake, cb.AS_OF, base / f"base-run-{customers}.log")
    row["run"]["load_before"] = load
    if args.profile:
        fresh_warehouse(lake)
        prof = base / f"base-run-{customers}.prof"
        run_command(lake, cb.AS_OF, base / f"base-run-{customers}-profiled.log", profile=prof)
        row["profile"] = _profile_summary(prof)
    print(f"  {json.dumps({k: row[k] for k in ('baseline', 'prefect_start', 'run')}, default=str)[:900]}", flush=True)
    return row


def bench_pricing(base: Path, n: int) -> dict:
    load = uptime()
    print(f"[pricing] build_invoices for {n:,} customers x 5 items (load {load}) …", flush=True)
    res = _run_child(["-c", "import sys, time, json; sys.path.insert(0, '.');"
                      "from tests.pricing.timing import main; t = time.perf_counter(); "
                      f"main({n}); print(json.dumps({{'wall_s': round(time.perf_counter() - t, 2)}}))"],
                     log=base / "pricing.log")
    res["load_before"] = load
    res["output"] = "\n".join(res.pop("stdout_lines", []))[-800:]
    return res


SYSTEMS = ("baseline", "meterbill", "pandas", "pandas_full")  # run and tabled in this order
SYSTEM_LABELS = {"pandas": "pandas (the baseline's job)", "pandas_full": "pandas (meterbill's job)"}


def _fmt_s(x) -> str:
    return "—" if x is None else f"{x:,.1f}"


def base_lines(bases: list[dict]) -> list[str]:
    """The table of `meterbill run` on real customer bases, against the baseline on the same files."""
    if not bases:
        return []
    lines = ["", "## A real customer base: `meterbill run` as a user types it", "",
             "`bench/customer_base.py`: N customers in seven time zones, the catalogue as YAML, one month of events, "
             "high cardinality (endpoint × region × project, model × project); `meterbill run --lake L --as-of "
             "2026-02-02T00:00:00Z --no-deliver` in its own process, everything included (Prefect's start, the "
             "catalogue, the four stages, the report); the Prefect start measured apart in a process of its own.", "",
             "| customers | events | baseline s | run s | run / baseline | run − Prefect start s | that / baseline | "
             "Prefect start s | peak RSS MB | CPU s | ingest | meter | bill | alerts | lines printed | load before |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for b in bases:
        bl, r, ps = b["baseline"], b["run"], b["prefect_start"]
        if r.get("exit") or bl.get("exit"):
            lines.append(f"| {b['customers']:,} | {b['events']:,} | {bl.get('wall_s', '—')} | failed (exit {r.get('exit')}) "
                         "| | | | | | | | | | | | |")
            continue
        w, start = r["process_wall_s"], ps.get("wall_s", 0.0)
        st = r.get("stages", {})
        lines.append(f"| {b['customers']:,} | {b['events']:,} | {bl['wall_s']} | {w} | {w / bl['wall_s']:.2f}× | "
                     f"{w - start:.1f} | {(w - start) / bl['wall_s']:.2f}× | {start} | {r['peak_rss_mb']:,} | {r['cpu_s']} | "
                     + " | ".join(str(st.get(k, "")) for k in ("ingest", "meter", "bill", "alerts"))
                     + f" | {r.get('output_lines', '')} | {r['load_before']} |")
    for b in bases:
        prof = b.get("profile")
        if not prof:
            continue
        lines += ["", f"Profile of `meterbill run` at {b['customers']:,} customers / {b['events']:,} events (cProfile, "
                  "main thread; slower than the timed run): cumulative s per stage "
                  + ", ".join(f"{k} {v}" for k, v in prof["stages_cumulative_s"].items()) + "; most own time:", ""]
        lines += [f"- {o['s']} s {o['function']} ({o['calls']:,} calls)" for o in prof["own_time"]]
    return lines


def write_results(path: Path, meta: dict, rows: list[dict], inc: dict | None, pricing: dict | None,
                  notes: str, bases: list[dict] | None = None) -> None:
    m = meta["machine"]
    lines = [
        "# Benchmark results (issue 8)", "",
        f"Made by `{meta['command']}` on {meta['started']} UTC"
        + (f"; rows marked with an earlier run's time come from `{meta['earlier']['command']}` on "
           f"{meta['earlier']['started']} UTC (load {meta['earlier']['load_start']} → {meta['earlier']['load_end']})"
           if meta.get("earlier") else "") + ".", "",
        f"Machine: {m['cores']} cores, {m['memory_gb']} GB RAM, Python {m['python']}; shared with other "
        f"sessions' test runs — load average {meta['load_start']} at the start, {meta['load_end']} at the end "
        "(1/5/15 min). DuckDB `memory_limit` "
        f"{meta['memory_limit']} for meterbill and the baseline.", "",
        "Wall = the system's own work (meterbill: ingest + meter + bill flows, without the one-time Prefect "
        "start, shown apart); peak RSS = ru_maxrss of the system's process.", "",
        "| events | system | wall s | events/s | CPU s | peak RSS MB | vs baseline (wall) | pandas / meterbill (wall) | load before | detail |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        base = r.get("baseline", {}).get("wall_s")
        mb = r.get("meterbill", {}).get("wall_s")
        for system in SYSTEMS:
            s = r.get(system)
            if s is None:
                continue
            label = SYSTEM_LABELS.get(system, system)
            if "skipped" in s:
                lines.append(f"| {r['events']:,} | {label} | — | — | — | — | — | — | — | "
                             f"skipped: {s['skipped']} |")
                continue
            if s.get("exit"):
                lines.append(f"| {r['events']:,} | {label} | failed | — | {s.get('cpu_s')} | {s['peak_rss_mb']:,} | — | — | "
                             f"{s['load_before']} | exit {s['exit']} |")
                continue
            w = s["wall_s"]
            ratio = f"{w / base:.2f}×" if base else "—"
            when = f" (run of {s['earlier_run']} UTC)" if s.get("earlier_run") else ""
            pm = f"{w / mb:.1f}×" if system.startswith("pandas") and mb else ""
            detail = ""
            if system == "meterbill":
                st = s["stages"]
                hw = s.get("peak_rss_mb_after")
                mem = (f"; peak RSS after ingest/meter/bill {hw['ingest']:,}/{hw['meter']:,}/{hw['bill']:,} MB"
                       if hw else "")
                detail = (f"ingest {st['ingest']} s, meter {st['meter']} s, bill {st['bill']} s{mem}; Prefect start "
                          f"{s['prefect_start_s']} s, imports {s['import_s']} s; accepted {s['accepted']:,}, "
                          f"dup {s['duplicates']:,}, quarantined {s['quarantined']:,}")
            elif system == "pandas_full":
                same = {True: "; usage_hourly equal to meterbill's (rows and exact sums per meter)",
                        False: "; usage_hourly DIFFERS from meterbill's"}.get(s.get("usage_matches_meterbill"), "")
                detail = (f"ingest + meter as SPEC §2/§4/§7 ask, no bill; accepted {s['accepted']:,}, "
                          f"dup {s['duplicates']:,}, quarantined {s['quarantined']:,}; {s['usage_rows']:,} hourly rows{same}")
            else:
                detail = f"events aggregated {s['accepted']:,}; {s['usage_rows']:,} hourly rows"
            lines.append(f"| {r['events']:,} | {label} | {_fmt_s(w)} | {r['rows'] / w:,.0f} | {s.get('cpu_s')} | "
                         f"{s['peak_rss_mb']:,} | {ratio} | {pm} | {s['load_before']}{when} | {detail} |")
    if inc:
        f, o = inc["full"], inc["one_day"]
        lines += ["", "## Incremental cost", "",
                  f"A lake of {inc['days']} days × {inc['per_day']:,} events/day, meterbill end to end (ingest + "
                  "meter + bill), then one more day landed and the same run again:", "",
                  "| run | wall s | ingest | meter | bill | peak RSS MB | load before |", "|---|---:|---:|---:|---:|---:|---|"]
        for name, s in (("full (90 days)", f), ("one new day", o)):
            if s.get("exit"):
                lines.append(f"| {name} | failed | | | | {s['peak_rss_mb']} | {s['load_before']} |")
                continue
            st = s["stages"]
            lines.append(f"| {name} | {s['wall_s']} | {st['ingest']} | {st['meter']} | {st['bill']} | "
                         f"{s['peak_rss_mb']:,} | {s['load_before']} |")
        if not f.get("exit") and not o.get("exit"):
            lines += ["", f"One day / full = **{o['wall_s'] / f['wall_s']:.3f}** ({o['wall_s']} s / {f['wall_s']} s; target ≤ 0.10)."]
    lines += base_lines(bases or [])
    if pricing:
        lines += ["", "## Pricing (issue 5)", "",
                  f"`tests/pricing/timing.py` in its own process (load before {pricing['load_before']}): "
                  f"process wall {pricing['process_wall_s']} s, peak RSS {pricing['peak_rss_mb']:,} MB.", "",
                  "```", pricing.get("output", ""), "```"]
    if notes:
        lines += ["", notes.strip()]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        ap = argparse.ArgumentParser()
        ap.add_argument("system")
        ap.add_argument("lake")
        ap.add_argument("--as-of", default=AS_OF)
        ap.add_argument("--memory-limit", default="2GB")
        ap.add_argument("--profile")
        a = ap.parse_args(argv[1:])
        if a.system == "meterbill":
            res = worker_meterbill(a.lake, a.as_of, a.profile)
        elif a.system == "prefect_start":
            res = worker_prefect_start()
        elif a.system == "baseline":
            res = worker_baseline(a.lake, a.memory_limit)
        elif a.system == "pandas_full":
            res = worker_pandas_full(a.lake, a.as_of)
        else:
            res = worker_pandas(a.lake)
        print(json.dumps(res), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--reuse", action="store_true", help="reuse generated files kept in --dir")
    ap.add_argument("--dir", default=str(ROOT / "bench" / "out" / "run"))
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--no-pandas", action="store_true")
    ap.add_argument("--pandas-max", type=int, default=20_000_000)
    ap.add_argument("--incremental", type=int, default=0, metavar="EVENTS_PER_DAY",
                    help="also measure one new day on a 90-day lake (0 = skip)")
    ap.add_argument("--pricing", type=int, default=0, metavar="CUSTOMERS", help="also time pricing (0 = skip)")
    ap.add_argument("--base", nargs="*", default=[], metavar="CUSTOMERS:EVENTS",
                    help="a real customer base (bench/customer_base.py): `meterbill run` as a user types it, "
                         "e.g. 20000:10000000 100000:1000000")
    ap.add_argument("--profile", action="store_true", help="cProfile meterbill's flows (profile-N.prof in --dir)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--notes", default=str(ROOT / "bench" / "notes.md"),
                    help="markdown appended to results.md (where the time goes)")
    ap.add_argument("--render", metavar="RESULTS_JSON", help="only rewrite results.md from a results.json")
    ap.add_argument("--systems", nargs="*", default=list(SYSTEMS),
                    help="systems to run; the others are taken from --earlier")
    ap.add_argument("--earlier", metavar="RESULTS_JSON",
                    help="a results.json of an earlier run: rows of systems not run now (and its incremental "
                         "and pricing entries when not run now) come from it, marked as such")
    a = ap.parse_args(argv)
    a.earlier_rows, a.earlier_started, earlier = [], None, {}
    if a.earlier:
        earlier = json.loads(Path(a.earlier).read_text())
        a.earlier_rows, a.earlier_started = earlier["rows"], earlier["meta"]["started"]
    if a.render:
        data = json.loads(Path(a.render).read_text())
        notes = Path(a.notes).read_text() if Path(a.notes).exists() else ""
        write_results(Path(a.results), data["meta"], data["rows"], data["incremental"], data["pricing"], notes,
                      data.get("bases", []))
        return 0
    base = Path(a.dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    meta = {"command": "bench/run.py " + " ".join(argv), "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "machine": machine(), "load_start": uptime(), "memory_limit": a.memory_limit}
    rows = [bench_one(base, n, a) for n in a.events]
    bases = [bench_base(base, *map(int, b.split(":")), a) for b in a.base] or earlier.get("bases", [])
    inc = bench_incremental(base, a.incremental, a) if a.incremental else earlier.get("incremental")
    pricing = bench_pricing(base, a.pricing) if a.pricing else earlier.get("pricing")
    if a.earlier:
        meta["earlier"] = {"started": a.earlier_started, "command": earlier["meta"]["command"],
                           "load_start": earlier["meta"]["load_start"], "load_end": earlier["meta"]["load_end"]}
        if not a.incremental and inc:
            inc["earlier_run"] = a.earlier_started
    meta["load_end"] = uptime()
    notes = Path(a.notes).read_text() if Path(a.notes).exists() else ""
    (base / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "incremental": inc,
                                                   "pricing": pricing, "bases": bases}, indent=1, default=str))
    write_results(Path(a.results), meta, rows, inc, pricing, notes, bases)
    print(Path(a.results).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
