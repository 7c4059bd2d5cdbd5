"""The large flat tables (customers, subscriptions, credits), read and validated column by column.

A table of 100,000 records is read as columns (Polars for CSV and Parquet, `catalog.fastyaml` or
LibYAML for YAML) and each field is checked over its whole column, the distinct values of a
column once each (time zones, dates, currencies repeat; catalog/flat_rules.py). The rules and
messages are the record models' own (`Customer`, `Subscription`, `Credit` in catalog/config.py):
a problem names the file, the record number and the field, in whichever format the table is
written. The valid records
become a `FlatTable`, a read-only mapping key -> model that builds each model when it is first
asked for (`len`, `in` and iteration over the keys build none).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from catalog.files import label
from catalog.flat_rules import MISSING, RULES, check_column


# ---------------------------------------------------------------- the read columns


@dataclass
class Columns:
    """A table as read: `n` records, each field a list of values (MISSING where a record has none)."""
    n: int
    data: dict[Any, list] = field(default_factory=dict)
    not_mapping: list[int] = field(default_factory=list)  # records (0-based) that are no mapping


class Unreadable(Exception):
    """The file cannot be read as a table: one line, no record."""


def read_columns(path: Path) -> Columns:
    suffix = path.name[path.name.find("."):].lower()
    if suffix in (".yaml", ".yml"):
        return _read_yaml(path)
    if suffix == ".csv":
        return _read_csv(path)
    return _read_parquet(path)


def _read_yaml(path: Path) -> Columns:
    from catalog import fastyaml

    text = path.read_text(encoding="utf-8")
    fast = fastyaml.read(text, MISSING)
    if fast is not None and fast[0] > 0:
        return Columns(*fast)
    records = yaml.load(text, Loader=yaml.CSafeLoader)
    if records is None:
        raise Unreadable("the file is empty; write [] for a table with no records")
    if not isinstance(records, list):
        raise Unreadable("must be a list of records")
    return records_to_columns(records)


def records_to_columns(records: list) -> Columns:
    cols = Columns(len(records))
    keys: dict[Any, None] = {}
    for i, r in enumerate(records):
        if isinstance(r, dict):
            keys.update(dict.fromkeys(r))
        else:
            cols.not_mapping.append(i)
    for k in keys:
        cols.data[k] = [r.get(k, MISSING) if isinstance(r, dict) else MISSING for r in records]
    return cols


_DELIMITERS = ((";", "';'"), ("\t", "tabs"), ("|", "'|'"))


def _read_csv(path: Path) -> Columns:
    raw = path.read_bytes()
    if not raw.strip():
        raise Unreadable("the file is empty; write the header line for a table with no records")
    header = raw.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
    if "," not in header:
        for d, name in _DELIMITERS:
            if d in header:
                raise Unreadable(f"the header has one column {header!r}: fields must be separated by commas "
                                 f"(this file seems to use {name})")
    df = pl.read_csv(io.BytesIO(raw), infer_schema=False)  # every cell as text, an empty cell as absent
    return _frame_columns(df)


def _read_parquet(path: Path) -> Columns:
    return _frame_columns(pl.read_parquet(path))


def _frame_columns(df: pl.DataFrame) -> Columns:
    """Columns of a CSV or Parquet frame; an empty cell (null or "") is an absent field."""
    cols = Columns(df.height)
    for name in df.columns:
        s = df[name]
        if s.dtype == pl.String:
            s = s.replace("", None)
        cols.data[name.lstrip("\ufeff")] = ([MISSING if v is None else v for v in s.to_list()]
                                            if s.null_count() else s.to_list())
    return cols


# ---------------------------------------------------------------- the table


class FlatTable(Mapping):
    """key -> model of the valid records, in file order; a model is built when first asked for."""

    def __init__(self, model: type, fields: dict[str, list], rows: list[int], keys: list[str]):
        self._model = model
        self._fields = fields
        self._rows = rows
        self._index = dict(zip(keys, range(len(keys))))
        self._keys = keys
        self._built: list[Any] = [None] * len(rows)
        self._all: list[Any] | None = None  # every model, once all are built

    def _at(self, pos: int) -> Any:
        m = self._built[pos]
        if m is None:
            r = self._rows[pos]
            kw = {f: col[r] for f, col in self._fields.items() if col[r] is not MISSING}
            m = self._built[pos] = self._model.model_construct(**kw)
        return m

    def __getitem__(self, key: str) -> Any:
        return self._at(self._index[key])

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def values(self):  # noqa: D102  (in file order, built once)
        if self._all is None:
            self._all = [self._at(i) for i in range(len(self._keys))]
        return list(self._all)

    def items(self):  # noqa: D102
        return list(zip(self._keys, self.values()))

    def get(self, key: Any, default: Any = None) -> Any:  # noqa: D102
        pos = self._index.get(key)
        return default if pos is None else self._at(pos)

    def column(self, name: str) -> list:
        """One field of every valid record, in file order (MISSING where absent: the model's default)."""
        col = self._fields.get(name)
        return [MISSING] * len(self._rows) if col is None else [col[r] for r in self._rows]

    def __repr__(self) -> str:
        return f"FlatTable({self._model.__name__}, {len(self)} records)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]


@dataclass
class FlatResult:
    table: FlatTable
    problems: list[str]
    present: set[str]            # keys of every record, valid or not
    numbers: dict[str, int]      # key -> record number (1-based) of the record kept
    fields: dict[str, list]      # parsed values of every record (MISSING where absent or invalid)
    bad: dict[str, set[int]]     # field -> records (0-based) whose value is invalid
    duplicates: set[int]         # records (0-based) whose key an earlier valid record has


MAX_LINES_PER_FILE = 100


def load_flat(path: Path, table: str, model: type, key: str) -> FlatResult:
    """Read and validate one flat table; raises Unreadable when the file is no table at all."""
    where_file = label(path)
    try:
        cols = read_columns(path)
    except Unreadable:
        raise
    except Exception as e:  # the parser's own words, on one line
        raise Unreadable(f"cannot be read: {' '.join(str(e).split())}") from None
    rules = RULES[table]
    n = cols.n
    problems: dict[int, list[str]] = {}
    fields: dict[str, list] = {}
    bad_fields: dict[str, set[int]] = {}
    for name, rule in rules.items():
        values = cols.data.get(name)
        if values is None:
            values = [MISSING] * n
        parsed, bad = check_column(rule, values)
        fields[name] = parsed
        bad_fields[name] = set(bad)
        for i, (loc, msg) in bad.items():
            problems.setdefault(i, []).append(f"{name}{loc}: {msg}")
    for extra, values in cols.data.items():
        if extra in rules:
            continue
        for i, v in enumerate(values):
            if v is not MISSING:
                problems.setdefault(i, []).append(f"{extra}: Extra inputs are not permitted")
    for i in cols.not_mapping:
        problems[i] = ["must be a mapping of field: value"]
    raw_keys = cols.data.get(key, [MISSING] * n)
    present = {k for k in raw_keys if isinstance(k, str)}
    keys_col = fields[key]
    lines: list[str] = []
    rows: list[int] = []
    keys: list[str] = []
    numbers: dict[str, int] = {}
    duplicates: set[int] = set()
    for i in range(n):
        ident = raw_keys[i]
        where = f"{where_file}: record {i + 1}" + (f" ({key}={ident})" if ident is not MISSING and ident is not None
                                                   and i not in cols.not_mapping else "")
        if i in problems:
            lines.extend(f"{where}: {p}" for p in problems[i])
            continue
        k = keys_col[i]
        if k in numbers:
            lines.append(f"{where}: {key}: duplicate {key} {k!r}")
            duplicates.add(i)
            continue
        numbers[k] = i + 1
        rows.append(i)
        keys.append(k)
    if len(lines) > MAX_LINES_PER_FILE:
        more = len(lines) - MAX_LINES_PER_FILE
        lines = lines[:MAX_LINES_PER_FILE] + [f"{where_file}: … and {more:,} more problems in this file"]
    return FlatResult(FlatTable(model, fields, rows, keys), lines, present, numbers, fields, bad_fields, duplicates)
