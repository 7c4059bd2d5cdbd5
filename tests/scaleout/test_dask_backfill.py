"""`meterbill backfill --executor dask` on a 2-worker LocalCluster replays a range into the same
tables as the local backfill of a copy of the same lake: meter, every bill step and every alert
step run on customer shards, in the same segments, with the same progress."""

import shutil

import pytest

from tests.scaleout.lakes import assert_same, make_lake, table

pytestmark = pytest.mark.usefixtures("prefect_harness")

# the first hours of October's close: the invoices of the customers in Sydney and Tokyo finalise
# (their October ends before UTC's; + 24 h grace), the others stay drafts; a day-boundary alert
# step, a bill and an alert step at each closing instant
ARGS = ("--from", "2026-10-31T20:00:00Z", "--to", "2026-11-01T16:00:00Z")


@pytest.fixture(scope="module", autouse=True)
def _close_clusters():
    yield
    from flows.executors import close_clusters

    close_clusters()


def test_dask_backfill_gives_the_local_backfills_tables(tmp_path, monkeypatch):
    from flows import backfill
    from flows.cli import main

    monkeypatch.setenv("METERBILL_SHARDS", "3")  # three shards on two workers: one waits its turn
    local = make_lake(tmp_path / "local", events_per_day=30)
    sharded = tmp_path / "dask"
    shutil.copytree(local, sharded)

    sharded_steps = []
    for fn in ("bill_sharded", "alerts_sharded"):  # the segment task's sharded steps
        def spy(*a, _fn=getattr(backfill, fn), _name=fn):
            sharded_steps.append(_name)
            return _fn(*a)
        monkeypatch.setattr(backfill, fn, spy)

    seen: dict[str, list] = {"local": [], "dask": []}
    for name, lake, extra in (("local", local, ()), ("dask", sharded, ("--executor", "dask", "--workers", "2"))):
        monkeypatch.setattr(backfill, "_progress", lambda done, total, label, n=name: seen[n].append((done, total, label)))
        assert main(["backfill", "--lake", str(lake), *ARGS, *extra]) == 0

    for name in ("usage_hourly", "invoices", "line_items", "credit_ledger", "unbilled_usage", "reconciliation",
                 "alerts_fired"):
        assert_same(table(local, name), table(sharded, name), name)
    inv = table(local, "invoices")
    assert set(inv["status"]) == {"final", "draft"} and inv.height > 10
    assert table(local, "alerts_fired").height > 0
    # the same steps in the same order, to the last one; in the dask lake each on the shards
    assert seen["dask"] == seen["local"]
    steps = [label.split()[0] for _, _, label in seen["dask"] if label.startswith(("bill as of", "alerts as of"))]
    assert sharded_steps == [f"{s}_sharded" for s in steps] and "bill" in steps
    done, total, _ = seen["local"][-1]
    assert done == total > 2
