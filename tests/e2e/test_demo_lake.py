"""`meterbill demo` refuses a lake that holds a catalogue or raw files it did not write (SPEC §8):
it would write synthetic events (bad rows included) for the real customers and bill them."""

import shutil

import pytest

from flows.stages.demo import SAMPLE_CATALOG
from tests.e2e.test_cli_errors import one_line


def tree(root):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_demo_refuses_a_lake_with_a_real_catalogue(cli, small_lake):
    before = tree(small_lake)
    code, out, err = cli("demo", "--lake", small_lake, "--days", 2)
    assert code == 2
    assert one_line(err) == (
        f"meterbill demo: error: demo: {small_lake / 'catalog'} holds a catalogue demo did not write (not the "
        "sample's); demo writes synthetic events for its customers and bills them: give a new folder (--lake DIR)")
    assert tree(small_lake) == before and out == ""


def test_demo_refuses_raw_files_it_did_not_write(cli, small_lake):
    shutil.rmtree(small_lake / "catalog")  # a landing zone whose catalogue is not written yet
    before = tree(small_lake)
    code, out, err = cli("demo", "--lake", small_lake, "--days", 2)
    assert code == 2
    assert one_line(err) == (
        f"meterbill demo: error: demo: {small_lake / 'raw'} holds 1 file demo did not write (batch1.ndjson); "
        "demo would ingest and bill them with its synthetic events: give a new folder (--lake DIR)")
    assert tree(small_lake) == before


@pytest.mark.usefixtures("prefect_harness")
def test_demo_runs_again_on_its_own_lake_and_refuses_it_once_foreign_files_land(cli, tmp_path):
    lake = tmp_path / "data"
    shutil.copytree(SAMPLE_CATALOG, lake / "catalog")  # the repository's data/: the sample catalogue
    args = ("demo", "--lake", lake, "--days", 2, "--events-per-day", 40)
    code, out, err = cli(*args)
    assert code == 0, err
    code, out, err = cli(*args)  # its own lake: again
    assert code == 0, err
    # a changed file demo wrote is not its own any more, nor is a new one
    written = sorted((lake / "raw" / "generated").glob("events-*.parquet"))
    assert len(written) == 2
    (lake / "raw" / "real.ndjson").write_text("{}\n")
    before = tree(lake)
    code, out, err = cli(*args)
    assert code == 2
    assert "holds 1 file demo did not write (real.ndjson)" in one_line(err)
    (lake / "raw" / "real.ndjson").unlink()
    written[0].write_bytes(written[0].read_bytes() + b"\0")
    code, out, err = cli(*args)
    assert code == 2
    assert f"holds 1 file demo did not write (generated/{written[0].name})" in one_line(err)
    assert [t for t in tree(lake) if t[0] != "raw" and not t[0].startswith("raw/")] == [
        t for t in before if t[0] != "raw" and not t[0].startswith("raw/")]
