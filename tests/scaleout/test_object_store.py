"""`meterbill run --lake s3://bucket/prefix` on a loopback S3 server gives the invoices of the same lake on disk."""

import io
import shutil
import uuid

import polars as pl
import pytest

from catalog.lake import Mirror, mirror_root
from tests.scaleout.lakes import AS_OF, assert_same, make_lake, table

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _upload(fs, local, url):
    for sub in ("catalog", "raw"):
        for p in sorted((local / sub).rglob("*")):
            if p.is_file():
                fs.put_file(str(p), f"{url[5:]}/{p.relative_to(local).as_posix()}")


def _read_table(fs, url, name):
    files = sorted(fs.find(f"{url[5:]}/warehouse/{name}"))
    assert files, f"no {name} in the bucket"
    return pl.concat([pl.read_parquet(io.BytesIO(fs.cat_file(f))) for f in files if f.endswith(".parquet")])


def test_run_on_the_bucket_gives_the_invoices_of_the_local_disk(s3_env, tmp_path):
    from catalog.schemas import conform
    from flows.cli import main

    fs = s3_env
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    local = make_lake(tmp_path / "local", events_per_day=60)
    url = f"s3://{bucket}/lakes/acme"
    _upload(fs, local, url)

    assert main(["run", "--lake", str(local), "--as-of", AS_OF, "--no-deliver"]) == 0
    assert main(["run", "--lake", url, "--as-of", AS_OF, "--no-deliver"]) == 0

    key = ["invoice_id"]
    from_bucket = conform("invoices", _read_table(fs, url, "invoices")).sort(key)
    assert_same(table(local, "invoices"), from_bucket, "invoices")
    assert from_bucket.height > 20
    lines = conform("line_items", _read_table(fs, url, "line_items")).sort("invoice_id", "line_id")
    assert_same(table(local, "line_items"), lines, "line_items")
    # the bucket holds the whole warehouse, state and events included; scratch space is not uploaded
    keys = fs.find(f"{bucket}/lakes/acme/warehouse")
    assert any("/warehouse/events/" in k for k in keys) and any("/warehouse/_state/" in k for k in keys)
    assert not any("/warehouse/.tmp/" in k or "/warehouse/.locks/" in k for k in keys)


def test_mirror_follows_the_bucket_and_a_failed_command_pushes_nothing(s3_env, tmp_path):
    fs = s3_env
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    url = f"s3://{bucket}/p"
    fs.pipe_file(f"{bucket}/p/catalog/a.yaml", b"one")
    fs.pipe_file(f"{bucket}/p/warehouse/t/part-0.parquet", b"old")
    m = Mirror(url)
    assert m.local == mirror_root(url)
    assert m.pull() == {"fetched": 2, "removed": 0}
    assert m.pull() == {"fetched": 0, "removed": 0}  # nothing changed: nothing fetched
    # a run that failed wrote locally and pushed nothing: the next pull restores the bucket's state
    (m.local / "warehouse/t/part-0.parquet").write_bytes(b"half-written")
    (m.local / "warehouse/u").mkdir()
    (m.local / "warehouse/u/part-0.parquet").write_bytes(b"orphan")
    m.pull()
    assert (m.local / "warehouse/t/part-0.parquet").read_bytes() == b"old"
    assert not (m.local / "warehouse/u/part-0.parquet").exists()
    # a successful one pushes new and changed files and deletes what is gone; never catalog/ or raw/
    (m.local / "warehouse/t/part-0.parquet").unlink()
    (m.local / "warehouse/v").mkdir()
    (m.local / "warehouse/v/part-0.parquet").write_bytes(b"new")
    (m.local / "warehouse/.tmp").mkdir()
    (m.local / "warehouse/.tmp/scratch").write_bytes(b"x")
    shutil.rmtree(m.local / "catalog")
    assert m.push() == {"uploaded": 1, "deleted": 1}
    assert sorted(fs.find(f"{bucket}/p")) == [f"{bucket}/p/catalog/a.yaml", f"{bucket}/p/warehouse/v/part-0.parquet"]
