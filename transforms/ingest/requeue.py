"""Re-validating quarantined records (SPEC §2 "Clock-dependent reasons are not final").

A quarantine row keeps the record as read (`raw`: the record as JSON text), so the same parse
and validate code can judge it again, with the source file and row number it had:

- `requeue_sql`: which quarantined records to judge again. The clock-dependent reasons are
  always candidates, but only those the run's clock can change: a `future_event` whose time is
  no longer after the run's latest allowed instant, a `too_old` whose time is no longer before
  its oldest allowed one (the time is computed from the stored text as the parse computes it;
  a time it cannot compute is a candidate). Records of the reasons asked for (`--requeue`) are
  all candidates. `maybe_due` finds, cheaply, the files and source files that may hold such
  records (Polars over the reason column, and the time columns of those reasons only):
  a lake with nothing clock-dependent pays for that column; `requeue_sql` then reads only
  those files, one source file at a time.
- `replay_batches`: quarantine rows of one source file -> raw batches for `normalize`: a JSON
  source (and a Parquet one whose file is gone) as JSON records, a CSV source as its header and
  cells again. A CSV record that was not a record (wrong number of fields) is not replayed: it
  cannot become valid.

Pure functions over frames and SQL text; reading the files and the tables is the flow's job.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Iterable

import numpy as np
import polars as pl
import pyarrow as pa

from catalog.lake import sql_str
from transforms.ingest.normalize import NUMBER_RE
from transforms.ingest.readers import RawBatch
from transforms.ingest.validate import CLOCK_REASONS, Rules

# the quarantine columns a replay needs
REPLAY_COLUMNS = ("source_file", "row_number", "reason", "detail", "raw")


def _ts(v) -> str:
    return f"TIMESTAMPTZ {sql_str(v.isoformat())}"


def quarantined_time_sql() -> str:
    """A quarantined record's event time from its stored text, as `parse.PARSE_SQL` reads it:
    meter_time_in_millis (epoch ms) when given, else event_time (ISO-8601); NULL when it cannot
    be read (needs `SET TimeZone = 'UTC'`)."""
    ms, et = "trim(meter_time_in_millis)", "trim(event_time)"
    return (f"CASE WHEN meter_time_in_millis IS NOT NULL THEN "
            f"CASE WHEN regexp_full_match({ms}, {sql_str(NUMBER_RE)}) "
            f"THEN TRY_CAST(epoch_ms(TRY_CAST(TRY_CAST({ms} AS DOUBLE) AS BIGINT)) AS TIMESTAMPTZ) END "
            f"ELSE CASE WHEN regexp_matches({et}, '^\\d{{4}}-\\d{{2}}-\\d{{2}}') THEN TRY_CAST({et} AS TIMESTAMPTZ) END END")


_MARGIN = dt.timedelta(days=2)  # wider than any UTC offset: the rough reading of event_time errs on the safe side


def maybe_due(rules: Rules, reasons: Iterable[str] = ()) -> pl.Expr:
    """A cheap Polars filter over the quarantine table that keeps at least every record
    `requeue_sql` picks (the reasons asked for; the clock-dependent ones whose time, read
    roughly — epoch ms as a float, the date of an ISO text — is within two days of being let
    in, or cannot be read that way). `requeue_sql` then decides exactly."""
    every = sorted(set(reasons) | set(CLOCK_REASONS))
    ms = pl.col("meter_time_in_millis").str.strip_chars().cast(pl.Float64, strict=False)
    day = pl.col("event_time").str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    latest, oldest = rules.latest_allowed + _MARGIN, rules.oldest_allowed - _MARGIN

    def rough(after_ms: pl.Expr, after_day: pl.Expr) -> pl.Expr:
        """True unless the time is surely on the wrong side (by ms when given, else by date)."""
        return (pl.when(pl.col("meter_time_in_millis").is_not_null()).then(after_ms.fill_null(True))
                .otherwise(after_day.fill_null(True)))

    not_future = rough(ms <= latest.timestamp() * 1000, day <= latest.date())
    not_old = rough(ms >= oldest.timestamp() * 1000, day >= oldest.date())
    keep = (pl.col("reason").is_in(sorted(set(reasons))) if reasons else pl.lit(False)) \
        | ((pl.col("reason") == "future_event") & not_future) | ((pl.col("reason") == "too_old") & not_old)
    return pl.col("reason").is_in(every) & pl.col("row_number").is_not_null() & keep


def requeue_sql(quarantine: str, rules: Rules, reasons: Iterable[str] = ()) -> str:
    """(filename, source_file, row_number, reason, ingested_at) of the records of `quarantine`
    (a relation of the quarantine table's columns and `filename`) to judge again under `rules`:
    see the module doc."""
    asked = sorted(set(reasons))
    every = sorted(set(asked) | set(CLOCK_REASONS))
    t = quarantined_time_sql()
    conds = [f"reason IN ({', '.join(sql_str(r) for r in asked)})"] if asked else []
    conds.append(f"(reason = 'future_event' AND NOT coalesce({t} > {_ts(rules.latest_allowed)}, false))")
    conds.append(f"(reason = 'too_old' AND NOT coalesce({t} < {_ts(rules.oldest_allowed)}, false))")
    return f"""
SELECT filename, source_file, row_number, reason, ingested_at FROM {quarantine}
WHERE reason IN ({', '.join(sql_str(r) for r in every)}) AND row_number IS NOT NULL
  AND ({' OR '.join(conds)})"""


def _json_batch(rows: pl.DataFrame) -> RawBatch:
    t = pa.table({"__rn": pa.array(rows["row_number"].cast(pl.Int64).to_numpy(), pa.int64()),
                  "c0": pa.array(rows["raw"].to_list(), pa.string())})
    return RawBatch("json", t)


def _csv_batches(rows: pl.DataFrame) -> list[RawBatch]:
    """The records again as CSV cells under their header (`raw` is the JSON object header -> cell);
    one batch per header (a file has one)."""
    by_header: dict[tuple[str, ...], tuple[list[int], list[list[str]]]] = {}
    for rn, raw in zip(rows["row_number"].to_list(), rows["raw"].to_list()):
        if not raw.lstrip().startswith("{"):
            continue  # a JSON array of the fields: the record had the wrong width
        pairs = json.loads(raw, object_pairs_hook=list)
        header = tuple(k for k, _ in pairs)
        cells = ["" if v is None else v if isinstance(v, str) else json.dumps(v) for _, v in pairs]
        rns, cols = by_header.setdefault(header, ([], []))
        rns.append(rn)
        cols.append(cells)
    out = []
    for header, (rns, recs) in by_header.items():
        n = len(header)
        arrays = [pa.array(np.asarray(rns, dtype=np.int64))]
        arrays += [pa.array([r[i] for r in recs], pa.string()) for i in range(n)]
        arrays += [pa.nulls(len(rns), pa.string()), pa.nulls(len(rns), pa.string())]
        names = ["__rn"] + [f"c{i}" for i in range(n)] + ["__err", "__raw"]
        out.append(RawBatch("csv", pa.Table.from_arrays(arrays, names=names), list(header)))
    return out


def replay_batches(rows: pl.DataFrame, kind: str) -> list[RawBatch]:
    """Quarantine rows (REPLAY_COLUMNS) of one source file as raw batches; `kind` is the source's
    format kind (`csv`; `ndjson`, `json`, `parquet`: JSON records)."""
    rows = rows.filter(pl.col("raw").is_not_null())
    if rows.height == 0:
        return []
    if kind == "csv":
        return _csv_batches(rows)
    return [_json_batch(rows)]
