"""Loading the product catalogue (SPEC §3): the folder's files -> the validated `Catalog` of catalog/config.py.

Every file is validated on load. Problems are collected, never raised one by one: a bad
catalogue stops the run with one line per problem naming file, record and field. Which files
make the catalogue: catalog/files.py; the large flat tables: catalog/flat.py; references
between tables: catalog/checks.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from catalog.checks import _View, _get, cross_check
from catalog.config import TABLES, Catalog, CatalogError, Settings


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(record)"


_LOADED: dict[str, Catalog] = {}  # content digest of a catalogue folder -> its Catalog (the last few)


def _digest(catalog_dir: Path) -> str:
    """sha256 over the names and bytes of the folder's files: equal digests, equal catalogues."""
    h = hashlib.sha256()
    for f in sorted(catalog_dir.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0")
            with f.open("rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
        elif f.is_dir():
            h.update(f.name.encode() + b"/\0")  # a folder is a problem of its own (catalog/files.py)
    return h.hexdigest()


def load_catalog(catalog_dir: Path | str) -> Catalog:
    """Read and validate every catalogue file; raise CatalogError listing every problem.

    A run loads the catalogue in every flow and task; a folder whose files did not change since
    an earlier load in this process (same names and bytes) gives the same validated Catalog
    (frozen models) without parsing it again."""
    catalog_dir = Path(catalog_dir)
    if not catalog_dir.is_dir():
        raise CatalogError([f"{catalog_dir}: catalogue folder not found"])
    key = _digest(catalog_dir)
    if key not in _LOADED:
        cat = _load(catalog_dir)
        while len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = cat
    return _LOADED[key]



def _read_yaml(path: Path, empty: str) -> Any:
    with path.open(encoding="utf-8") as f:
        data = yaml.load(f, Loader=yaml.CSafeLoader)
    if data is None:
        raise _Unreadable(f"the file is empty; {empty}")
    return data


class _Unreadable(Exception):
    pass




def _load(catalog_dir: Path) -> Catalog:
    from catalog.files import find_files
    from catalog.flat import MISSING

    files = find_files(catalog_dir)
    problems: list[str] = list(files.problems)
    tables: dict[str, Any] = {}
    views: dict[str, _View] = {}
    for name in TABLES:
        tables[name], views[name] = _load_table(name, files, problems)
    settings, settings_ok = _load_settings(files.paths.get("settings"), problems)
    problems += cross_check(views, settings if settings_ok else None, MISSING)
    if problems:
        raise CatalogError(problems)
    return Catalog.model_construct(settings=settings, ignored_files=tuple(files.ignored), **tables)


def _load_table(name: str, files, problems: list[str]) -> tuple[Any, "_View"]:
    """One table's records (key -> model) and what the cross-checks see of it; its problems are
    added to `problems`."""
    from catalog.files import label
    from catalog.flat import Unreadable, load_flat

    model, key, tabular = TABLES[name]
    path = files.paths.get(name)
    view = _View(label(path) if path else f"catalog/{name}.yaml", key)
    if name in files.rejected:
        view.read = False  # its file was refused: references into it cannot be judged
    if path is None:
        return {}, view
    if tabular:
        try:
            res = load_flat(path, name, model, key)
        except Unreadable as e:
            problems.append(f"{view.label}: {e}")
            view.read = False
            return {}, view
        problems.extend(res.problems)
        view.present, view.flat = res.present, res
        return res.table, view
    try:
        records = _read_yaml(path, "write [] for a table with no records")
    except _Unreadable as e:
        problems.append(f"{view.label}: {e}")
        view.read = False
        return {}, view
    except Exception as e:  # unreadable YAML: one line, the parser's own words
        problems.append(f"{view.label}: cannot be read: {' '.join(str(e).split())}")
        view.read = False
        return {}, view
    if not isinstance(records, list):
        problems.append(f"{view.label}: must be a list of records")
        view.read = False
        return {}, view
    return _validate_records(records, model, key, view, problems), view


def _validate_records(records: list, model, key: str, view: "_View", problems: list[str]) -> dict[str, Any]:
    """key -> model of a YAML table's valid records; every record (valid or not) is in `view`."""
    table: dict[str, Any] = {}
    for i, rec in enumerate(records, start=1):
        ident = rec.get(key) if isinstance(rec, dict) else None
        where = view.where(i, ident)
        if not isinstance(rec, dict):
            problems.append(f"{where}: must be a mapping of field: value")
            continue
        if isinstance(ident, str):
            view.present.add(ident)
        try:
            obj = model.model_validate(rec)
        except ValidationError as e:
            for err in e.errors():
                msg = err["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: {_loc(err['loc'])}: {msg}")
            view.records.append((i, rec))
            continue
        k = getattr(obj, key)
        if k in table:
            problems.append(f"{where}: {key}: duplicate {key} {k!r}")
            continue
        table[k] = obj
        view.records.append((i, obj))
    return table


def _load_settings(spath: Path | None, problems: list[str]) -> tuple[Settings, bool]:
    """settings.yaml (the defaults without one) and whether it is valid."""
    if spath is None:
        return Settings(), True
    try:
        raw = _read_yaml(spath, "write {} for the default settings")
        return Settings.model_validate(raw), True
    except ValidationError as e:
        for err in e.errors():
            problems.append(f"catalog/{spath.name}: {_loc(err['loc'])}: {err['msg'].removeprefix('Value error, ')}")
    except _Unreadable as e:
        problems.append(f"catalog/{spath.name}: {e}")
    except Exception as e:
        problems.append(f"catalog/{spath.name}: cannot be read: {' '.join(str(e).split())}")
    return Settings(), False
