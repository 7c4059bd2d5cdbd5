"""Readers: one raw file -> Arrow batches of bounded size, in file order, each record numbered.

This is the only part of transforms/ingest that touches files (the "reader" step). Every reader
yields `RawBatch`es whose table has `__rn` (1-based record number within the file) and the
file's own columns renamed `c0, c1, ...` (their real names are in `names`), so that no name
found in a file can collide with ours or reach SQL unquoted.

- CSV: every value as text, blank lines skipped, quoted line breaks kept. pyarrow's reader
  first; if a record's field count differs from the header's, the file is read again with
  Python's csv parser, which keeps such a record as an `__err` row (quarantined as bad_type).
- NDJSON / JSON Lines: one JSON text per non-blank line (`c0`), parsed later in SQL, so one bad
  line is one quarantined record.
- JSON (.json): DuckDB's reader hands over each element's JSON text (a top-level array, or
  objects one after another); a malformed document makes the file unreadable.
- Parquet: pyarrow, typed (MAP/STRUCT/JSON dimensions, decimals, floats, timestamps).

Any exception while reading (corrupt gzip, bad UTF-8, not Parquet, malformed JSON array) means
the whole file is unreadable; the caller discards what it had staged for the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress, islice
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from catalog.lake import sql_str
from transforms.ingest.formats import Format

DEFAULT_BATCH_ROWS = 200_000
_NDJSON_CHUNK_BYTES = 48 << 20
_CSV_BLOCK_BYTES = 32 << 20
_BOM = b"\xef\xbb\xbf"

csv.field_size_limit(16 << 20)


class UnreadableFile(Exception):
    """The file as a whole cannot be read as its format."""


@dataclass
class RawBatch:
    kind: str
    table: pa.Table  # __rn, c0..cN (CSV also __err, __raw: set for records of the wrong width)
    names: list[str] = field(default_factory=list)  # real names of c0..cN
    types: list[pa.DataType] = field(default_factory=list)  # Parquet: their Arrow types


def _rn(start: int, n: int) -> pa.Array:
    return pa.array(np.arange(start + 1, start + 1 + n, dtype=np.int64))


def read_batches(path: Path, fmt: Format, *, batch_rows: int = DEFAULT_BATCH_ROWS,
                 scratch_dir: Path | None = None, json_con: duckdb.DuckDBPyConnection | None = None,
                 csv_engine: str = "arrow") -> Iterator[RawBatch]:
    """The file's records in batches. CSV: `csv_engine="arrow"` (fast) raises CsvNeedsRecordParser
    at the first record of the wrong width; read the file again with "python" then."""
    if fmt.kind == "csv":
        yield from _read_csv(path, fmt.gzip, batch_rows, csv_engine)
    elif fmt.kind == "ndjson":
        yield from _read_ndjson(path, fmt.gzip)
    elif fmt.kind == "json":
        if json_con is None:
            raise ValueError("reading .json needs a DuckDB connection")
        yield from _read_json_document(path, fmt.gzip, batch_rows, json_con)
    elif fmt.kind == "parquet":
        yield from _read_parquet(path, fmt.gzip, batch_rows, scratch_dir)
    else:  # pragma: no cover
        raise ValueError(fmt)


# ---------------------------------------------------------------- CSV


def _open_text(path: Path, gz: bool) -> io.TextIOBase:
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


class CsvNeedsRecordParser(Exception):
    """The fast CSV reader met a record of the wrong width: read the file again with `csv_engine="python"`."""


def _csv_header(path: Path, gz: bool) -> tuple[list[str] | None, int]:
    """The header (first non-blank record, names stripped) and how many lines it took."""
    with _open_text(path, gz) as f:
        reader = csv.reader(f, strict=False)
        for row in reader:
            if row:
                header = [h.strip() for h in row]
                seen: set[str] = set()
                for h in header:
                    if h in seen:
                        raise UnreadableFile(f"CSV header names column {h!r} twice")
                    seen.add(h)
                return header, reader.line_num
    return None, 0


def _read_csv(path: Path, gz: bool, batch_rows: int, engine: str = "arrow") -> Iterator[RawBatch]:
    header, skip = _csv_header(path, gz)
    if header is None:
        return  # an empty file: no records
    if engine == "arrow":
        yield from _read_csv_arrow(path, gz, header, skip)
    else:
        yield from _read_csv_python(path, gz, header, batch_rows)


def _read_csv_arrow(path: Path, gz: bool, header: list[str], skip: int) -> Iterator[RawBatch]:
    """pyarrow's streaming reader: fast, every value as text, blank lines skipped."""
    n = len(header)
    names = [f"c{i}" for i in range(n)]
    ragged: list[int] = []

    def on_invalid(row) -> str:
        ragged.append(row.actual_columns)
        return "skip"

    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip, block_size=_CSV_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    done = 0
    try:
        for rb in reader:
            if ragged:
                raise CsvNeedsRecordParser(f"a record has {ragged[0]} fields, the header has {n}")
            if rb.num_rows == 0:
                continue
            m = rb.num_rows
            t = pa.Table.from_batches([rb]).add_column(0, "__rn", _rn(done, m))
            done += m
            t = t.append_column("__err", pa.nulls(m, pa.string())).append_column("__raw", pa.nulls(m, pa.string()))
            yield RawBatch("csv", t, header)
        if ragged:
            raise CsvNeedsRecordParser(f"a record has {ragged[0]} fields, the header has {n}")
    finally:
        reader.close()


def _read_csv_python(path: Path, gz: bool, header: list[str], batch_rows: int) -> Iterator[RawBatch]:
    """Python's csv parser: slower, but keeps a record of the wrong width (flagged in `__err`)."""
    with _open_text(path, gz) as f:
        reader = csv.reader(f, strict=False)
        for row in reader:
            if row:
                break  # the header
        n = len(header)
        names = [f"c{i}" for i in range(n)]
        done = 0
        while True:
            chunk = list(islice(reader, batch_rows))
            if not chunk:
                break
            rows = list(filter(None, chunk))  # blank lines are not records
            if not rows:
                continue
            lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            rn = _rn(done, len(rows))
            done += len(rows)
            good = lens == n
            if good.all():
                yield RawBatch("csv", _csv_table(rows, rn, n, names), header)
                continue
            # records of the wrong width: kept (padded or cut to the header) and flagged
            mask = pa.array(good)
            good_t = _csv_table(list(compress(rows, good)), rn.filter(mask), n, names)
            bad_rows = list(compress(rows, ~good))
            fixed = [(r + [None] * n)[:n] for r in bad_rows]
            errors = [f"CSV record has {len(r)} fields, the header has {n}" for r in bad_rows]
            raws = [json.dumps(r, ensure_ascii=False) for r in bad_rows]
            bad_t = _csv_table(fixed, rn.filter(pc.invert(mask)), n, names, errors, raws)
            yield RawBatch("csv", pa.concat_tables([good_t, bad_t]), header)


def _csv_table(rows: list, rn: pa.Array, n: int, names: list[str],
               errors: list[str] | None = None, raws: list[str] | None = None) -> pa.Table:
    cols = list(zip(*rows)) if rows else [()] * n
    arrays = [rn] + [pa.array(c, pa.string()) for c in cols]
    m = len(rn)
    arrays.append(pa.array(errors, pa.string()) if errors is not None else pa.nulls(m, pa.string()))
    arrays.append(pa.array(raws, pa.string()) if raws is not None else pa.nulls(m, pa.string()))
    return pa.Table.from_arrays(arrays, names=["__rn"] + names + ["__err", "__raw"])


# ---------------------------------------------------------------- NDJSON / JSON Lines


def _read_ndjson(path: Path, gz: bool) -> Iterator[RawBatch]:
    opener = gzip.open if gz else open
    done = 0
    first = True
    with opener(path, "rb") as f:
        while True:
            lines = f.readlines(_NDJSON_CHUNK_BYTES)
            if not lines:
                break
            if first and lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM):]
            first = False
            try:
                text = pa.array(lines, pa.binary()).cast(pa.string())
            except pa.ArrowInvalid:
                raise UnreadableFile(f"not UTF-8 text near record {done + 1}") from None
            text = pc.utf8_trim_whitespace(text)
            text = text.filter(pc.greater(pc.utf8_length(text), 0))
            if len(text) == 0:
                continue
            rn = _rn(done, len(text))
            done += len(text)
            yield RawBatch("json", pa.Table.from_arrays([rn, text], names=["__rn", "c0"]))


# ---------------------------------------------------------------- JSON document (.json)


def _first_char(path: Path, gz: bool) -> bytes:
    with (gzip.open if gz else open)(path, "rb") as f:
        head = f.read(4096)
    return head.removeprefix(_BOM).lstrip()[:1]


def _read_json_document(path: Path, gz: bool, batch_rows: int, con: duckdb.DuckDBPyConnection) -> Iterator[RawBatch]:
    # a top-level array, else JSON values one after the other (newline-delimited or pretty-printed)
    layout = "array" if _first_char(path, gz) == b"[" else "unstructured"
    rel = con.sql(
        "SELECT json::VARCHAR AS c0 FROM read_json_objects("
        f"{sql_str(path)}, format={sql_str(layout)}, compression={sql_str('gzip' if gz else 'none')})"
    )
    reader = rel.to_arrow_reader(batch_rows)
    done = 0
    try:
        for rb in reader:
            if rb.num_rows == 0:
                continue
            rn = _rn(done, rb.num_rows)
            done += rb.num_rows
            yield RawBatch("json", pa.Table.from_arrays([rn, rb.column(0)], names=["__rn", "c0"]))
    finally:
        reader.close()  # an open reader locks the connection


# ---------------------------------------------------------------- Parquet


@contextmanager
def parquet_file(path: Path, gz: bool, scratch_dir: Path | None) -> Iterator[tuple[Path, pq.ParquetFile]]:
    """A Parquet file opened by pyarrow (a `.parquet.gz` is unpacked into `scratch_dir` first):
    its plain path and the open file; UnreadableFile if it is not Parquet."""
    if gz:
        if scratch_dir is None:
            raise ValueError("reading .parquet.gz needs a scratch folder")
        plain = scratch_dir / "gunzipped.parquet"
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        path = plain
    try:
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:
            raise UnreadableFile(f"not a Parquet file: {e}") from None
        try:
            yield Path(path), pf
        finally:
            pf.close()
    finally:
        if gz:
            Path(path).unlink(missing_ok=True)


def _read_parquet(path: Path, gz: bool, batch_rows: int, scratch_dir: Path | None) -> Iterator[RawBatch]:
    with parquet_file(path, gz, scratch_dir) as (_, pf):
        schema = pf.schema_arrow
        names, types = list(schema.names), list(schema.types)
        cols = [f"c{i}" for i in range(len(names))]
        done = 0
        for rb in pf.iter_batches(batch_size=batch_rows):
            if rb.num_rows == 0:
                continue
            rn = _rn(done, rb.num_rows)
            done += rb.num_rows
            t = pa.Table.from_batches([rb]).rename_columns(cols)
            yield RawBatch("parquet", t.add_column(0, "__rn", rn), names, types)


def read_parquet_rows(path: Path, gz: bool, rows: list[int], scratch_dir: Path | None) -> Iterator[RawBatch]:
    """The records of a Parquet file with the given 1-based numbers, as `_read_parquet` gives
    them (one batch per row group that holds some); only those row groups are read."""
    wanted = np.unique(np.asarray(rows, dtype=np.int64)) - 1
    with parquet_file(path, gz, scratch_dir) as (_, pf):
        schema = pf.schema_arrow
        names, types = list(schema.names), list(schema.types)
        cols = [f"c{i}" for i in range(len(names))]
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            lo, hi = np.searchsorted(wanted, [start, start + n])
            if hi > lo:
                local = wanted[lo:hi] - start
                t = pf.read_row_group(g).take(pa.array(local)).rename_columns(cols)
                yield RawBatch("parquet", t.add_column(0, "__rn", pa.array(local + start + 1)), names, types)
            start += n


def read_rows(path: Path, fmt: Format, rows: list[int], *, scratch_dir: Path | None = None,
              json_con: duckdb.DuckDBPyConnection | None = None) -> Iterator[RawBatch]:
    """Only the records with the given numbers (Parquet: their row groups; other formats: the
    whole file, filtered)."""
    if fmt.kind == "parquet":
        yield from read_parquet_rows(path, fmt.gzip, rows, scratch_dir)
        return
    wanted = pa.array(sorted(set(rows)), pa.int64())
    for engine in ("arrow", "python"):  # CSV: a record of the wrong width needs Python's parser
        found = []
        try:
            for b in read_batches(path, fmt, scratch_dir=scratch_dir, json_con=json_con, csv_engine=engine):
                t = b.table.filter(pc.is_in(b.table["__rn"], value_set=wanted))
                if t.num_rows:
                    found.append(RawBatch(b.kind, t, b.names, b.types))
        except CsvNeedsRecordParser:
            continue
        yield from found
        return
