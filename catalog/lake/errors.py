"""What is wrong with a warehouse path, said for people: the lake's one error, and the damage of a file.

A WarehouseError is one line: the path relative to the lake, what is wrong with it, and what to
do. A damaged file's message names what rebuilds the table, or says to restore it from a backup.
"""

from __future__ import annotations

import errno
from pathlib import Path


class WarehouseError(Exception):
    """A warehouse folder or file that cannot be written or read. The message is one line for
    people: the path relative to the lake, what is wrong with it, and what to do."""


def _trouble(e: OSError) -> tuple[str, str]:
    """(what is wrong, what to do) for an operating-system error on a warehouse path."""
    n = e.errno
    if n in (errno.EACCES, errno.EPERM):
        return "permission denied", "fix the folder's permissions"
    if n in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return e.strerror or "no space left", "free some space"
    if n == errno.EROFS:
        return e.strerror or "read-only file system", "make the file system writable"
    if n in (errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
        return e.strerror or str(e), "move what is in the way"
    if n == errno.EIO:
        return e.strerror or "input/output error", "check the disk"
    return e.strerror or str(e), "fix the cause"



# What to do about a damaged file of each table (SPEC §8: the error says it).
_BACKUP = "restore it from a backup"
_DAMAGE_HINTS = {
    "events": f"{_BACKUP} (events are the record of accepted raw events: nothing rebuilds them)",
    "quarantine": f"{_BACKUP} (it is the record of rejected raw records)",
    "ingest_files": f"{_BACKUP} (without it, ingest would take its raw files for new ones)",
    "usage_hourly": "delete it and warehouse/_state/meter.json, then run `meterbill meter` (it rebuilds "
                    "usage_hourly from the events)",
    "invoices": f"{_BACKUP} (bill reads final invoices back and never recomputes them)",
    "line_items": f"{_BACKUP} (bill reads final invoices back and never recomputes them)",
    "credit_ledger": f"{_BACKUP} (bill reads final invoices back and never recomputes them)",
    "unbilled_usage": "delete it and run `meterbill bill` (every bill makes it again)",
    "reconciliation": "delete it and run `meterbill bill` (every bill makes it again)",
    "alerts_fired": f"{_BACKUP} (without it, alerts that fired would fire again)",
    "deliveries": f"{_BACKUP} (it is the record of notifications sent)",
}
_STATE_HINT = "delete it (a cache: the next run makes it again)"
_PARQUET_MAGIC = b"PAR1"


def parquet_damage(path: Path, deep: bool = False) -> str | None:
    """What is wrong with a Parquet file (None when nothing is): empty, not Parquet or cut short
    (checked from its first and last bytes), an unreadable footer, or (`deep`) unreadable data."""
    import pyarrow.parquet as pq

    try:
        size = path.stat().st_size
        if size == 0:
            return "empty"
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if size < 12 or head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
        return "not a Parquet file, or cut short"
    try:
        meta = pq.read_metadata(path)
        if deep:
            pf = pq.ParquetFile(path)
            for i in range(meta.num_row_groups):
                pf.read_row_group(i)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several kinds)
        return f"unreadable {'data' if deep else 'footer'}: {' '.join(str(e).split())[:120]}"
    return None
