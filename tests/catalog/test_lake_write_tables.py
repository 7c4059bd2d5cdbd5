"""The five billing tables are committed together (SPEC §7): a write that fails at any point
leaves all of them as they were, a crash in the middle is finished by the next reader, failed
runs leave no staging folders behind, and the error names the folder and what to do.

Each test writes version "A" of the five tables, then tries version "B"; every row of a version
carries its letter in `customer_id`, so a mix of versions is visible at once.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from catalog import Lake, connect
from catalog.schemas import conform

TABLES = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")
REPO = Path(__file__).resolve().parents[2]


def version(tag: str) -> dict[str, pl.DataFrame]:
    return {t: conform(t, pl.DataFrame({"customer_id": [tag, tag]})) for t in TABLES}


def seen(lk: Lake) -> dict[str, set[str]]:
    """Which version each table holds, read through Lake.read."""
    return {t: set(lk.read(t)["customer_id"].to_list()) for t in TABLES}


def seen_sql(root: Path) -> dict[str, set[str]]:
    """... and through the DuckDB views of catalog.connect."""
    con = connect(root)
    try:
        return {t: {r[0] for r in con.execute(f"SELECT DISTINCT customer_id FROM {t}").fetchall()} for t in TABLES}
    finally:
        con.close()


def all_of(tag: str) -> dict[str, set[str]]:
    return {t: {tag} for t in TABLES}


def leftovers(root: Path) -> list[str]:
    """Anything a billing write may leave behind: staging folders, journals, old copies."""
    wh = root / "warehouse"
    out = []
    tmp = wh / ".tmp"
    if tmp.is_dir():
        out += [f"warehouse/.tmp/{p.name}" for p in tmp.iterdir() if p.name != "duckdb"]
    journal = wh / ".journal"
    if journal.is_dir():
        out += [str(p.relative_to(root)) for p in journal.rglob("*") if p.is_file()]
    out += [p.name for p in wh.iterdir() if p.name.endswith(".old")]
    return sorted(out)


@pytest.fixture
def lake(tmp_path) -> Path:
    root = tmp_path / "lake"
    (root / "warehouse").mkdir(parents=True)
    Lake(root).write_tables(version("A"))
    assert seen(Lake(root)) == all_of("A")
    return root


class Renames:
    """os.rename / os.replace that fail (or kill the process) at call number `at` (0-based)."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0
        self.real = {"rename": os.rename, "replace": os.replace}

    def wrap(self, name):
        real = self.real[name]

        def f(src, dst, *a, **k):
            n, self.calls = self.calls, self.calls + 1
            if n == self.at:
                raise OSError(errno.EIO, "Input/output error", str(dst))
            return real(src, dst, *a, **k)

        return f


def test_a_failure_at_any_rename_of_the_billing_commit_leaves_every_table_as_it_was(lake, monkeypatch):
    at = 0
    while True:
        r = Renames(at)
        monkeypatch.setattr(os, "rename", r.wrap("rename"))
        monkeypatch.setattr(os, "replace", r.wrap("replace"))
        try:
            Lake(lake).write_tables(version("B"))
        except Exception as e:  # noqa: BLE001
            failed = e
        else:
            failed = None
        monkeypatch.undo()
        if failed is None:  # `at` is past the last rename: the commit went through
            assert seen(Lake(lake)) == all_of("B") and at > 0
            assert leftovers(lake) == []
            break
        assert seen(Lake(lake)) == all_of("A"), f"failure at rename {at}: {failed}"
        assert seen_sql(lake) == all_of("A")
        msg = str(failed)
        assert msg.startswith("cannot write warehouse/") and msg.endswith("nothing was changed"), msg
        assert "Input/output error" in msg
        assert leftovers(lake) == [], f"failure at rename {at}"
        at += 1


def test_a_file_where_a_table_folder_must_go_changes_nothing_and_names_the_folder(lake):
    # (works as root too, where a read-only folder does not stop writes)
    rec = lake / "warehouse" / "reconciliation"
    for p in rec.rglob("*.parquet"):
        p.unlink()
    rec.rmdir()
    rec.write_text("not a folder")
    with pytest.raises(Exception) as e:
        Lake(lake).write_tables(version("B"))
    assert str(e.value) == ("cannot write warehouse/reconciliation: it is a file, not a folder; move it away "
                            "and run `meterbill bill` again; nothing was changed")
    assert {t: s for t, s in seen(Lake(lake)).items() if t != "reconciliation"} == {
        t: {"A"} for t in TABLES if t != "reconciliation"}
    assert rec.read_text() == "not a folder"
    assert leftovers(lake) == []


READ_ONLY = textwrap.dedent("""
    import os, sys
    import polars as pl
    from catalog import Lake
    from catalog.schemas import conform
    if os.geteuid() == 0:   # root writes into read-only folders: drop to nobody (imports are done)
        os.setgid(65534)
        os.setuid(65534)
    tables = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")
    try:
        Lake(sys.argv[1]).write_tables({t: conform(t, pl.DataFrame({"customer_id": ["B", "B"]})) for t in tables})
    except Exception as e:
        print(e)
        sys.exit(1)
""")


def test_a_read_only_table_folder_changes_nothing_and_names_the_folder():
    """A real read-only folder (chmod); as root the write runs in a process that drops to nobody."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="meterbill-ro-"))   # outside pytest's private (0700) folder
    try:
        base.chmod(0o755)
        root = base / "lake"
        (root / "warehouse").mkdir(parents=True)
        Lake(root).write_tables(version("A"))
        if os.geteuid() == 0:
            for p in [base, *base.rglob("*")]:
                os.chown(p, 65534, 65534)
        li = root / "warehouse" / "line_items"
        li.chmod(0o555)
        p = subprocess.run([sys.executable, "-c", READ_ONLY, str(root)], env={**os.environ, "PYTHONPATH": str(REPO)},
                           capture_output=True, text=True, timeout=120)
        li.chmod(0o755)
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stdout.strip() == ("cannot write warehouse/line_items: permission denied; fix the folder's "
                                    "permissions and run `meterbill bill` again; nothing was changed")
        assert seen(Lake(root)) == all_of("A")
        assert leftovers(root) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_failure_while_staging_leaves_no_staging_folder(lake, monkeypatch):
    real = pl.DataFrame.write_parquet
    calls = []

    def full_disk(self, file, *a, **k):
        calls.append(file)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real(self, file, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full_disk)
    with pytest.raises(Exception) as e:
        Lake(lake).write_tables(version("B"))
    monkeypatch.undo()
    msg = str(e.value)
    assert msg.startswith("cannot write warehouse/") and "No space left on device" in msg, msg
    assert msg.endswith("free some space and run `meterbill bill` again; nothing was changed"), msg
    assert seen(Lake(lake)) == all_of("A")
    assert leftovers(lake) == []


CRASH = textwrap.dedent("""
    import os, sys
    import polars as pl
    from catalog import Lake
    from catalog.schemas import conform
    at, root, where = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    calls = [0]
    def dying(real):
        def f(*a, **k):
            calls[0] += 1
            if calls[0] - 1 == at:
                os._exit(9)   # the process dies here: no except, no finally
            return real(*a, **k)
        return f
    if where == "rename":
        os.rename, os.replace = dying(os.rename), dying(os.replace)
    else:
        pl.DataFrame.write_parquet = dying(pl.DataFrame.write_parquet)
    tables = ("invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation")
    Lake(root).write_tables({t: conform(t, pl.DataFrame({"customer_id": ["B", "B"]})) for t in tables})
    print("committed")
""")


def crash(lake: Path, at: int, where: str = "rename") -> bool:
    """Run a write of version B in another process that dies at call `at`; True if it died."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", CRASH, str(at), str(lake), where], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode in (0, 9), p.stderr
    return p.returncode == 9


def test_a_crash_at_any_rename_of_the_billing_commit_is_finished_or_undone_by_the_next_reader(tmp_path):
    at = 0
    while True:
        root = tmp_path / f"lake{at}"
        (root / "warehouse").mkdir(parents=True)
        Lake(root).write_tables(version("A"))
        if not crash(root, at):
            assert seen(Lake(root)) == all_of("B")
            break
        journal = any((root / "warehouse" / ".journal").rglob("*.json"))
        # the DuckDB views finish (or undo) the interrupted commit before they read ...
        got = seen_sql(root)
        assert got in (all_of("A"), all_of("B")), f"crash at rename {at}: {got}"
        if journal:   # the commit was decided: it is rolled forward
            assert got == all_of("B"), f"crash at rename {at}"
        # ... and so does Lake.read; nothing is left behind
        assert seen(Lake(root)) == got
        assert leftovers(root) == [], f"crash at rename {at}"
        at += 1
    assert at >= 10   # five tables, two renames each at least


def test_a_crash_at_any_rename_is_finished_by_the_next_write(tmp_path):
    for at in (1, 4, 7):
        root = tmp_path / f"lake{at}"
        (root / "warehouse").mkdir(parents=True)
        Lake(root).write_tables(version("A"))
        assert crash(root, at)
        Lake(root).write_tables(version("C"))
        assert seen(Lake(root)) == all_of("C")
        assert leftovers(root) == []


def test_the_staging_folder_of_a_run_that_died_while_staging_is_removed_by_the_next_write(lake):
    assert crash(lake, 2, where="write_parquet")
    assert seen(Lake(lake)) == all_of("A")
    Lake(lake).write_tables(version("B"))
    assert seen(Lake(lake)) == all_of("B")
    assert leftovers(lake) == []


def test_the_journal_names_the_tables_it_commits(lake, monkeypatch):
    """While the renames run, the journal says what is being committed (for people, too)."""
    seen_journal = []
    real = os.rename

    def spy(src, dst, *a, **k):
        for j in (lake / "warehouse" / ".journal").rglob("*.json"):
            seen_journal.append(json.loads(j.read_text()))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", spy)
    Lake(lake).write_tables(version("B"))
    assert seen_journal and sorted(seen_journal[0]["tables"]) == sorted(TABLES)
