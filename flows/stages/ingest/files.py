"""What an ingest run knows of the raw files before reading them: their hashes (and the recorded
stat that lets a file keep its hash unread), the run's clock, the group sizes, and the checks of
the run's arguments."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from catalog.lake import Lake, sql_str
from flows.stages.common import UsageError
from transforms.ingest.formats import Format
from transforms.ingest.readers import UnreadableFile
from transforms.ingest.validate import REASONS

GROUP_BYTES = 256 << 20  # raw bytes per batch of files (one Prefect task, one dedup pass)
GROUP_FILES = 500
# records per batch of files: the group's candidates sit in a DuckDB table (≈ 300 bytes a row
# uncompressed), which must fit the memory limit; Parquet compresses ~10x, so bytes alone would
# let a 256 MB group hold 25M records
GROUP_ROWS = 3_000_000
SEEN = "dd.seen"
CAND = "cand"  # the group's candidate events (a temp table: spills to the run's scratch folder)


def estimated_rows(path: Path, fmt: Format | None, size: int) -> int:
    """Records in a raw file: from the footer for plain Parquet, else ~100 bytes a record."""
    if fmt is not None and fmt.kind == "parquet" and not fmt.gzip:
        try:
            return pq.read_metadata(path).num_rows
        except Exception:  # unreadable: the read says why, later
            return 0
    return size // 100


# reading a file failed: the file is unreadable (any other exception is a bug and stops the run)
READ_ERRORS: tuple[type[BaseException], ...] = (
    UnreadableFile, OSError, EOFError, ValueError, pa.ArrowException, csv.Error, zlib.error, duckdb.Error,
)
NOT_THE_FILE: tuple[type[BaseException], ...] = (duckdb.OutOfMemoryException, duckdb.InterruptException, MemoryError)


@dataclass
class RawFile:
    seq: int
    source_file: str
    path: Path
    sha256: str
    size: int
    fmt: Format | None


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


CLOCK_STATE = "ingest_clock"  # warehouse/_state/ingest_clock.json: {"ingested_at": the last run's}
CHANGED_DETAIL = ("row {} of an earlier version of this file was accepted as another event; events are never "
                  "deleted: cancel that event and land the corrected record in a new file")


NOT_REQUEUED = ("changed_record", "unreadable_file")  # no replay can accept them


def requeue_reasons(values: Iterable[str] | None) -> list[str]:
    """The reasons named by `--requeue` (repeated, or comma lists), checked against the reason table."""
    names = [n.strip() for v in (values or ()) for n in str(v).split(",") if n.strip()]
    for n in names:
        if n == "unreadable_file":
            raise UsageError("--requeue: unreadable_file is a whole file, not a record: fix the file and land it "
                             "again (its new bytes are ingested as a new version)")
        if n == "changed_record":
            raise UsageError("--requeue: a changed_record stays: its row is an event already (events are never "
                             "deleted); cancel that event and land the corrected record in a new file")
        if n not in REASONS:
            raise UsageError(f"--requeue: {n!r} is not a quarantine reason "
                             f"(one of {', '.join(r for r in REASONS if r not in NOT_REQUEUED)})")
    return sorted(set(names))


HASHES_STATE = "raw_hashes"  # warehouse/_state/raw_hashes.json: {raw path: [size, mtime_ns, ctime_ns, inode, sha256]}
RACY_NS = 2_000_000_000  # a file changed this recently may change again within the same timestamps
_SHA256_HEX = re.compile("[0-9a-f]{64}")


def known_hashes(state: object) -> dict[str, list]:
    """The recorded hashes that are well formed (a damaged record is dropped: its file is hashed again)."""
    if not isinstance(state, dict):
        return {}
    return {rel: v for rel, v in state.items()
            if isinstance(v, list) and len(v) == 5 and all(type(x) is int for x in v[:4]) and isinstance(v[4], str)
            and _SHA256_HEX.fullmatch(v[4])}


def hash_file(path: Path, rel: str, known: dict[str, list], now_ns: int) -> tuple[str, int, list | None]:
    """(sha256, size, record to keep or None) of a raw file; the recorded hash when its stat is unchanged.

    Any write to a file changes its ctime, which no user can set back, so an unchanged (size,
    mtime, ctime, inode) means unchanged bytes. The stat is taken before reading: a file
    written while it is read gets a new ctime and is read again next time. A file changed less
    than RACY_NS ago is not recorded (a write within the same timestamp tick would go unseen,
    git's "racily clean" case)."""
    st = path.stat()
    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    old = known.get(rel)
    if old is not None and old[:4] == key:
        return old[4], st.st_size, old
    sha = sha256_of(path)
    keep = key + [sha] if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS else None
    return sha, st.st_size, keep


def last_clock(lk: Lake) -> dt.datetime | None:
    """The `ingested_at` of the last run that committed (a run that only moves quarantined
    records writes no ingest_files row of its own); None if unknown."""
    try:
        state = lk.read_state(CLOCK_STATE)
        return dt.datetime.fromisoformat(state["ingested_at"]).astimezone(dt.timezone.utc) if state else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def arrival_instant(last: dt.datetime | None) -> dt.datetime:
    """Now (UTC), but always after the previous run's `ingested_at`.

    `ingested_at` is when rows arrived, not the run's `as_of`: the meter flow finds new events by
    `ingested_at` > its watermark, so it must grow from run to run even when a later run has an
    earlier `as_of` (a backfill) or the clock steps back.
    """
    now = dt.datetime.now(dt.timezone.utc)
    if last is not None and now <= last:
        now = last + dt.timedelta(microseconds=1)
    return now


def sql_paths(paths: list[Path]) -> str:
    """A SQL list of quoted file paths."""
    return "[" + ", ".join(sql_str(p) for p in paths) + "]"


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:500]


def check_age(max_event_age_days: int | None) -> int | None:
    """`--max-event-age-days` as a whole number of days ≥ 0 (None: the catalogue's setting)."""
    if max_event_age_days is None:
        return None
    try:
        n = int(max_event_age_days)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or str(max_event_age_days).strip() not in (str(n), f"{n}.0"):
        raise UsageError(f"--max-event-age-days: {max_event_age_days!r} is not a whole number of days ≥ 0")
    return n
