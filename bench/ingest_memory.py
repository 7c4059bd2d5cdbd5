"""Ingest a landing zone several times larger than DuckDB's memory limit; report peak memory.

    .venv/bin/python bench/ingest_memory.py [--gb 3] [--memory-limit 1GB] [--dir bench/out/ingest-memory]
                                            [--keep] [--reuse]

1. generates (in a child process) uncompressed CSV / NDJSON / JSON Lines / JSON-array files of
   fat records (two 200-character dimensions, ~600 bytes a record) until raw/ holds `--gb`
   gigabytes, with known numbers of defects, duplicates and cancellations
   (tests/ingest/messy_zone.py); `--reuse` ingests a zone kept by `--keep` again;
2. runs `run_ingest` in a fresh child process with DuckDB's `memory_limit` set, and reports
   its wall time, rows/s and peak resident memory (ru_maxrss of that process: DuckDB, Polars,
   Pandera and Python together);
3. checks that every count in `ingest_files` matches what was generated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_VARIANTS = [0, 1, 3, 5, 11]  # csv, ndjson, json array, jsonl (camelCase, ISO time), csv (ISO time)
ROWS_PER_ZONE = 500_000


def generate(lake: Path, gb: float) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.ingest.messy_zone import CATALOG_YAML, make_zone

    (lake / "catalog").mkdir(parents=True, exist_ok=True)
    for name, text in CATALOG_YAML.items():
        (lake / "catalog" / name).write_text(text)
    raw = lake / "raw"
    target = gb * (1 << 30)
    totals = {"rows": 0, "accepted": 0, "duplicates": 0, "quarantined": 0, "unreadable": 0, "files": 0}
    k = 0
    while _size(raw) < target:
        k += 1
        z = make_zone(raw, ROWS_PER_ZONE, prefix=f"z{k:03d}", seed=k, pad=200, variants=TEXT_VARIANTS,
                      unreadable=(k == 1))
        totals["rows"] += z.rows
        totals["accepted"] += z.total("accepted")
        totals["duplicates"] += z.total("duplicates")
        totals["quarantined"] += sum(f.quarantined_total for f in z.files)
        totals["unreadable"] += sum(f.status == "unreadable" for f in z.files)
        totals["files"] += len(z.files)
        print(f"  generated zone {k}: {totals['rows']:,} rows, {_size(raw) / (1 << 30):.2f} GB", flush=True)
    totals["bytes"] = _size(raw)
    (lake / "expected.json").write_text(json.dumps(totals))
    return totals


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0


def ingest(lake: Path, memory_limit: str) -> dict:
    import resource

    sys.path.insert(0, str(ROOT))
    from catalog import Lake, load_catalog
    from flows.stages.ingest import run_ingest
    from tests.ingest.messy_zone import AS_OF

    lk = Lake(lake)
    started = time.monotonic()
    rep = run_ingest(lk, load_catalog(lk.catalog_dir), AS_OF, memory_limit=memory_limit,
                     progress=lambda line: print(f"  {time.monotonic() - started:7.1f}s {line}", flush=True))
    seconds = time.monotonic() - started
    import polars as pl

    files = lk.read("ingest_files")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "load_average": os.getloadavg()[0],
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "rows": rep.rows_read, "accepted": rep.accepted, "duplicates": rep.duplicates,
        "quarantined": rep.quarantined, "unreadable": rep.files_unreadable,
        "table_rows": int(files["rows_read"].sum()), "table_accepted": int(files["accepted"].sum()),
        "table_duplicates": int(files["duplicates"].sum()), "table_quarantined": int(files["quarantined"].sum()),
        "events": lk.scan("events").select(pl.len()).collect().item(),
        "warehouse_bytes": _size(lk.warehouse_dir),
    }


def _child(step: str, lake: Path, arg: str) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--_step", step, "--dir", str(lake), "--_arg", arg],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    last = ""
    for line in proc.stdout:  # progress as it comes; the last line is the result
        if last:
            print(last, end="", flush=True)
        last = line
    if proc.wait() != 0:
        raise SystemExit(f"{step} failed")
    return json.loads(last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=3.0, help="size of the landing zone to generate (GB)")
    ap.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit for the ingest")
    ap.add_argument("--dir", default=str(ROOT / "bench" / "out" / "ingest-memory"), help="the lake to create")
    ap.add_argument("--keep", action="store_true", help="keep the lake afterwards")
    ap.add_argument("--reuse", action="store_true", help="ingest the zone a --keep run left (a fresh warehouse)")
    ap.add_argument("--_step", help=argparse.SUPPRESS)
    ap.add_argument("--_arg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    lake = Path(a.dir)
    if a._step == "generate":
        print(json.dumps(generate(lake, float(a._arg))))
        return
    if a._step == "ingest":
        print(json.dumps(ingest(lake, a._arg)))
        return

    if a.reuse and (lake / "expected.json").exists():
        shutil.rmtree(lake / "warehouse", ignore_errors=True)
        gen = json.loads((lake / "expected.json").read_text())
    else:
        if lake.exists():
            shutil.rmtree(lake)
        print(f"generating a {a.gb:g} GB landing zone in {lake} ...", flush=True)
        t = time.monotonic()
        gen = _child("generate", lake, str(a.gb))
        print(f"  {gen['rows']:,} rows in {gen['files']} files, {gen['bytes'] / (1 << 30):.2f} GB "
              f"({time.monotonic() - t:.0f} s)")
    print(f"ingesting with DuckDB memory_limit={a.memory_limit} on {os.cpu_count()} cores ...", flush=True)
    res = _child("ingest", lake, a.memory_limit)
    ok = (res["rows"], res["accepted"], res["duplicates"], res["quarantined"], res["unreadable"]) == (
        gen["rows"], gen["accepted"], gen["duplicates"], gen["quarantined"], gen["unreadable"])
    ok = ok and (res["table_rows"], res["table_accepted"], res["table_duplicates"], res["table_quarantined"]) == (
        gen["rows"], gen["accepted"], gen["duplicates"], gen["quarantined"]) and res["events"] == gen["accepted"]
    print()
    print(f"landing zone     {gen['bytes'] / (1 << 30):.2f} GB, {gen['rows']:,} rows, {gen['files']} files")
    print(f"memory_limit     {a.memory_limit}")
    print(f"ingest time      {res['seconds']:.0f} s ({res['rows'] / res['seconds']:,.0f} rows/s, "
          f"{gen['bytes'] / res['seconds'] / (1 << 20):.1f} MB/s); CPU {res['cpu_seconds']:.0f} s "
          f"({res['rows'] / res['cpu_seconds']:,.0f} rows per CPU-second); load average at the end "
          f"{res['load_average']:.1f}")
    print(f"peak RSS         {res['peak_rss_bytes'] / (1 << 20):,.0f} MB")
    print(f"warehouse        {res['warehouse_bytes'] / (1 << 20):,.0f} MB")
    print(f"counts           {'match' if ok else 'MISMATCH'}: accepted {res['accepted']:,}, duplicates "
          f"{res['duplicates']:,}, quarantined {res['quarantined']:,}, unreadable files {res['unreadable']}")
    if not a.keep:
        shutil.rmtree(lake)
    if not ok:
        print(json.dumps({"generated": gen, "ingested": res}, indent=1))
        sys.exit(1)


if __name__ == "__main__":
    main()
