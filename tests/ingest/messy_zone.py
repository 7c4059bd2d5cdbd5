"""A messy landing zone with known numbers: every defect, duplicate and cancellation is counted.

`make_zone(raw_dir, n_rows)` writes ~`n_rows` records in mixed formats (CSV, NDJSON, JSON Lines,
JSON arrays, Parquet with MAP or STRUCT dimensions; gzip or not; snake_case or camelCase;
epoch milliseconds or ISO-8601 event_time; values as numbers or numeric strings) under
sub-folders of `raw_dir`, plus three unreadable files, and returns what ingesting it must give
per file: rows read, accepted, duplicates, quarantined by reason.

How the numbers are known: records are laid out in one global order (files in sorted path order,
rows in order). Each slot is clean, a defect (exactly one reason), a duplicate (an exact re-send,
or the same unique_id with another value, of an *earlier clean* slot: same event date), or a
cancellation of an earlier clean slot that has a unique_id. Clean event times are distinct
(a fixed step apart), so no two clean events share a content key by accident.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

AS_OF = dt.datetime(2026, 2, 10, tzinfo=dt.timezone.utc)
CUSTOMERS_DEFINED = 400  # cust-0000 .. cust-0399 are in the test catalogue; 0400..0449 are not
METERS = ["api_calls", "storage_gb", "seats"]  # sum, max, count (test catalogue); + an undefined one
UNDEFINED_METER = "mystery_meter"
DEFECTS = ["missing_field", "bad_type", "non_finite_value", "bad_timestamp", "future_event", "too_old",
           "bad_dimension"]

CATALOG_YAML = {
    "customers.yaml": "\n".join(f"- {{customer_id: cust-{i:04d}, customer_name: Customer {i}}}"
                                for i in range(CUSTOMERS_DEFINED)) + "\n",
    "meters.yaml": (
        "- {meter_api_name: api_calls, label: API calls, type: sum, unit: calls}\n"
        "- {meter_api_name: storage_gb, label: Storage, type: max, unit: GB}\n"
        "- {meter_api_name: seats, label: Seats, type: count, unit: seats}\n"
    ),
}

# file variants, cycled: (kind, gzip, camelCase, time as event_time, values as strings, dims as)
VARIANTS = [
    ("csv", False, False, False, True, "columns"),
    ("ndjson", False, False, False, False, "object"),
    ("parquet", False, False, False, False, "map"),
    ("json", False, False, False, True, "object"),
    ("csv", True, True, False, True, "columns"),
    ("jsonl", False, True, True, True, "object"),
    ("parquet", True, False, False, False, "struct"),
    ("ndjson", True, True, False, True, "object"),
    ("json", True, False, True, False, "object"),
    ("jsonl", True, False, False, False, "object"),
    ("parquet", False, True, True, False, "struct"),
    ("csv", False, False, True, True, "columns"),
]


@dataclass
class FileExpect:
    source_file: str
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    status: str = "ingested"

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


@dataclass
class Zone:
    files: list[FileExpect]
    cancellations: int
    undefined_customer_events: int
    undefined_meter_events: int

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)

    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            for r, n in f.quarantined.items():
                out[r] = out.get(r, 0) + n
            if f.status == "unreadable":
                out["unreadable_file"] = out.get("unreadable_file", 0) + 1
        return out


def _slots(n: int, rng: np.random.Generator, defect_rate: float, dup_rate: float, cancel_rate: float,
           file_of: np.ndarray, variant_of_file: list[int]) -> pl.DataFrame:
    """The global layout: per slot its kind and (for duplicates and cancels) its source slot."""
    u = rng.random(n)
    kind = np.full(n, "clean", dtype=object)
    d_edge = defect_rate * len(DEFECTS)
    for i, r in enumerate(DEFECTS):
        sel = (u >= i * defect_rate) & (u < (i + 1) * defect_rate)
        kind[sel] = r
    kind[(u >= d_edge) & (u < d_edge + dup_rate)] = "dup"
    kind[(u >= d_edge + dup_rate) & (u < d_edge + dup_rate + cancel_rate)] = "cancel"
    kind[:50] = "clean"  # sources for the first duplicates
    # bad_type cannot be written into typed Parquet columns: those slots stay clean there
    parquet_file = np.array([VARIANTS[v][0] == "parquet" for v in variant_of_file])
    kind[(kind == "bad_type") & parquet_file[file_of]] = "clean"
    return pl.DataFrame({"slot": np.arange(n), "kind": kind.astype(str), "file": file_of})


def make_zone(raw_dir: Path, n_rows: int = 1_000_000, rows_per_file: int = 50_000, seed: int = 7,
              defect_rate: float = 0.002, dup_rate: float = 0.01, cancel_rate: float = 0.001,
              as_of: dt.datetime = AS_OF, unreadable: bool = True, compresslevel: int = 1,
              pad: int = 0, prefix: str = "", variants: list[int] | None = None) -> Zone:
    """`pad` adds `session` and `trace` dimensions of that many characters each (fatter rows,
    at most 200); `prefix` names the
    sub-folder and the unique ids, so several zones can share one raw/ without touching each
    other; `variants` picks the file variants to cycle through (indices into VARIANTS)."""
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    n_files = max(1, -(-n_rows // rows_per_file))
    file_of = np.minimum(np.arange(n_rows) // rows_per_file, n_files - 1)
    cycle = variants or list(range(len(VARIANTS)))
    variant_of_file = [cycle[i % len(cycle)] for i in range(n_files)]
    slots = _slots(n_rows, rng, defect_rate, dup_rate, cancel_rate, file_of, variant_of_file)

    # the clean event behind every slot
    as_of_ms = int(as_of.timestamp() * 1000)
    start_ms = as_of_ms - 45 * 86_400_000
    step = max(1, (40 * 86_400_000) // n_rows)
    cust = rng.integers(0, CUSTOMERS_DEFINED + 50, n_rows)
    meter_ix = rng.integers(0, 3, n_rows)
    mystery = rng.random(n_rows) < 0.001
    base = pl.DataFrame({
        "slot": np.arange(n_rows),
        "customer_id": "cust-" + pl.Series(cust).cast(pl.String).str.zfill(4),
        "meter_api_name": np.where(mystery, UNDEFINED_METER, np.array(METERS)[meter_ix]),
        "value_milli": rng.integers(0, 10_000_000, n_rows),
        "ms": start_ms + np.arange(n_rows, dtype=np.int64) * step,
        "has_uid": rng.random(n_rows) < 0.7,
        "region": np.array(["us-east-1", "eu-west-1", "ap-south-1"])[rng.integers(0, 3, n_rows)],
        "tier": np.array(["gold", "silver", None], dtype=object)[rng.integers(0, 3, n_rows)],
    }).with_columns(
        value=pl.when(pl.col("meter_api_name") == "seats").then(pl.lit("1"))
        .otherwise(pl.format("{}.{}", pl.col("value_milli") // 1000,
                             (pl.col("value_milli") % 1000).cast(pl.String).str.zfill(3))),
        uid=pl.when(pl.col("has_uid")).then(pl.format(f"u{prefix}-{{}}", pl.col("slot"))),
        session=(pl.format(f"{prefix}s{{}}-", pl.col("slot")).str.pad_end(pad, "x") if pad else pl.lit(None, pl.String)),
        trace=(pl.format(f"{prefix}t{{}}-", pl.col("slot")).str.pad_end(pad, "y") if pad else pl.lit(None, pl.String)),
        cancel=pl.lit(None, pl.String),
        bad_dim=pl.lit(None, pl.String),
    ).drop("value_milli", "has_uid")

    s = slots.join(base, on="slot").sort("slot")
    kinds = s["kind"].to_numpy()
    clean_ix = np.flatnonzero(kinds == "clean")
    clean_uid_ix = np.flatnonzero((kinds == "clean") & s["uid"].is_not_null().to_numpy())

    def earlier(pool: np.ndarray, slots_: np.ndarray) -> np.ndarray:
        """A random earlier slot of `pool` for each of `slots_` (the first 50 slots are clean)."""
        k = np.searchsorted(pool, slots_)  # pool entries before each slot
        return pool[(rng.random(len(slots_)) * k).astype(np.int64)]

    dup_slots = np.flatnonzero(kinds == "dup")
    dup_src = earlier(clean_ix, dup_slots)
    cancel_slots = np.flatnonzero(kinds == "cancel")
    csrc = earlier(clean_uid_ix, cancel_slots)
    # one cancellation per source event: repeated sources become clean slots
    _, first = np.unique(csrc, return_index=True)
    keep = np.zeros(len(cancel_slots), bool)
    keep[first] = True
    kinds[cancel_slots[~keep]] = "clean"
    cancel_slots, csrc = cancel_slots[keep], csrc[keep]

    cols = {c: s[c].to_numpy().copy() for c in ("customer_id", "meter_api_name", "value", "ms", "uid", "region",
                                                 "tier", "session", "trace", "cancel", "bad_dim")}
    # duplicates: copy the source; half of those with a unique_id get another value (still a duplicate)
    for c in ("customer_id", "meter_api_name", "value", "ms", "uid", "region", "tier", "session", "trace"):
        cols[c][dup_slots] = cols[c][dup_src]
    other_value = (rng.random(len(dup_slots)) < 0.5) & np.array([u is not None for u in cols["uid"][dup_slots]])
    cols["value"][dup_slots[other_value]] = "999.999"
    # cancellations: same customer, meter, unique_id and time as the source, plus the flag
    for c in ("customer_id", "meter_api_name", "value", "ms", "uid", "region", "tier", "session", "trace"):
        cols[c][cancel_slots] = cols[c][csrc]
    cols["cancel"][cancel_slots] = "true"
    # defects
    value_defect = np.isin(kinds, ["bad_type", "non_finite_value"])
    cols["meter_api_name"][value_defect] = "api_calls"  # count meters ignore the value
    cols["customer_id"][kinds == "missing_field"] = None
    cols["value"][kinds == "bad_type"] = "abc"
    cols["value"][kinds == "non_finite_value"] = "NaN"
    cols["ms"][kinds == "bad_timestamp"] = -5
    cols["ms"][kinds == "future_event"] = as_of_ms + 86_400_000
    cols["ms"][kinds == "too_old"] = as_of_ms - 90 * 86_400_000
    cols["bad_dim"][kinds == "bad_dimension"] = "x"
    s = pl.DataFrame({
        **{c: pl.Series(c, v.tolist(), dtype=pl.Int64 if c == "ms" else pl.String) for c, v in cols.items()},
        "kind": kinds.astype(str), "file": s["file"].to_numpy(), "slot": s["slot"].to_numpy(),
    })

    files: list[FileExpect] = []
    for fi in range(n_files):
        kind, gz, camel, iso, str_values, dims_as = VARIANTS[variant_of_file[fi]]
        ext = {"csv": ".csv", "ndjson": ".ndjson", "jsonl": ".jsonl", "json": ".json", "parquet": ".parquet"}[kind]
        rel = f"{prefix + '/' if prefix else ''}batch-{fi // 5:03d}/{fi:04d}-{kind}{ext}" + (".gz" if gz else "")
        part = s.filter(pl.col("file") == fi)
        path = raw_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _render(part, kind, camel, iso, str_values, dims_as)
        if gz:
            data = gzip.compress(data, compresslevel=compresslevel, mtime=0)
        path.write_bytes(data)
        k = part["kind"].value_counts()
        counts = dict(zip(k["kind"].to_list(), k["count"].to_list()))
        files.append(FileExpect(
            rel, rows=part.height,
            accepted=counts.get("clean", 0) + counts.get("cancel", 0),
            duplicates=counts.get("dup", 0),
            quarantined={r: counts[r] for r in DEFECTS if counts.get(r)},
        ))
    if unreadable:
        for rel, data in _unreadable_files(raw_dir / prefix if prefix else raw_dir):
            rel = f"{prefix}/{rel}" if prefix else rel
            files.append(FileExpect(rel, status="unreadable"))
        files.sort(key=lambda f: f.source_file)

    ok = s.filter(pl.col("kind").is_in(["clean", "cancel"]))
    return Zone(
        files=files,
        cancellations=int((s["kind"] == "cancel").sum()),
        undefined_customer_events=ok.filter(pl.col("customer_id").str.slice(5).cast(pl.Int64) >= CUSTOMERS_DEFINED).height,
        undefined_meter_events=ok.filter(pl.col("meter_api_name") == UNDEFINED_METER).height,
    )


def _unreadable_files(raw_dir: Path) -> list[tuple[str, bytes]]:
    good = b"customer_id,meter_api_name,meter_value,meter_time_in_millis\n" + b"c,api_calls,1,1767225600000\n" * 2000
    out = [
        ("zz-broken/truncated.csv.gz", gzip.compress(good)[:200]),
        ("zz-broken/not-really.parquet", b"PAR1 this is not a parquet file at all"),
        ("zz-broken/notes.txt", b"not an event file\n"),
    ]
    for rel, data in out:
        p = raw_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return out


_NAMES = {
    False: {"customer_id": "customer_id", "meter_api_name": "meter_api_name", "meter_value": "meter_value",
            "meter_time_in_millis": "meter_time_in_millis", "unique_id": "unique_id"},
    True: {"customer_id": "customerId", "meter_api_name": "meterApiName", "meter_value": "meterValue",
           "meter_time_in_millis": "meterTimeInMillis", "unique_id": "uniqueId"},
}


def _iso(ms: pl.Expr) -> pl.Expr:
    return pl.from_epoch(ms, time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")


def _time(part: pl.DataFrame, iso: bool) -> pl.Expr:
    if not iso:
        return pl.col("ms").cast(pl.String)
    return pl.when(pl.col("kind") == "bad_timestamp").then(pl.lit("not-a-time")).otherwise(_iso(pl.col("ms")))


def _render(part: pl.DataFrame, kind: str, camel: bool, iso: bool, str_values: bool, dims_as: str) -> bytes:
    n = _NAMES[camel]
    time_name = "event_time" if iso else n["meter_time_in_millis"]
    if kind == "csv":
        cols = [pl.col("customer_id").alias(n["customer_id"]), pl.col("meter_api_name").alias(n["meter_api_name"]),
                pl.col("value").alias(n["meter_value"]), _time(part, iso).alias(time_name),
                pl.col("uid").alias(n["unique_id"]), "region", "tier", pl.col("cancel").alias("meterbill_cancel")]
        if part["session"].is_not_null().any():
            cols += ["session", "trace"]
        if part["bad_dim"].is_not_null().any():
            cols.append(pl.col("bad_dim").alias("bad key!"))
        return part.select(cols).write_csv().encode()
    if kind == "parquet":
        value = pl.when(pl.col("value") == "NaN").then(pl.lit(float("nan"))).otherwise(
            pl.col("value").cast(pl.Float64, strict=False))
        time = (pl.from_epoch(pl.col("ms"), time_unit="ms").dt.replace_time_zone("UTC").alias("event_time") if iso
                else pl.col("ms").alias(n["meter_time_in_millis"]))
        if iso:  # bad_timestamp as a typed timestamp: before the epoch
            time = pl.when(pl.col("kind") == "bad_timestamp").then(
                pl.lit(dt.datetime(1960, 1, 1, tzinfo=dt.timezone.utc))).otherwise(time).alias("event_time")
        entries = {"region": pl.col("region"), "tier": pl.col("tier"), "session": pl.col("session"),
                   "trace": pl.col("trace"),
                   "meterbill_cancel": pl.col("cancel"), "bad key!": pl.col("bad_dim")}
        if dims_as == "map":
            dims = (pl.concat_list([pl.struct(key=pl.lit(k), value=v) for k, v in entries.items()])
                    .list.eval(pl.element().filter(pl.element().struct.field("value").is_not_null()))
                    .cast(pl.Map(pl.String, pl.String)))
        else:
            dims = pl.struct(**entries)
        df = part.select(pl.col("customer_id").alias(n["customer_id"]), pl.col("meter_api_name").alias(n["meter_api_name"]),
                         value.alias(n["meter_value"]), time, pl.col("uid").alias(n["unique_id"]),
                         dims.alias("dimensions"))
        import io

        buf = io.BytesIO()
        df.write_parquet(buf)
        return buf.getvalue()
    # JSON: build each record's text (values are plain ASCII: no escaping needed)
    def kv(name: str, expr: pl.Expr, quote: bool = True) -> pl.Expr:
        v = pl.concat_str([pl.lit('"'), expr, pl.lit('"')]) if quote else expr
        return pl.when(expr.is_null()).then(pl.lit("")).otherwise(pl.concat_str([pl.lit(f',"{name}":'), v]))

    value_quoted = str_values
    value = kv(n["meter_value"], pl.col("value"), quote=value_quoted)
    if not value_quoted:  # numbers, except the word that is the defect
        value = pl.when(pl.col("value") == "abc").then(pl.lit(f',"{n["meter_value"]}":"abc"')).otherwise(value)
    time = kv(time_name, _time(part, iso), quote=iso)
    dims_items = [kv("region", pl.col("region")), kv("tier", pl.col("tier")), kv("session", pl.col("session")), kv("trace", pl.col("trace")),
                  kv("meterbill_cancel", pl.col("cancel")), kv("bad key!", pl.col("bad_dim"))]
    dims = pl.concat_str([pl.lit('{"_":"_"'), *dims_items, pl.lit("}")]).str.replace('{"_":"_",', "{", literal=True)
    dims = pl.when(dims == '{"_":"_"}').then(pl.lit("{}")).otherwise(dims)
    line = pl.concat_str([
        pl.lit('{"_":0'), kv(n["customer_id"], pl.col("customer_id")), kv(n["meter_api_name"], pl.col("meter_api_name")),
        value, time, kv(n["unique_id"], pl.col("uid")), pl.lit(',"dimensions":'), dims, pl.lit("}"),
    ]).str.replace('{"_":0,', "{", literal=True)
    lines = part.select(line.alias("l"))["l"].to_list()
    if kind == "json":
        return ("[\n" + ",\n".join(lines) + "\n]\n").encode()
    return ("\n".join(lines) + "\n").encode()
