"""A demo lake for the exploration tests: generated once per session with `meterbill demo`, in-process."""

from __future__ import annotations

import pytest

AS_OF = "2026-11-27T00:00:00Z"


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory, prefect_harness):
    """20 days × 300 events a day of the sample catalogue, through the whole pipeline (as of AS_OF)."""
    from flows.cli import main

    lake = tmp_path_factory.mktemp("exploration") / "lake"
    code = main(["demo", "--lake", str(lake), "--days", "20", "--events-per-day", "300", "--as-of", AS_OF])
    assert code == 0, "meterbill demo failed: see the captured output above"
    return lake
