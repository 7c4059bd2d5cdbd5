"""A lake (SPEC §1): where every table lives, how it is written, and how it is read.

`Lake` is assembled from one part per concern, each in its own module:

- paths.py    the places: folders, table and partition paths, run state, scratch, raw files
- reads.py    scans and reads, and the error that names a damaged file
- commit.py   writes (write-then-rename), appends, journalled moves; lock.py its writer locks
- tables.py   several tables replaced as one unit (the billing tables)
- mirror.py   the working copy of an object-store lake (`s3://`)
- duck.py     the DuckDB connection, with a view per table

Constructing a Lake does no I/O; `Lake.open` is the step that makes it ready (for an
object-store URL: pulls its working copy from the bucket).
"""

from __future__ import annotations

import os

from catalog.lake.commit import LakeWrites
from catalog.lake.duck import connect_views, duck, sql_ident, sql_str
from catalog.lake.errors import WarehouseError, parquet_damage
from catalog.lake.lock import LakeLock
from catalog.lake.mirror import Mirror, forget_remote_lakes, mirror_root, object_store, pull_mirror, push_remote_lakes
from catalog.lake.paths import DEFAULT_LAKE, LakePaths, is_remote, resolve_lake
from catalog.lake.reads import LakeReads
from catalog.lake.tables import LakeTables


class Lake(LakePaths, LakeReads, LakeWrites, LakeTables):
    """A lake folder, or the working copy of an object-store lake (`url`)."""

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> "Lake":
        """The lake of `root` (--lake, else $METERBILL_LAKE, else data/), ready to use: an
        object-store lake's working copy is first made equal to the bucket (and pushed by
        push_remote_lakes() when the command has succeeded)."""
        lake = cls(root)
        if lake.url is not None:
            pull_mirror(lake.url)
        return lake


def connect(lake: str | os.PathLike | Lake | None = None,
            temp_directory: str | os.PathLike | None = None):
    """A DuckDB connection with every warehouse table of the lake as a view of the same name
    (`catalog.lake.duck.connect_views`); a lake given by path or URL is opened first."""
    return connect_views(lake if isinstance(lake, Lake) else Lake.open(lake), temp_directory)


__all__ = [
    "DEFAULT_LAKE", "Lake", "LakeLock", "Mirror", "WarehouseError", "connect", "duck", "forget_remote_lakes",
    "is_remote", "mirror_root", "object_store", "parquet_damage", "pull_mirror", "push_remote_lakes",
    "resolve_lake", "sql_ident", "sql_str",
]
