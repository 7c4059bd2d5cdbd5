"""Which files make a catalogue folder (SPEC §3): one file per table, every file a table.

A file whose name is no table is an error (a misspelt `promotion.yaml` would otherwise never
apply), and so are two files for one table, a folder, and a YAML-only table written as CSV.
Names starting with `.` (.DS_Store, editor swap files, .git) are not the user's tables: they are
ignored, and listed so that `meterbill check` can say so.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")
FLAT_SUFFIXES = (".csv", ".parquet")
# Tables that may be written as CSV or Parquet besides YAML.
FLAT_TABLES = ("customers", "subscriptions", "credits")
# Every table name a file may have; `costs` (SPEC §10.4) is known but not read yet.
TABLE_NAMES = ("alerts", "costs", "credits", "currencies", "customers", "meters", "plans", "product_items",
               "promotions", "rewards", "settings", "subscriptions")


@dataclass
class CatalogFiles:
    paths: dict[str, Path] = field(default_factory=dict)  # table -> its one file
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)     # hidden names, not read
    rejected: set[str] = field(default_factory=set)      # tables whose file is refused (or misspelt): not judged


def label(path: Path) -> str:
    return f"catalog/{path.name}"


def find_files(catalog_dir: Path) -> CatalogFiles:
    found = CatalogFiles()
    by_table: dict[str, list[Path]] = {}
    for p in sorted(catalog_dir.iterdir(), key=lambda p: p.name):
        name = p.name
        if name.startswith("."):
            found.ignored.append(name)
            continue
        if p.is_dir():
            found.problems.append(f"{label(p)}: a folder inside the catalogue; the catalogue is the files "
                                  "directly in catalog/ (move it out)")
            continue
        stem, suffix = _split(name)
        if stem not in TABLE_NAMES:
            near = _near(stem)
            if near:
                found.rejected.add(near)
            found.problems.append(_not_a_table(p, stem, suffix, near))
            continue
        allowed = YAML_SUFFIXES + (FLAT_SUFFIXES if stem in FLAT_TABLES else ())
        if suffix not in allowed:
            found.rejected.add(stem)
            if suffix in FLAT_SUFFIXES:
                found.problems.append(f"{label(p)}: {stem} is written in YAML ({stem}.yaml); only "
                                      f"{', '.join(FLAT_TABLES[:-1])} and {FLAT_TABLES[-1]} may be .csv or .parquet")
            else:
                found.problems.append(f"{label(p)}: {suffix or 'a name without suffix'} is not a catalogue format "
                                      f"({stem}: {_formats(allowed)})")
            continue
        by_table.setdefault(stem, []).append(p)
    for table, paths in by_table.items():
        if len(paths) > 1:
            found.rejected.add(table)
            found.problems.append(f"{', '.join(label(p) for p in paths)}: two files for the table {table}; keep one"
                                  .replace("two files", f"{_count(len(paths))} files"))
            continue
        found.paths[table] = paths[0]
    found.problems.sort()
    found.rejected -= set(found.paths)
    return found


def _split(name: str) -> tuple[str, str]:
    dot = name.find(".")
    return (name, "") if dot < 0 else (name[:dot], name[dot:].lower())


def _formats(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffixes[:-1]) + " or " + suffixes[-1]


def _count(n: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))


def _near(stem: str) -> str | None:
    near = difflib.get_close_matches(stem.lower(), TABLE_NAMES, n=1, cutoff=0.6)
    return near[0] if near else None


def _not_a_table(path: Path, stem: str, suffix: str, near: str | None) -> str:
    if near:
        t = near
        ok = YAML_SUFFIXES + (FLAT_SUFFIXES if t in FLAT_TABLES else ())
        return f"{label(path)}: not a catalogue table (did you mean {t}{suffix if suffix in ok else '.yaml'}?)"
    return f"{label(path)}: not a catalogue table; the tables are {', '.join(TABLE_NAMES)}"
