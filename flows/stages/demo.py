"""`meterbill demo`'s lake: the sample catalogue and realistic events (the pipeline and the tables
printed after it are the command line's, flows/cli/demo.py)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Callable

from catalog import Lake
from flows import _ROOT
from flows.stages.common import UsageError, open_catalog
from flows.stages.generate import generate

SAMPLE_CATALOG = _ROOT / "data" / "catalog"
MARKER = ".meterbill-demo.json"  # in raw/ (hidden: ingest skips it): the raw files demo wrote and their sha256


def _files(root: Path) -> dict[str, Path]:
    """Every regular file under `root` that is not hidden, by its POSIX path relative to `root`."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def _sha256(p: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _written(lk: Lake) -> dict[str, str]:
    p = lk.raw_dir / MARKER
    try:
        files = json.loads(p.read_text(encoding="utf-8")).get("files", {}) if p.is_file() else {}
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def check_demo_lake(lk: Lake) -> None:
    """Refuse a lake holding a catalogue or raw files demo did not write (nothing is written).

    Demo's own: a catalogue byte for byte the sample's (the repository's data/ is one), and raw
    files listed, with their sha256, in raw/.meterbill-demo.json, which demo writes."""
    cat = _files(lk.catalog_dir)
    if cat:
        sample = _files(SAMPLE_CATALOG)
        if cat.keys() != sample.keys() or any(p.read_bytes() != sample[k].read_bytes() for k, p in cat.items()):
            raise UsageError(f"demo: {lk.catalog_dir} holds a catalogue demo did not write (not the sample's); "
                             "demo writes synthetic events for its customers and bills them: give a new folder (--lake DIR)")
    mine = _written(lk)
    foreign = [rel for rel, p in lk.raw_files() if mine.get(rel) != _sha256(p)]
    if foreign:
        n = len(foreign)
        raise UsageError(f"demo: {lk.raw_dir} holds {n} file{'' if n == 1 else 's'} demo did not write "
                         f"({', '.join(foreign[:3])}{', …' if n > 3 else ''}); demo would ingest and bill them "
                         "with its synthetic events: give a new folder (--lake DIR)")


def _record_written(lk: Lake, paths: list[Path]) -> None:
    """Add the raw files demo wrote to its marker (written then renamed)."""
    files = {rel: sha for rel, sha in _written(lk).items() if (lk.raw_dir / rel).is_file()}
    files.update({p.relative_to(lk.raw_dir).as_posix(): _sha256(p) for p in paths})
    marker = lk.raw_dir / MARKER
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps({"written_by": "meterbill demo", "files": dict(sorted(files.items()))}, indent=1),
                   encoding="utf-8")
    tmp.replace(marker)


def prepare_demo_lake(lake: str | None, t: dt.datetime, days: int, events_per_day: int, seed: int,
                      say: Callable[[str], None], progress: Callable[[str], None]) -> Lake:
    """The sample catalogue (unless the lake has one) and `days` days of messy events ending at
    `t`, recorded as demo's own; refused for a lake holding what demo did not write."""
    lk = Lake.open(lake)
    check_demo_lake(lk)
    if not lk.catalog_dir.is_dir() or not any(lk.catalog_dir.iterdir()):
        shutil.copytree(SAMPLE_CATALOG, lk.catalog_dir, dirs_exist_ok=True)
        say(f"sample catalogue written to {lk.catalog_dir}")
    cat = open_catalog(lk)
    first = (t - dt.timedelta(days=days)).date()
    g = generate(cat, lk.raw_dir, first, days, events_per_day, seed, messy=True, progress=progress)
    _record_written(lk, g.files)
    say(f"generated {g.rows} raw rows ({g.events} events, {sum(g.defects.values())} bad rows, "
        f"{g.duplicates} duplicates) for {first} .. {t.date()} under {lk.raw_dir}")
    return lk
