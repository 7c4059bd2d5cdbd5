"""Scale-out benchmark (issue 11): meter -> bill -> alerts locally vs on a Dask LocalCluster.

    .venv/bin/python bench/scaleout.py --events 10000000 [--workers 2] [--dir bench/out/scaleout]
                                       [--results bench/scaleout.md]

On the benchmark's generated landing zone (bench/generate.py, one month, 2000 customers), ingest
once (local: ingest is not sharded), then on two copies of the ingested lake time the sharded
stages: `meter`, `bill`, `alerts` with `--executor local` and with `--executor dask --workers W`
(cluster start included, it is part of the cost). Each run is its own `meterbill` process (the
Prefect ephemeral API start is in both). Reported (see `report`): wall time per stage, the
per-shard throughput, the dask path's overhead and a lower-bound projection for 1B events on
16 and 64 workers. bench/scaleout.md has a 1M and a 10M entry (the 10M one on the ingested lake of
bench/run.py's 10M run: `ln -s ../run/n10000000 bench/out/scaleout/n10000000`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MB = str(ROOT / ".venv" / "bin" / "meterbill")
START, DAYS = dt.date(2026, 1, 1), 31
AS_OF = "2026-02-02T00:00:00Z"


def sh(args: list[str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(args, cwd=ROOT, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=str(ROOT / "bench" / "out" / "scaleout"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "scaleout.md"))
    ap.add_argument("--report-only", help="rewrite the results from a results-<N>.json")
    a = ap.parse_args()
    if a.report_only:
        report(json.loads(Path(a.report_only).read_text()), Path(a.results))
        return
    base = Path(a.dir)
    base.mkdir(parents=True, exist_ok=True)
    src = base / f"n{a.events}"
    if not (src / "warehouse" / "events").is_dir():
        shutil.rmtree(src, ignore_errors=True)
        code = ("import sys, datetime as dt; sys.path.insert(0, '.'); from pathlib import Path; "
                "from bench.generate import generate; "
                f"generate(Path({str(src)!r}), {a.events}, dt.date.fromisoformat({START.isoformat()!r}), {DAYS})")
        subprocess.run([PY, "-c", code], cwd=ROOT, check=True)
        t = sh([MB, "ingest", "--lake", str(src), "--as-of", AS_OF], base / "ingest.log")
        print(f"ingest {a.events:,}: {t:.1f} s", flush=True)
    rows = {}
    for mode in ("local", "dask"):
        lake = base / f"{mode}-{a.events}"
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(src, lake, ignore=shutil.ignore_patterns("usage_hourly", "invoices", "line_items",
                                                                  "credit_ledger", "alerts_fired", "_state",
                                                                  "unbilled_usage", "reconciliation", "bench-*"))
        ex = [] if mode == "local" else ["--executor", "dask", "--workers", str(a.workers)]
        t = {}
        for verb in ("meter", "bill", "alerts"):
            extra = ["--no-deliver"] if verb == "alerts" else []
            t[verb] = sh([MB, verb, "--lake", str(lake), "--as-of", AS_OF, *extra, *ex], base / f"{mode}-{verb}.log")
            print(f"{mode} {verb}: {t[verb]:.1f} s", flush=True)
        rows[mode] = t
    out = {"events": a.events, "workers": a.workers, "local": rows["local"], "dask": rows["dask"],
           "loadavg": os.getloadavg(), "cores": os.cpu_count(),
           "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (base / f"results-{a.events}.json").write_text(json.dumps(out, indent=1))
    report(out, Path(a.results))


def report(out: dict, md: Path) -> None:
    """Numbers and projection into bench/scaleout.md.

    per-core rate  = events / (local wall × cores): the local path already uses every core
                     (DuckDB and Polars threads), so this is the data rate one worker (one core) gets;
    per-shard rate = events / (dask wall × workers): what a worker achieved here, overhead included;
    overhead       = dask wall − local wall: cluster start (once per meterbill process: each verb
                     here is its own process), worker imports, Prefect task runs, staging, reduce;
    1B on W        = overhead + 1e9 / (per-core rate × W)  (assumes a worker per core, reads that
                     scale with the store, and a reduce that stays small: a lower bound).
    """
    ev, w = out["events"], out["workers"]
    local, dask = sum(out["local"].values()), sum(out["dask"].values())
    per_core = ev / (local * out["cores"])
    per_shard = ev / (dask * w)
    overhead = max(dask - local, 0.0)
    proj = {k: overhead + 1e9 / (per_core * k) for k in (16, 64)}
    load = out["loadavg"]
    text = md.read_text() if md.exists() else "# Scale-out benchmark (bench/scaleout.py)\n"
    text += (f"\n## {ev:,} events, {w} workers — {out['at']}, load average "
             f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {out['cores']} cores (shared machine)\n\n"
             f"`.venv/bin/python bench/scaleout.py --events {ev} --workers {w}` (ingest once, local; then "
             "each verb as its own `meterbill` process on a copy of the ingested lake)\n\n"
             "| stage | local (s) | dask, LocalCluster (s) |\n|---|---:|---:|\n"
             + "".join(f"| {v} | {out['local'][v]:.1f} | {out['dask'][v]:.1f} |\n" for v in ("meter", "bill", "alerts"))
             + f"| total | {local:.1f} | {dask:.1f} |\n\n"
             f"- Per-shard throughput (dask, overhead included): {per_shard:,.0f} events per worker-second.\n"
             f"- Data rate of one core (local path): {per_core:,.0f} events per core-second.\n"
             f"- Overhead of the dask path at this size: {overhead:.0f} s ({dask / local:.1f}× the local wall): on a "
             "2-core machine the workers compete with each other and with the parent, and each verb starts its "
             "own cluster.\n"
             f"- Projection for 1B events (overhead + 1e9 / (per-core rate × workers), a lower bound): "
             f"{proj[16] / 3600:.1f} h on 16 workers, {proj[64] / 3600:.1f} h on 64.\n")
    md.write_text(text)
    print(text)

if __name__ == "__main__":
    main()
