"""The Prefect flow around run_ingest: coarse tasks, the report as a dict and as an artifact."""

from __future__ import annotations

import pytest

from tests.ingest.conftest import T0, event, events, ingest, land, ndjson

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_ingest_flow_reports_and_publishes_the_artifact(lake):
    from prefect.artifacts import Artifact

    from flows.ingest import ingest_flow

    land(lake, "a.ndjson", ndjson(event(), event(), event(cid="ghost"), event(meter="nope"), event(cid=None)))
    land(lake, "b.txt", "not events")
    rep = ingest_flow(lake=str(lake.root), as_of="2026-02-10T00:00:00Z")
    assert {k: rep[k] for k in ("files_found", "files_ingested", "files_unreadable", "files_skipped", "rows_read",
                                "accepted", "duplicates", "quarantined", "cancellations")} == {
        "files_found": 2, "files_ingested": 1, "files_unreadable": 1, "files_skipped": 0,
        "rows_read": 5, "accepted": 3, "duplicates": 1, "quarantined": 1, "cancellations": 0}
    assert rep["undefined"] == {"customers": {"ghost": 1}, "meters": {"nope": 1}}
    assert rep["quarantine_by_reason"] == {"missing_field": 1, "unreadable_file": 1}
    assert [f["status"] for f in rep["files"]] == ["ingested", "unreadable"]
    art = Artifact.get("ingest-report")
    assert art is not None and "# Ingest report" in art.data and "ghost" in art.data
    assert events(lake).height == 3
    again = ingest_flow(lake=str(lake.root), as_of="2026-02-10T00:00:00Z")
    assert again["files_skipped"] == 2 and again["accepted"] == 0


def test_ingest_flow_refuses_a_bad_age(lake):
    from flows.stages.common import UsageError
    from flows.ingest import ingest_flow

    with pytest.raises(UsageError, match="max-event-age-days"):
        ingest_flow.fn(lake=str(lake.root), as_of="2026-02-10", max_event_age_days=-3)


def test_flow_and_function_agree(lake, tmp_path):
    """The flow is only the function in tasks: same tables for the same landing."""
    import shutil

    from catalog import Lake
    from flows.ingest import ingest_flow

    other = Lake(tmp_path / "other")
    shutil.copytree(lake.root, other.root)
    land(lake, "a.ndjson", ndjson(event(ms=T0), event(ms=T0 + 1), event(cid=None)))
    land(other, "a.ndjson", ndjson(event(ms=T0), event(ms=T0 + 1), event(cid=None)))
    ingest_flow(lake=str(lake.root), as_of="2026-02-10T00:00:00Z")
    ingest(other)
    for t in ("events", "quarantine", "ingest_files"):
        a = lake.read(t).drop("ingested_at")
        b = other.read(t).drop("ingested_at")
        assert a.drop("dimensions", strict=False).equals(b.drop("dimensions", strict=False)), t
